"""PeerAddresses: IP addresses at once, names looked up in tasks, never blocking and never
raising; a failed name is tried again and logged once, a resolved one refreshed after a while.

Real ``getaddrinfo`` answers "localhost" and ``*.invalid`` (RFC 6761: never resolves); the one
answer real DNS cannot give here, a name moving to another address, comes from a lookup of our
own."""

from __future__ import annotations

import asyncio
import logging

import pytest

from raftd.transport.addresses import Address, PeerAddresses

UNRESOLVABLE = "peer.invalid:7002"


async def settle(addresses: PeerAddresses) -> None:
    """Wait for every lookup under way."""
    for _ in range(500):
        tasks = [e.task for e in addresses.entries.values() if e.task is not None]
        if not tasks:
            return
        await asyncio.gather(*tasks)
    raise AssertionError("lookups never finished")


def test_an_ip_address_needs_no_lookup() -> None:
    async def main() -> None:
        addresses = PeerAddresses()
        assert addresses.get("127.0.0.1:7001") == ("127.0.0.1", 7001)
        assert addresses.get("[::1]:7002") == ("::1", 7002)
        assert all(e.task is None for e in addresses.entries.values())

    asyncio.run(main())


def test_a_name_is_unknown_until_its_lookup_answers() -> None:
    async def main() -> None:
        addresses = PeerAddresses()
        assert addresses.get("localhost:7003") is None  # the lookup runs in a task
        await settle(addresses)
        host, port = addresses.get("localhost:7003") or ("", 0)
        assert port == 7003 and host in ("127.0.0.1", "::1")

    asyncio.run(main())


def test_an_unresolvable_name_is_retried_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        addresses = PeerAddresses(retry_s=0.0)
        for _ in range(3):
            assert addresses.get(UNRESOLVABLE) is None
            await settle(addresses)
        entry = addresses.entries[UNRESOLVABLE]
        assert entry.failing and entry.address is None

    with caplog.at_level(logging.WARNING, logger="raftd.transport.addresses"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"peer {UNRESOLVABLE} does not resolve (")
    assert "datagrams to it are dropped" in lines[0]


def test_a_malformed_node_id_is_refused_once_without_raising(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        addresses = PeerAddresses()
        assert addresses.get("no-port") is None
        assert addresses.get("no-port") is None

    with caplog.at_level(logging.WARNING, logger="raftd.transport.addresses"):
        asyncio.run(main())
    assert [r.getMessage() for r in caplog.records] == [
        "peer no-port has no valid address (expected host:port): nothing is sent to it"
    ]


def test_a_name_that_moves_is_followed_and_a_failed_refresh_keeps_the_last_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    answers: list[list[Address] | OSError] = [
        [("10.0.0.1", 7001)], [("10.0.0.2", 7001)], OSError("DNS is down"), [("10.0.0.2", 7001)]
    ]

    async def lookup(node: str) -> list[Address]:
        answer = answers.pop(0)
        if isinstance(answer, OSError):
            raise answer
        return answer

    async def main() -> list[Address | None]:
        addresses = PeerAddresses(lookup, retry_s=3600.0, refresh_s=0.0)
        seen = []
        for _ in range(4):
            seen.append(addresses.get("db-1.cluster.local:7001"))
            await settle(addresses)
        return seen

    with caplog.at_level(logging.INFO, logger="raftd.transport.addresses"):
        seen = asyncio.run(main())
    assert seen == [None, ("10.0.0.1", 7001), ("10.0.0.2", 7001), ("10.0.0.2", 7001)]
    assert not answers
    assert [r.getMessage() for r in caplog.records] == [
        "peer db-1.cluster.local:7001 resolves to 10.0.0.2:7001",
        "peer db-1.cluster.local:7001 does not resolve (DNS is down): still using "
        "10.0.0.2:7001; trying again",
        "peer db-1.cluster.local:7001 resolves to 10.0.0.2:7001",
    ]


def test_learn_spares_the_first_lookup() -> None:
    async def main() -> None:
        addresses = PeerAddresses()
        addresses.learn("localhost:7004", ("127.0.0.1", 7004))
        assert addresses.get("localhost:7004") == ("127.0.0.1", 7004)
        assert addresses.entries["localhost:7004"].task is None

    asyncio.run(main())

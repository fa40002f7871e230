"""PeerLink on a real UDP socket: datagrams dropped because only one side has the cluster secret
(or another one) are counted under their own reason and explained in a rate-limited warning."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import msgpack
import pytest

from raftd.transport.peers import SEALED, WARN_EVERY_S, PeerLink
from raftd.wire.auth import PeerAuth
from raftd.wire.fragments import FragmentSender

SECRET = b"s" * 32
ME, PEER = "127.0.0.1:7001", "127.0.0.1:7002"
PLAIN = msgpack.packb({"type": "vote", "term": 1})


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


def new_link(auth: PeerAuth | None) -> tuple[PeerLink, list[bytes]]:
    """A PeerLink with ``auth`` (not open yet) and the list of what it delivers."""
    delivered: list[bytes] = []
    link = PeerLink(1400, lambda node: ("127.0.0.1", 1), lambda data, _: delivered.append(data),
                    lambda *_: None, auth=auth)
    return link, delivered


async def send_through(link: PeerLink, delivered: list[bytes], datagrams: list[bytes],
                       held: int = 0) -> None:
    """Send ``datagrams`` over UDP to the open ``link``, through its receive path; return once
    it delivered or dropped all but ``held`` of them (loopback keeps their order: send those
    first)."""
    assert link.udp is not None
    port = link.udp.get_extra_info("sockname")[1]
    target = len(delivered) + sum(link.dropped.values()) + len(datagrams) - held
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
        for data in datagrams:
            out.sendto(data, ("127.0.0.1", port))
    for _ in range(500):
        if len(delivered) + sum(link.dropped.values()) >= target:
            break
        await asyncio.sleep(0.01)


def deliver(loop: asyncio.AbstractEventLoop, auth: PeerAuth | None, datagrams: list[bytes],
            held: int = 0) -> tuple[PeerLink, list[bytes]]:
    """Send ``datagrams`` over UDP to a PeerLink with ``auth`` (see ``send_through``); return it
    closed."""
    link, delivered = new_link(auth)

    async def run() -> None:
        await link.open("127.0.0.1", 0)
        try:
            await send_through(link, delivered, datagrams, held)
        finally:
            link.close()

    loop.run_until_complete(run())
    return link, delivered


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_sealed_datagrams_at_a_node_without_a_secret(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    sealer = PeerAuth(SECRET, PEER, epoch=1)
    fragments = FragmentSender[str](1000, window=16, first_transfer_id=1)
    fragments.send(ME, b"x" * 3000)
    fragment = fragments.poll(0.0)[0][1]  # same magic byte as a sealed datagram, kind 1
    with caplog.at_level(logging.WARNING, "raftd.transport.peers"):
        link, delivered = deliver(loop, None, [fragment, sealer.seal(ME, fragment)]
                                  + [sealer.seal(ME, PLAIN) for _ in range(3)], held=1)
    assert link.dropped == {"bad_fragment": 0, "unresolved": 0, SEALED: 4}
    assert delivered == []  # the fragment alone is held, waiting for the rest
    assert len(warnings(caplog)) == 1  # at most once a minute
    assert warnings(caplog)[0].startswith("peers send authenticated datagrams (from 127.0.0.1:")
    assert warnings(caplog)[0].endswith(") and this node has no [cluster] secret_file: it drops "
                                        "them all; give it the cluster's secret_file")


def test_the_warning_comes_again_after_a_minute(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    sealer = PeerAuth(SECRET, PEER, epoch=1)
    link, delivered = new_link(None)

    async def run() -> None:
        await link.open("127.0.0.1", 0)
        try:
            await send_through(link, delivered, [sealer.seal(ME, PLAIN) for _ in range(2)])
            assert link.dropped[SEALED] == 2
            assert len(warnings(caplog)) == 1  # the second one within the minute: silent
            link.warned_at[SEALED] -= WARN_EVERY_S  # as if the minute had passed
            await send_through(link, delivered, [sealer.seal(ME, PLAIN) for _ in range(2)])
            assert link.dropped[SEALED] == 4
        finally:
            link.close()

    with caplog.at_level(logging.WARNING, "raftd.transport.peers"):
        loop.run_until_complete(run())
    assert delivered == []
    assert len(warnings(caplog)) == 2
    assert all(w.startswith("peers send authenticated datagrams (from 127.0.0.1:")
               for w in warnings(caplog))


def test_unsealed_and_foreign_datagrams_at_a_node_with_a_secret(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "raftd.transport.peers"):
        link, delivered = deliver(loop, PeerAuth(SECRET, ME, epoch=1), [PLAIN, PLAIN])
    assert delivered == [] and link.dropped["unauthenticated"] == 2
    assert [w.split(" (from ")[0] for w in warnings(caplog)] == [
        "a peer sends unauthenticated datagrams"]
    assert "is its [cluster] secret_file missing?" in warnings(caplog)[0]

    caplog.clear()
    foreign = PeerAuth(b"f" * 32, PEER, epoch=1).seal(ME, PLAIN)
    forged = PeerAuth(SECRET, PEER, epoch=1).seal("127.0.0.1:7003", PLAIN)  # tag fails at ME
    with caplog.at_level(logging.WARNING, "raftd.transport.peers"):
        link, _ = deliver(loop, PeerAuth(SECRET, ME, epoch=1), [foreign, forged])
    assert (link.dropped["foreign_cluster"], link.dropped["unauthenticated"]) == (1, 1)
    # A sealed datagram with a bad tag is a forgery: no hint about a missing secret.
    assert [w.split(" (from ")[0] for w in warnings(caplog)] == [
        "a peer sends datagrams sealed with another cluster's secret"]

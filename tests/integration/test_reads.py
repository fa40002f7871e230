"""Reads served by followers: linearizable ones are never stale, stale ones are local."""

from __future__ import annotations

import asyncio

from raftctl import AsyncClient, Client
from raftctl.localcluster import LocalCluster
from tests.integration.helpers import (
    DEADLINE,
    POLL,
    freeze,
    thaw,
    wait_for_leader,
    wait_until,
)

INCREMENTS = 400
FREEZES = 4
ACKS_WHILE_FROZEN = 20


async def count_and_read(cluster: LocalCluster, leader: int) -> tuple[int, list[str]]:
    """One writer sets ``counter`` to 1..INCREMENTS through the leader; after every
    acknowledgement a linearizable read of it starts on each follower. Now and then one
    follower is frozen (SIGSTOP) until ACKS_WHILE_FROZEN more writes were acknowledged, so the
    reads that pile up on it find its state behind. Returns the number of reads and the stale
    ones."""
    endpoints = cluster.endpoints
    followers = [i for i in range(len(cluster)) if i != leader]
    floors: dict[int, asyncio.Queue[int | None]] = {f: asyncio.Queue() for f in followers}
    last_acked = 0
    reads = 0
    stale: list[str] = []

    async def writer() -> None:
        nonlocal last_acked
        async with AsyncClient([endpoints[leader]], timeout=DEADLINE) as client:
            for value in range(1, INCREMENTS + 1):
                await client.set("counter", value)
                last_acked = value
                for queue in floors.values():
                    queue.put_nowait(value)
        for queue in floors.values():
            queue.put_nowait(None)

    async def acked_at_least(value: int) -> None:
        while last_acked < value:
            await asyncio.sleep(POLL)

    async def freezer() -> None:
        for n in range(FREEZES):
            await acked_at_least((n + 1) * INCREMENTS // (FREEZES + 2))
            node = followers[n % len(followers)]
            freeze(cluster, node)
            try:
                await acked_at_least(last_acked + ACKS_WHILE_FROZEN)
            finally:
                thaw(cluster, node)

    async def read(client: AsyncClient, endpoint: str, floor: int) -> None:
        nonlocal reads
        value = await client.get("counter", 0)
        reads += 1
        if value < floor:
            stale.append(f"{endpoint} read {value} after {floor} was acknowledged")

    async def reader(node: int) -> None:
        async with AsyncClient([endpoints[node]], timeout=DEADLINE) as client:
            started = []
            while (floor := await floors[node].get()) is not None:
                started.append(asyncio.create_task(read(client, endpoints[node], floor)))
            await asyncio.gather(*started)

    await asyncio.gather(writer(), freezer(), *(reader(f) for f in followers))
    return reads, stale


def test_linearizable_reads_on_followers_are_never_stale(cluster3: LocalCluster) -> None:
    """Regression for "65% stale reads from any node": a linearizable read on a follower,
    even one that was just frozen and is behind, returns at least the last value acknowledged
    before the read began."""
    cluster = cluster3
    leader = wait_for_leader(cluster)

    reads, stale = asyncio.run(count_and_read(cluster, leader))

    assert reads == INCREMENTS * (len(cluster) - 1)
    assert stale == [], f"{len(stale)} of {reads} follower reads were stale, e.g. {stale[:5]}"


def test_stale_read_is_served_locally_by_a_follower(cluster3: LocalCluster) -> None:
    """``consistency="stale"`` on a follower returns its local state, even while the leader
    is frozen (when a linearizable read could not be served)."""
    cluster = cluster3
    leader = wait_for_leader(cluster)
    follower = cluster.endpoints[(leader + 1) % len(cluster)]
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("fresh", "yes")
    with Client([follower], timeout=DEADLINE) as client:
        wait_until(
            lambda: client.get("fresh", consistency="stale") == "yes",
            "the follower to apply the write",
        )
        freeze(cluster, leader)
        try:
            assert client.get("fresh", consistency="stale") == "yes"
            assert client.get("absent", "dflt", consistency="stale") == "dflt"
        finally:
            thaw(cluster, leader)

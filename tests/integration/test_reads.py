"""Reads served by followers: linearizable ones are never stale, stale ones are local."""

from __future__ import annotations

import asyncio

from raftctl import AsyncClient, Client
from raftctl.localcluster import LocalCluster
from tests.integration.helpers import (
    DEADLINE,
    freeze,
    thaw,
    wait_for_leader,
    wait_until,
)

INCREMENTS = 400
READERS_PER_FOLLOWER = 3


async def count_and_read(leader: str, followers: list[str]) -> tuple[int, list[str]]:
    """One writer sets ``counter`` to 1..INCREMENTS through the leader while readers on each
    follower read it linearizably; returns the number of reads and the stale ones."""
    last_acked = 0
    done = False
    reads = 0
    stale: list[str] = []

    async def writer() -> None:
        nonlocal last_acked, done
        async with AsyncClient([leader], timeout=DEADLINE) as client:
            for value in range(1, INCREMENTS + 1):
                await client.set("counter", value)
                last_acked = value
        done = True

    async def reader(endpoint: str) -> None:
        nonlocal reads
        async with AsyncClient([endpoint], timeout=DEADLINE) as client:
            while not done:
                floor = last_acked  # acknowledged before this read started
                value = await client.get("counter", 0)
                reads += 1
                if value < floor:
                    stale.append(f"{endpoint} read {value} after {floor} was acknowledged")

    readers = [reader(f) for f in followers for _ in range(READERS_PER_FOLLOWER)]
    await asyncio.gather(writer(), *readers)
    return reads, stale


def test_linearizable_reads_on_followers_are_never_stale(cluster3: LocalCluster) -> None:
    """Regression for "65% stale reads from any node": a linearizable read on a follower
    returns at least the last value acknowledged before the read began."""
    cluster = cluster3
    leader = wait_for_leader(cluster)
    followers = [e for i, e in enumerate(cluster.endpoints) if i != leader]

    reads, stale = asyncio.run(count_and_read(cluster.endpoints[leader], followers))

    assert reads >= INCREMENTS // 4, "the readers hardly ran concurrently with the writer"
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

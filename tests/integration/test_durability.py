"""Acknowledged writes survive a crash of every node at once (fsync on)."""

from __future__ import annotations

import asyncio
import itertools

from raftctl import AsyncClient, RaftctlError
from raftctl.localcluster import LocalCluster
from tests.integration.helpers import (
    DEADLINE,
    POLL,
    kill_all_at_once,
    missing_or_wrong,
    read_all,
    wait_for_leader,
)

WRITERS = 48
KILL_AFTER_ACKS = 1000
CRASHES = 3


async def write_until_killed(cluster: LocalCluster, crash: int) -> dict[str, str]:
    """Run WRITERS concurrent writers of unique keys; SIGKILL every node once KILL_AFTER_ACKS
    writes were acknowledged (with the others still in flight); return the acknowledged ones."""
    acked: dict[str, str] = {}
    loop = asyncio.get_running_loop()

    async def writer(client: AsyncClient, w: int) -> None:
        for j in itertools.count():
            key, value = f"c{crash}-w{w:02d}-{j:05d}", f"value-{crash}-{w}-{j}"
            await client.set(key, value)
            acked[key] = value

    async with AsyncClient(cluster.endpoints, timeout=DEADLINE) as client:
        tasks = [loop.create_task(writer(client, w)) for w in range(WRITERS)]
        deadline = loop.time() + DEADLINE
        while len(acked) < KILL_AFTER_ACKS:
            assert loop.time() < deadline, f"only {len(acked)} writes acknowledged"
            for task in tasks:
                if task.done():
                    task.result()  # a writer failed before the crash: raise its error
            await asyncio.sleep(POLL)
        kill_all_at_once(cluster)
        in_flight = sum(not task.done() for task in tasks)
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert in_flight == WRITERS, "every writer should have had a write in flight at the crash"
    assert all(isinstance(r, asyncio.CancelledError | RaftctlError) for r in results), results
    return dict(acked)


def test_acknowledged_writes_survive_crash_of_all_nodes(cluster3: LocalCluster) -> None:
    """Regression for "acknowledged writes lost when all nodes crashed": every write the
    cluster acknowledged before all three nodes were SIGKILLed mid-load is readable, with its
    value, after they restart. Repeated, so that recovered logs (torn tails included) are
    crashed again."""
    cluster = cluster3
    acked: dict[str, str] = {}
    for crash in range(CRASHES):
        acked |= asyncio.run(write_until_killed(cluster, crash))
        cluster.start_all()
        wait_for_leader(cluster)
    after = read_all(cluster.endpoints, acked)
    lost = missing_or_wrong(acked, after)
    assert lost == {}, f"{len(lost)} of {len(acked)} acknowledged writes lost, e.g. " \
                       f"{dict(itertools.islice(lost.items(), 5))}"

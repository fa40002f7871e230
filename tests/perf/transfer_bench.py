"""Benchmark: how long a leadership transfer takes, median of 20.

    .venv/bin/python -m tests.perf.transfer_bench [--rounds 20] [--no-fsync]

A 3-node cluster on loopback (fsync on unless --no-fsync). Each round hands leadership to
the next node with ``{"type": "transfer_leader"}`` and then writes one key through the same
client, which goes straight to the new leader. Two figures per round: the transfer request's
round trip (until the old leader saw the target win), and that plus the first write the new
leader commits (the time clients wait). Between rounds every node is caught up.

Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import asyncio
import statistics
import time

from raftctl import AsyncClient
from tests.integration.helpers import wait_caught_up, wait_for_leader
from tests.perf.common import count_and_fsync, running_cluster


def main() -> None:
    rounds, fsync = count_and_fsync(__doc__, "rounds", 20)
    with running_cluster("transferbench", fsync=fsync) as cluster:
        transfers: list[float] = []
        totals: list[float] = []
        for n in range(rounds):
            leader = wait_for_leader(cluster)
            for i in range(3):
                wait_caught_up(cluster, i, leader)
            target = cluster.endpoints[(leader + 1) % 3]
            transfer, total = asyncio.run(_round(cluster.endpoints, target, n))
            transfers.append(transfer)
            totals.append(total)
        ms = [f"{t * 1000:.1f}" for t in totals]
        print(f"{rounds} transfers (fsync {'on' if fsync else 'off'}); "
              f"transfer + first write, ms: {' '.join(ms)}")
        print(f"median transfer round trip: {statistics.median(transfers) * 1000:.1f} ms; "
              f"median until the new leader committed a write: "
              f"{statistics.median(totals) * 1000:.1f} ms (max {max(totals) * 1000:.1f} ms)")


async def _round(endpoints: list[str], target: str, n: int) -> tuple[float, float]:
    async with AsyncClient(endpoints, timeout=10) as client:
        await client.status()  # learn the leader: the transfer request goes straight to it
        started = time.perf_counter()
        leader = await client.transfer_leader(target)
        transferred = time.perf_counter()
        assert leader == target, (leader, target)
        await client.set(f"after-transfer-{n}", n)
        return transferred - started, time.perf_counter() - started


if __name__ == "__main__":
    main()

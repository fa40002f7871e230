"""Benchmark: a stopped follower catching up from a ~100 MB snapshot (InstallSnapshot).

    .venv/bin/python -m tests.perf.install_snapshot_bench [--mb 100] [--datagram 65000]

A 3-node cluster on loopback (fsync off, small snapshot thresholds) is filled with
--mb MB of 512 KiB values while one follower is stopped, and the values are rewritten until
the leader's latest snapshot holds the whole state and its log no longer reaches back to the
follower. The follower is then started; the figures are the time from its start until it
logged the installed snapshot, and until it applied the leader's commit index, plus the
leader's own "snapshot ... delivered" line (transfer and acknowledgement).

Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from functools import partial

from raftctl import AsyncClient
from raftctl.localcluster import LocalCluster
from tests.integration.helpers import (
    Response,
    _bounded,
    diagnostic,
    wait_caught_up,
    wait_for_leader,
)
from tests.perf.common import log_times

VALUE_BYTES = 512 << 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100, help="state size, MB (10**6 bytes)")
    parser.add_argument("--datagram", type=int, default=65000, help="max_datagram_bytes")
    args = parser.parse_args()
    keys = [f"blob{i:04d}" for i in range(args.mb * 10**6 // VALUE_BYTES + 1)]
    raft = {"snapshot_every": 20, "snapshot_min_log_bytes": 0,
            "snapshot_trailing_entries": 4, "max_datagram_bytes": args.datagram}
    with tempfile.TemporaryDirectory(prefix="rafty-installbench-") as tmp, \
            LocalCluster(3, tmp, fsync=False, extra_raft_config=raft) as cluster:
        cluster.start_all()
        leader = wait_for_leader(cluster)
        follower = (leader + 1) % 3
        behind = _diag(cluster, follower)["log"]["lastLogIndex"]
        cluster.kill(follower)
        state_bytes = len(keys) * VALUE_BYTES
        rounds = 0
        while True:
            rounds += 1
            asyncio.run(_fill(cluster.endpoints, keys))
            lead = _diag(cluster, leader)
            if (lead["snapshot"]["bytes"] >= state_bytes
                    and lead["log"]["firstIndex"] > behind + 1):
                break
        print(f"state {state_bytes / 1e6:.0f} MB in {len(keys)} values after {rounds} rounds; "
              f"leader's snapshot {lead['snapshot']['bytes'] / 1e6:.1f} MB at index "
              f"{lead['snapshot']['index']}; datagrams of {args.datagram} bytes")

        started = time.time()
        cluster.start(follower)
        wait_caught_up(cluster, follower, leader)
        caught = time.time() - started
        (installed, match), = log_times(cluster.log_paths[follower],
                                        r"installed snapshot at index (\d+)")
        delivered = log_times(cluster.log_paths[leader], r"snapshot to \S+ delivered")
        serving = log_times(cluster.log_paths[follower], r"serving on")[-1][0].timestamp()
        print(f"follower start -> serving: {serving - started:.2f} s; serving -> snapshot "
              f"installed: {installed.timestamp() - serving:.2f} s")
        print(f"follower start -> snapshot installed: {installed.timestamp() - started:.2f} s "
              f"(index {match.group(1)})")
        print(f"follower start -> caught up: {caught:.2f} s")
        if delivered:
            print(f"follower start -> leader logged delivery: "
                  f"{delivered[-1][0].timestamp() - started:.2f} s")
        size = lead["snapshot"]["bytes"] / 1e6
        print(f"InstallSnapshot of {size:.1f} MB: {installed.timestamp() - started:.2f} s "
              f"({size / (installed.timestamp() - started):.0f} MB/s including the follower's "
              f"start, contact and the install's fsync)")


def _diag(cluster: LocalCluster, i: int) -> Response:
    diag = diagnostic(cluster.endpoints[i], timeout=30)
    assert diag is not None
    return diag


async def _fill(endpoints: list[str], keys: list[str]) -> None:
    async with AsyncClient(endpoints, timeout=60) as client:
        await _bounded(4, [partial(client.set, k, os.urandom(16) * (VALUE_BYTES // 16))
                           for k in keys])


if __name__ == "__main__":
    main()

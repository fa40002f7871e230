"""Benchmark: snapshot time and event-loop stall of one node holding 1,000,000 keys.

    .venv/bin/python -m tests.perf.snapshot_stall [--keys 1000000] [--value-bytes 16]

1. A single-node cluster (fsync off for the load; snapshot files are always fsync'd) is
   filled with --keys keys over one pipelined connection, with snapshots disabled.
2. It is restarted with ``snapshot_every`` just above its log length and
   ``snapshot_min_log_bytes = 0``, and left to apply its log.
3. A probe asks it for ``diagnostic`` every 5 ms on one connection while a few more writes
   make the snapshot due. The snapshot's duration comes from the node's log line; the stall is
   the longest probe round trip while the snapshot ran (capture on the loop, serialization
   in a worker thread), compared with the heartbeat interval (30 ms) and with the longest
   round trip before it.

Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import tempfile
import time
from datetime import timedelta

from raftctl import AsyncClient
from raftctl.localcluster import LocalCluster
from raftd.statemachine import SET, DictStateMachine, encode_batch, encode_command
from tests.integration.helpers import diagnostic, wait_for_leader, wait_until
from tests.perf.common import LagProbe, load, log_times

HEARTBEAT_MS = 30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--value-bytes", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rafty-snapbench-") as tmp, \
            LocalCluster(1, tmp, fsync=False,
                         extra_raft_config={"snapshot_every": 10**12}) as cluster:
        endpoint = cluster.endpoints[0]
        cluster.start_all()
        wait_for_leader(cluster)
        value = b"v" * args.value_bytes
        started = time.perf_counter()
        n = asyncio.run(load(endpoint, ((f"key{i:08d}", value) for i in range(args.keys)),
                             on_progress=lambda d: print(f"  {d} keys loaded", flush=True)))
        loaded = time.perf_counter() - started
        diag = diagnostic(endpoint, timeout=30)
        assert diag is not None
        entries = diag["log"]["lastLogIndex"]
        print(f"loaded {n} keys in {loaded:.1f} s ({n / loaded:,.0f} writes/s) "
              f"into {entries} entries")

        cluster.stop_all(timeout=120)
        config = cluster.config_paths[0]
        text = re.sub(r"snapshot_every = \d+", f"snapshot_every = {entries + 20}",
                      config.read_text())
        config.write_text(text.replace("[raft]", "[raft]\nsnapshot_min_log_bytes = 0", 1))
        cluster.start_all()
        wait_for_leader(cluster, timeout=300)
        wait_until(lambda: (d := diagnostic(endpoint, timeout=30)) and
                   d["log"]["appliedIndex"] >= entries and d["keys"] == args.keys,
                   "the restarted node to apply its log", timeout=300)

        probe = LagProbe(endpoint)
        asyncio.run(_snapshot_under_probe(endpoint, probe))
        (stamp, line), = log_times(cluster.log_paths[0], r"snapshot at index (\d+) \(term \d+\): "
                                   r"(\d+) bytes in ([\d.]+) s")
        seconds = float(line.group(3))
        end = (stamp + timedelta(milliseconds=5)).timestamp()
        begin = end - seconds - 0.05
        during = probe.worst(begin, end)
        before = probe.worst(until=begin)
        print(f"snapshot of {args.keys:,} keys: {int(line.group(2)) / 1e6:.1f} MB in "
              f"{seconds:.2f} s")
        print(f"loop stall while snapshotting (longest diagnostic round trip): "
              f"{during * 1000:.1f} ms (heartbeat interval {HEARTBEAT_MS} ms; before it "
              f"{before * 1000:.1f} ms, median {probe.median() * 1000:.2f} ms, "
              f"{len(probe.samples)} probes)")
        worst = sorted(probe.samples, key=lambda s: -s[1])[:8]
        print("longest round trips (ms, at seconds from the snapshot's start): " + ", ".join(
            f"{rtt * 1000:.0f} @ {t - begin:+.2f}" for t, rtt in sorted(worst)))
        _attribute(args.keys, args.value_bytes)


def _attribute(keys: int, value_bytes: int) -> None:
    """The same state in this process: the pauses a snapshot imposes on the event loop's
    thread. ``capture()`` runs on the loop; in the worker, ``list(self.data)`` (one C call)
    and each chunk hold the GIL without a break."""
    sm = DictStateMachine()
    value = b"v" * value_bytes
    for start in range(0, keys, 10_000):
        sm.apply_batch(encode_batch(0, [encode_command(SET, f"key{i:08d}", value)
                                        for i in range(start, min(start + 10_000, keys))]))
    gc.collect()  # the server's state has long been through the collector: untracked tuples
    started = time.perf_counter()
    capture = sm.capture()
    captured = time.perf_counter() - started
    started = time.perf_counter()
    list(capture.data)
    listed = time.perf_counter() - started
    started = time.perf_counter()
    chunks = capture.chunks()
    longest = 0.0
    while True:
        t = time.perf_counter()
        if next(chunks, None) is None:
            break
        longest = max(longest, time.perf_counter() - t)
    print(f"in-process, same state: capture() on the loop {captured * 1000:.0f} ms; "
          f"list(keys) in the worker {listed * 1000:.0f} ms; serialization "
          f"{time.perf_counter() - started:.2f} s, longest chunk {longest * 1000:.1f} ms")


async def _snapshot_under_probe(endpoint: str, probe: LagProbe) -> None:
    task = asyncio.create_task(probe.run())
    await asyncio.sleep(2.0)  # a baseline first, idle
    async with AsyncClient([endpoint], timeout=30) as client:
        n = 0
        while True:
            n += 1
            await client.set(f"trigger{n}", n)
            status = await client.diagnostic(endpoint)
            if status["snapshot"]["index"] > 0:
                break
    await asyncio.sleep(0.5)  # and the time after it
    probe.stop()
    await task


if __name__ == "__main__":
    main()

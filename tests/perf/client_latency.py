"""Benchmark: round trip of ``Client.set`` and of a linearizable ``Client.get``, median of N.

    .venv/bin/python -m tests.perf.client_latency [--requests 1000] [--no-fsync]

A 3-node cluster on loopback (fsync on unless --no-fsync); one blocking ``raftctl.Client``
that has found the leader sends one request at a time: first N writes (100-byte values),
then N linearizable reads of the keys written. Prints median, p90, p99 and max of each.

Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from raftctl import Client
from raftctl.bench.histogram import percentile
from tests.perf.common import count_and_fsync, running_cluster


def main() -> None:
    requests, fsync = count_and_fsync(__doc__, "requests", 1000)
    value = os.urandom(100)
    with running_cluster("latency", fsync=fsync) as cluster, \
            Client(cluster.endpoints, timeout=10) as client:
        client.set("warm-up", value)  # finds the leader and opens the session
        writes = _timed(lambda i: client.set(f"k{i}", value), requests)
        reads = _timed(lambda i: client.get(f"k{i}"), requests)
    print(f"3 nodes, fsync {'on' if fsync else 'off'}, one client, "
          f"{requests} requests each")
    for name, samples in (("Client.set", writes), ("Client.get (linearizable)", reads)):
        ms = [s * 1000 for s in samples]
        print(f"{name}: median {percentile(ms, 0.5):.3f} ms, p90 {percentile(ms, 0.9):.3f}, "
              f"p99 {percentile(ms, 0.99):.3f}, max {max(ms):.3f}")


def _timed(call: Callable[[int], object], count: int) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        call(i)
        samples.append(time.perf_counter() - started)
    return samples


if __name__ == "__main__":
    main()

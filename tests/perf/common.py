"""Shared pieces of the cluster benchmarks: their command line, a running cluster, a fast bulk
loader, a loop-lag probe, log parsing.

Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import msgpack

from raftctl.localcluster import LocalCluster
from raftd.wire.client import parse_address
from tests.integration.helpers import wait_for_leader


def count_and_fsync(doc: str, count: str, default: int) -> tuple[int, bool]:
    """This script's command line, ``[--COUNT N] [--no-fsync]``: (N, whether to fsync)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(f"--{count}", type=int, default=default)
    parser.add_argument("--no-fsync", action="store_true")
    args = parser.parse_args()
    return getattr(args, count), not args.no_fsync


@contextlib.contextmanager
def running_cluster(name: str, *, fsync: bool, nodes: int = 3) -> Iterator[LocalCluster]:
    """A local cluster in a temporary directory, started, with a leader; stopped after."""
    with tempfile.TemporaryDirectory(prefix=f"rafty-{name}-") as tmp, \
            LocalCluster(nodes, tmp, fsync=fsync) as cluster:
        cluster.start_all()
        wait_for_leader(cluster)
        yield cluster


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


async def load(
    endpoint: str, items: Iterable[tuple[str, Any]], window: int = 1000,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Write every item to the leader at ``endpoint`` over one pipelined connection, with up
    to ``window`` writes in flight (raw ``append`` requests, no client session: the fastest
    way to fill a node). Returns the number written; raises on any refused write."""
    host, port = parse_address(endpoint)
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
    gate = asyncio.Semaphore(window)
    done = 0
    failures: list[Any] = []
    finished = asyncio.Event()
    expected = -1

    async def read() -> None:
        nonlocal done
        unpacker = msgpack.Unpacker(raw=False)
        while True:
            data = await reader.read(1 << 20)
            if not data:
                failures.append("connection closed")
                finished.set()
                return
            unpacker.feed(data)
            for response in unpacker:
                if response.get("type") != "result" or not response.get("success"):
                    failures.append(response)
                done += 1
                gate.release()
                if on_progress is not None and done % 100_000 == 0:
                    on_progress(done)
                if done == expected:
                    finished.set()

    task = asyncio.create_task(read())
    sent = 0
    for key, value in items:
        await gate.acquire()
        if failures:
            break
        sent += 1
        writer.write(msgpack.packb({"type": "append", "id": sent, "data": {
            "action": "change", "key": key, "value": value}}, use_bin_type=True))
        if sent % 256 == 0:
            await writer.drain()
    expected = sent
    await writer.drain()
    if done < expected and not failures:
        await finished.wait()
    task.cancel()
    writer.close()
    if failures:
        raise RuntimeError(f"{len(failures)} writes failed, e.g. {failures[:3]}")
    return sent


@dataclass
class LagProbe:
    """Asks a node for its ``diagnostic`` every ``interval`` seconds on one connection and
    records each round trip: a long one means the node's event loop was stalled."""

    endpoint: str
    interval: float = 0.005
    samples: list[tuple[float, float]] = field(default_factory=list)
    """(send time as UNIX seconds, to compare with log lines; round trip seconds)."""
    _stop: bool = False

    async def run(self) -> None:
        host, port = parse_address(self.endpoint)
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 24)
        unpacker = msgpack.Unpacker(raw=False)
        rid = 0
        try:
            while not self._stop:
                rid += 1
                sent_at, started = time.time(), time.perf_counter()
                writer.write(msgpack.packb({"type": "diagnostic", "id": rid}))
                await writer.drain()
                got = False
                while not got:
                    data = await reader.read(1 << 20)
                    if not data:
                        return
                    unpacker.feed(data)
                    got = any(r.get("id") == rid for r in unpacker)
                self.samples.append((sent_at, time.perf_counter() - started))
                await asyncio.sleep(max(0.0, started + self.interval - time.perf_counter()))
        finally:
            writer.close()

    def stop(self) -> None:
        self._stop = True

    def worst(self, since: float = 0.0, until: float = float("inf")) -> float:
        """The longest round trip among probes sent in [since, until]."""
        inside = [rtt for t, rtt in self.samples if since <= t <= until]
        return max(inside, default=0.0)

    def median(self) -> float:
        return statistics.median(rtt for _, rtt in self.samples) if self.samples else 0.0


def log_times(path: Path, pattern: str) -> list[tuple[datetime, re.Match[str]]]:
    """Timestamps and matches of the log lines of ``path`` matching ``pattern``."""
    found = []
    regex = re.compile(pattern)
    for line in path.read_text(errors="replace").splitlines():
        stamp = LOG_TIME.match(line)
        match = regex.search(line)
        if stamp and match:
            found.append((datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f"), match))
    return found

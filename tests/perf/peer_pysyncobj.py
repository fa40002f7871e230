"""PySyncObj for the peer comparison: 3 node processes on loopback, writers inside the leader.

PySyncObj is a library with no client protocol, so its writers run inside its leader process
(the adapter the issue allows; an upper bound for PySyncObj: no client network hop, no
request parsing). Each of the C logical clients is a closed loop of callbacks: it calls the
replicated ``set`` with a callback, and the callback (run by PySyncObj's own thread when the
command is applied on the leader) records the latency and issues the next call. State stays in
RAM (PySyncObj never fsyncs; its journal file, when enabled, is not fsynced either).

Each node runs ``python -m tests.perf.peer_pysyncobj SELF PARTNER...`` and obeys JSON lines on
stdin (``status``, ``run``, ``quit``), answering JSON lines on stdout; `PySyncObjCluster`
drives the three and reads their CPU from /proc.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from raftctl.bench.histogram import Histogram
from raftctl.bench.results import ClientResult, WorkerResult
from raftctl.localcluster import HOST, free_ports

READY_S = 60.0
INTERVAL_S = 1.0


def _node(self_addr: str, batch: bool, partners: list[str]) -> None:
    """A PySyncObj node holding a replicated dict; serves the driver's commands.

    ``batch``: PySyncObj's default appendEntriesUseBatch=True, which sends AppendEntries every
    appendEntriesPeriod (100 ms): up to 10 writes/s per writer, but large batches. False sends
    them as soon as commands arrive. Neither is best everywhere, so the comparison runs both.
    """
    from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

    class KV(SyncObj):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(self_addr, partners, SyncObjConf(appendEntriesUseBatch=batch))
            self.data: dict[str, bytes] = {}

        @replicated  # type: ignore[misc]
        def put(self, key: str, value: bytes) -> None:
            self.data[key] = value

    kv = KV()

    def answer(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "status":
            leader = kv._getLeader()
            answer({"ready": kv.isReady(), "leader": None if leader is None else str(leader)})
        elif command["cmd"] == "run":
            answer(_run(kv.put, FAIL_REASON.SUCCESS, command))
        elif command["cmd"] == "quit":
            kv.destroy()
            return


def _run(put: Callable[..., None], success: int, command: dict[str, Any]) -> dict[str, Any]:
    """C closed-loop writers for ``seconds``; a WorkerResult in wire form."""
    clients, seconds, size, keys = (command[k] for k in ("clients", "seconds", "size", "keys"))
    value = os.urandom(size)
    put("bench/open", value, sync=True, timeout=10)  # unmeasured: the cluster answers
    per_client = max(1, keys // clients)
    latency = Histogram()
    series: list[Histogram] = []
    counts = [0] * clients
    errors = [0] * clients
    last = [0.0] * clients
    active = [clients]
    finished = threading.Event()
    lock = threading.Lock()
    start = time.perf_counter()
    end = start + seconds

    def issue(i: int, n: int) -> None:
        sent = time.perf_counter()
        put(f"bench/{i}/{n % per_client}", value,
            callback=lambda result, error: done(i, n, sent, error))

    def done(i: int, n: int, sent: float, error: int) -> None:
        now = time.perf_counter()
        with lock:
            last[i] = now
            if error == success:
                took = now - sent
                latency.record(took)
                slot = int((now - start) / INTERVAL_S)
                while len(series) <= slot:
                    series.append(Histogram())
                series[slot].record(took)
                counts[i] += 1
            else:
                errors[i] += 1
            if now >= end:
                active[0] -= 1
                if active[0] == 0:
                    finished.set()
                return
        issue(i, n + 1)

    for i in range(clients):
        issue(i, 0)
    finished.wait(seconds + 60)
    return WorkerResult(
        clients=[ClientResult(requests=counts[i], duration=last[i] - start, errors=errors[i])
                 for i in range(clients)],
        latency=latency, series=series, interval=INTERVAL_S, cpu_seconds=0.0,
        started=time.time() - (time.perf_counter() - start),
    ).to_wire()


class PySyncObjCluster:
    """Three node processes on loopback; stopped (by PID) on exit."""

    def __init__(self, base: Path, *, batch: bool, n: int = 3) -> None:
        self.base = base
        self.batch = batch
        self.endpoints = [f"{HOST}:{p}" for p in free_ports(n)]
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Self:
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(root), os.environ.get("PYTHONPATH", "")) if p)}
        for me in self.endpoints:
            others = [e for e in self.endpoints if e != me]
            log = open(self.base / f"{me.replace(':', '_')}.log", "wb")
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "tests.perf.peer_pysyncobj", me,
                 "batch" if self.batch else "immediate", *others],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                env=env, cwd=self.base))
            log.close()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for proc in self.procs:
            if proc.poll() is None and proc.stdin is not None:
                try:
                    proc.stdin.write('{"cmd": "quit"}\n')
                    proc.stdin.flush()
                except OSError:
                    pass
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

    def pids(self) -> dict[str, int]:
        return {e: p.pid for e, p in zip(self.endpoints, self.procs, strict=True)}

    def ask(self, i: int, command: dict[str, Any]) -> dict[str, Any]:
        proc = self.procs[i]
        stdin, stdout = proc.stdin, proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps(command) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"PySyncObj node {self.endpoints[i]} exited (logs in {self.base})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def wait_leader(self) -> int:
        """Index of the leader once every node is ready and agrees on it."""
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            states = [self.ask(i, {"cmd": "status"}) for i in range(len(self.procs))]
            leaders = {s["leader"] for s in states}
            if all(s["ready"] for s in states) and len(leaders) == 1 and None not in leaders:
                return self.endpoints.index(leaders.pop())
            time.sleep(0.2)
        raise RuntimeError(f"PySyncObj elected no leader within {READY_S:g}s")

    def run(self, leader: int, clients: int, seconds: float, size: int,
            keys: int) -> WorkerResult:
        answer = self.ask(leader, {"cmd": "run", "clients": clients, "seconds": seconds,
                                   "size": size, "keys": keys})
        return WorkerResult.from_wire(answer)


if __name__ == "__main__":
    _node(sys.argv[1], sys.argv[2] == "batch", sys.argv[3:])

"""One load run: spawn the workers, start them together, watch, collect, add up.

The parent process does no load itself. It samples the cluster's and its own CPU exactly at
the start signal and after the last result, polls the members for leader changes meanwhile,
and reports progress from the workers' shared counters. Used by ``raftctl bench write|read``,
by distributed mode, and by the peer comparison in tests/perf.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import Any

from raftctl.bench.procstat import cpu_seconds
from raftctl.bench.results import Extras, WorkerResult, merge
from raftctl.bench.target import LeaderWatch, Target
from raftctl.bench.workers import (
    READ_KEY_PREFIX,
    Go,
    WorkerSpec,
    assign,
    split,
    worker_main,
)
from raftctl.client import AsyncClient
from raftctl.errors import RaftctlError
from raftd.wire.client import ErrorCode

READY_TIMEOUT_S = 60.0
"""Spawned workers import Python and connect every client: slow on a loaded machine."""
PRELOAD_CONCURRENCY = 64

Progress = Callable[[int], None]
"""Called about ten times a second with the number of requests answered so far."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadSpec:
    """The load design (the same for every system the benchmark compares)."""

    op: str = "write"
    consistency: str = "linearizable"
    spread: bool = False
    """Reads: spread clients over all members instead of sending them to the leader."""
    clients: int = 1
    workers: int = 2
    pipeline: int = 1
    size: int = 100
    keys: int = 10_000
    duration: float | None = 10.0
    entries: int | None = None
    timeout: float = 5.0
    interval: float = 1.0
    protocol: str = "rafty"
    """The client the workers use (`raftctl.bench.workers.client_class`)."""

    def to_wire(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> LoadSpec:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class BenchError(RaftctlError):
    """The benchmark itself could not run (a worker failed, nobody answered in time)."""


class RunFailed(BenchError):
    """The cluster failed the run's requests: one with an error no retry can fix (the run
    stopped there), or every one of them. ``timed_out``: unanswered, rather than refused;
    the message then names ``endpoints``, the members the clients tried (as raftctl does
    for every request that timed out, exit status 3)."""

    def __init__(self, code: str, message: str, *, every: bool,
                 endpoints: tuple[str, ...] = ()) -> None:
        what = "every request failed" if every else "a request failed"
        text = f"{what}: {code}: {message}" if message else f"{what}: {code}"
        if endpoints and code == ErrorCode.TIMEOUT.value:
            text += f"; endpoints tried: {', '.join(endpoints)}"
        super().__init__(text)
        self.code = code
        self.message = message
        self.every = every
        self.endpoints = endpoints

    @property
    def timed_out(self) -> bool:
        return self.code == ErrorCode.TIMEOUT.value

    def tried(self, endpoints: tuple[str, ...]) -> RunFailed:
        """The same failure, naming ``endpoints`` (unless it already names some)."""
        if self.endpoints:
            return self
        return RunFailed(self.code, self.message, every=self.every, endpoints=endpoints)

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "every": self.every,
                "endpoints": list(self.endpoints)}

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> RunFailed:
        return cls(str(data["code"]), str(data["message"]), every=bool(data["every"]),
                   endpoints=tuple(str(e) for e in data.get("endpoints", ())))


def require_success(summary: dict[str, Any]) -> None:
    """Raise `RunFailed` for a run (`results.summarize`) in which no request succeeded: its
    figures would only hide why. A record's ``members`` are the endpoints tried."""
    if summary["requests"] > 0:
        return
    first = summary["first_error"] or {"code": ErrorCode.TIMEOUT.value,
                                       "message": "no request was answered"}
    raise RunFailed(first["code"], first["message"], every=True,
                    endpoints=tuple(summary.get("members", ())))


async def preload(target: Target, spec: LoadSpec) -> None:
    """Write the keys a read benchmark reads, so every read finds its key."""
    value = os.urandom(spec.size)
    gate = asyncio.Semaphore(PRELOAD_CONCURRENCY)
    async with AsyncClient([target.leader, *target.members], spec.timeout,
                           **target.access) as client:
        async def put(i: int) -> None:
            async with gate:
                await client.set(f"{READ_KEY_PREFIX}{i}", value)
        await asyncio.gather(*(put(i) for i in range(spec.keys)))


async def run_load(
    spec: LoadSpec,
    target: Target,
    progress: Progress | None = None,
    *,
    client_offset: int = 0,
    total_clients: int | None = None,
    watch: bool = True,
    gate: Callable[[], Awaitable[int]] | None = None,
) -> tuple[WorkerResult, Extras]:
    """Run ``spec`` against ``target``; returns the merged worker results and the extras.

    ``client_offset``/``total_clients``: this run's clients among those of several machines
    (distributed mode), so that their keys never collide. ``gate``: awaited once every worker
    is connected and ready, just before the start signal, and returns the client offset
    (distributed mode waits there for the head's go, which also fixes the joiners' order,
    so that spawning workers does not delay the start).
    """
    ctx = multiprocessing.get_context("spawn")
    nworkers = max(1, min(spec.workers, spec.clients))
    first = target.leader
    targets = list(target.members) if spec.op == "read" and spec.spread else [first]
    addresses = assign(spec.clients, targets)
    counts = split(spec.clients, nworkers)
    shared = ctx.RawArray("q", nworkers)
    specs, start = [], 0
    for w, count in enumerate(counts):
        specs.append(WorkerSpec(
            index=w, op=spec.op, consistency=spec.consistency,
            addresses=tuple(addresses[start:start + count]),
            endpoints=(first, *(m for m in target.members if m != first)),
            total_clients=total_clients or spec.clients,
            pipeline=spec.pipeline, size=spec.size, keys=spec.keys,
            timeout=spec.timeout, interval=spec.interval, protocol=spec.protocol,
            credentials=target.credentials,
        ))
        start += count
    quotas = split(spec.entries, spec.clients) if spec.entries is not None else None
    pipes: list[Connection] = []
    procs = []
    for ws in specs:
        parent_end, child_end = ctx.Pipe()
        proc = ctx.Process(target=worker_main, args=(ws, child_end, shared), daemon=True,
                           name=f"raftctl-bench-worker-{ws.index}")
        proc.start()
        child_end.close()
        pipes.append(parent_end)
        procs.append(proc)
    try:
        for conn in pipes:
            await _expect(conn, "ready", READY_TIMEOUT_S + 10 * spec.timeout)
        if gate is not None:
            client_offset = await gate()
        watcher = LeaderWatch(target.members, spec.timeout, **target.access) if watch else None
        cluster_before = target.cpu()
        parent_before = cpu_seconds(os.getpid())
        if watcher is not None:
            watcher.start()
        for ws, conn in zip(specs, pipes, strict=True):
            offset = sum(counts[: ws.index])
            share = None if quotas is None else tuple(quotas[offset:offset + ws.clients])
            conn.send(("go", Go(spec.duration, share, client_offset + offset)))
        results = await _collect(pipes, shared, progress, spec)
        cluster_after = target.cpu()
        parent_after = cpu_seconds(os.getpid())
        if watcher is not None:
            await watcher.stop()
    except BaseException as exc:  # Ctrl-C, a failed worker: the others have nothing left to do
        for proc in procs:
            proc.kill()
        if isinstance(exc, RunFailed):  # a worker's refusal: only the run knows the members
            raise exc.tried(target.members) from None
        raise
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in pipes:
            conn.close()
    extras = Extras(
        parent_cpu_seconds=None if parent_before is None or parent_after is None
        else parent_after - parent_before,
        leader_changes=None if watcher is None else watcher.leader_changes,
        term_changes=None if watcher is None else watcher.term_changes,
    )
    if cluster_before is not None and cluster_after is not None:
        extras.cluster_cpu_by_node = {
            a: cluster_after[a] - cluster_before[a] for a in cluster_before
        }
        extras.cluster_cpu_seconds = sum(extras.cluster_cpu_by_node.values())
    return merge(results), extras


async def _readable(conn: Connection, timeout: float | None) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()
    loop.add_reader(fd, _wake, ready)
    try:
        async with asyncio.timeout(timeout):
            await ready
    except TimeoutError:
        raise BenchError(f"a load generator did not answer within {timeout:g}s") from None
    finally:
        loop.remove_reader(fd)
        # The loop made the pipe non-blocking; a large message must not be read in pieces.
        os.set_blocking(fd, True)


async def _receive(conn: Connection, timeout: float | None) -> tuple[str, Any]:
    await _readable(conn, timeout)
    try:
        kind, payload = conn.recv()
    except EOFError:
        raise BenchError("a load generator exited without a result") from None
    if kind == "failed":
        raise BenchError(str(payload))
    if kind == "refused":
        raise RunFailed.from_wire(payload)
    return kind, payload


async def _expect(conn: Connection, kind: str, timeout: float) -> Any:
    got, payload = await _receive(conn, timeout)
    if got != kind:
        raise BenchError(f"a load generator said {got!r} instead of {kind!r}")
    return payload


async def _collect(
    pipes: list[Connection], shared: Any, progress: Progress | None, spec: LoadSpec
) -> list[WorkerResult]:
    """Every worker's result, reporting progress meanwhile."""
    # A run ends by itself: its duration (or entries at no less than 1 request/s per client),
    # plus time for requests that gave up after ten timeouts.
    budget = (spec.duration or spec.entries or 0) + 20 * spec.timeout + 30
    tasks = [asyncio.ensure_future(_expect(conn, "result", budget)) for conn in pipes]
    try:
        while not all(t.done() for t in tasks):
            await asyncio.wait(tasks, timeout=0.1, return_when=asyncio.FIRST_EXCEPTION)
            for t in tasks:
                if t.done() and t.exception() is not None:
                    raise t.exception()  # type: ignore[misc]
            if progress is not None:
                progress(sum(shared))
    finally:
        for t in tasks:
            t.cancel()
        # Let them finish (their pipes are closed next): none is left to fail unheard.
        await asyncio.gather(*tasks, return_exceptions=True)
    if progress is not None:
        progress(sum(shared))
    return [WorkerResult.from_wire(t.result()) for t in tasks]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

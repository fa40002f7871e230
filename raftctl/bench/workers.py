"""Load generator processes: closed-loop clients, each an asyncio task with its own connection.

Why processes: one Python process saturates one core at some tens of thousands of requests
per second; ``--workers W`` spreads the logical clients over W processes (multiprocessing,
spawned so that no thread or event loop of the parent leaks into them), each running uvloop.

A worker's life, driven by its parent over a pipe:

1. connect every client and send one request each (a write opens the client's session, whose
   seq 1 must travel alone), not measured; answer ``ready``, or ``refused`` if one failed;
2. on ``go`` (the parent sends it to all workers at once and samples the cluster's CPU), run:
   each client keeps ``pipeline`` requests outstanding and sends the next as soon as one is
   answered (closed loop), until its share of ``entries`` is done or ``duration`` is over;
   a request still unanswered a timeout after ``duration`` is cut short (an error), and an
   error no retry can fix (`FINAL_CODES`) stops the run at once: answer ``refused``;
3. send the ``WorkerResult`` (histograms, per-client counts, its own CPU seconds) and exit.

``refused`` carries a `Refusal`: the error's code and message, and whether every request
this worker sent failed.

Progress goes through shared memory (one counter per worker, written ten times a second), so
watching a run costs the hot path nothing.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import uvloop

from raftctl.bench.histogram import Histogram, bucket_of
from raftctl.bench.procstat import cpu_seconds
from raftctl.bench.protocol import BenchClient, Response, Tally
from raftctl.bench.results import ClientResult, WorkerResult
from raftctl.connection import Credentials
from raftd.statemachine import SET, encode_command
from raftd.wire.client import ErrorCode

PROGRESS_INTERVAL = 0.1
READ_KEY_PREFIX = "bench/read/"
OPEN_KEY = "bench/open"
"""Where each client's unmeasured first write (which opens its session) goes."""
FINAL_CODES = frozenset(c.value for c in ErrorCode if not c.retryable) - {
    ErrorCode.SESSION_EXPIRED.value}
"""Errors no retry can fix (the request's size or shape, a missing token, a full disk): each
would come back for every later request, so the run stops. ``session_expired`` is not one:
the client opens a new session with its next write."""

Refusal = dict[str, Any]
"""Why a worker stopped: ``{"code", "message", "every"}`` (``every``: no request of this
worker succeeded)."""


class LoadClient(Protocol):
    """What a worker needs of a client; `BenchClient` speaks rafty's protocol, and the peer
    comparison (tests/perf) plugs in clients of other systems through ``WorkerSpec.protocol``.
    """

    tally: Tally

    async def write(self, key: str, value: bytes) -> Response:
        """Set ``key``; a response of type ``result`` is a success."""

    async def read(self, key: str, consistency: str, *, follow: bool) -> Response: ...

    def check(self, now: float) -> None:
        """Watchdog, ten times a second: give up on a request stuck past the timeout."""

    def close(self) -> None: ...


def client_class(protocol: str) -> Any:
    """``rafty`` or ``package.module:Class`` (a class built like ``BenchClient``)."""
    if protocol == "rafty":
        return BenchClient
    module, _, name = protocol.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerSpec:
    """Everything a worker needs to know; picklable, so it crosses the spawn boundary."""

    index: int
    op: str
    """``write`` or ``read``."""
    consistency: str
    addresses: tuple[str, ...]
    """Where each of this worker's clients sends its requests first (one per client)."""
    endpoints: tuple[str, ...]
    pipeline: int
    size: int
    keys: int
    """Distinct keys: reads draw from all of them (preloaded), writes split them by client."""
    total_clients: int
    """Clients across all workers (and joiners), among which writes split the keys."""
    timeout: float
    interval: float
    """Width in seconds of the time series' buckets."""
    protocol: str = "rafty"
    """Which client speaks to the cluster (`client_class`)."""
    credentials: Credentials = Credentials()
    """What the cluster's nodes require of rafty clients (a token, TLS)."""

    @property
    def clients(self) -> int:
        return len(self.addresses)


@dataclass(frozen=True, slots=True)
class Go:
    """The start signal: run for ``duration`` seconds, or each client ``quotas[i]`` requests.

    ``first_client``: global index of the worker's first client, so that keys never collide
    across workers (or joiners, whose order is only known at the start).
    """

    duration: float | None
    quotas: tuple[int, ...] | None
    first_client: int


def worker_main(spec: WorkerSpec, conn: Connection, progress: Any) -> None:
    """Process entry point; ``progress`` is a shared array with one counter per worker."""
    # Ctrl-C reaches the whole process group: the parent decides, and stops us (no traceback
    # per worker under its "Interrupted").
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        uvloop.run(_Worker(spec, conn, progress).run())
    except BaseException as exc:
        conn.send(("failed", f"worker {spec.index}: {type(exc).__name__}: {exc}"))
        raise
    finally:
        conn.close()


class _Worker:
    def __init__(self, spec: WorkerSpec, conn: Connection, progress: Any) -> None:
        self.spec = spec
        self.conn = conn
        self.progress = progress
        cls = client_class(spec.protocol)
        # One TLS context for all of this worker's clients (loading it reads the files).
        access = spec.credentials.client_options()
        self.clients: list[LoadClient] = [cls(a, spec.endpoints, spec.timeout, **access)
                                          for a in spec.addresses]
        self.value = os.urandom(spec.size)
        self.done = 0
        self.latency = Histogram()
        self.series: list[Histogram] = []
        self.start = 0.0
        self.read_keys = [f"{READ_KEY_PREFIX}{i}" for i in range(spec.keys)]
        self.write_keys: list[list[str]] = []  # known at the start signal
        self.first_error: dict[str, Any] | None = None
        """The first failed request's code and message, ``t`` seconds after the start."""
        self.refusal: Refusal | None = None
        """Set by the first error in `FINAL_CODES`: the lanes stop, the worker answers it."""
        self.refused = asyncio.Event()

    def _write_keys(self, first_client: int) -> list[list[str]]:
        per_client = max(1, self.spec.keys // self.spec.total_clients)
        return [[f"bench/{first_client + c}/{k}" for k in range(per_client)]
                for c in range(self.spec.clients)]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        # The watchdog covers the unmeasured requests too: a node that accepts connections
        # but never answers (frozen) must fail them after their retries, not hang the worker.
        ticker = loop.create_task(self._tick())
        answers = await asyncio.gather(*(self._one(i, c) for i, c in enumerate(self.clients)))
        failed = [a for a in answers if a.get("type") != "result"]
        if failed:
            # The clients already retried what can be retried: the measured requests, alike,
            # would fail the same way, so the run stops before it starts.
            self.conn.send(("refused", _refusal(failed[0], every=len(failed) == len(answers))))
            return
        self.conn.send(("ready", None))
        go: Go = await self._receive()
        self.write_keys = self._write_keys(go.first_client)
        cpu_before = cpu_seconds(os.getpid())
        self.start = time.perf_counter()
        started_wall = time.time()
        stop_at = self.start + go.duration if go.duration is not None else None
        measured = asyncio.gather(*(
            self._client(i, c, stop_at, None if go.quotas is None else go.quotas[i])
            for i, c in enumerate(self.clients)
        ))
        refused = loop.create_task(self.refused.wait())
        either: list[asyncio.Future[Any]] = [measured, refused]
        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if self.refusal is not None:
            self.conn.send(("refused", self.refusal))
            return  # leaving the loop cancels the lanes; the parent stops the other workers
        refused.cancel()
        per_client = measured.result()
        cpu_after = cpu_seconds(os.getpid())
        ticker.cancel()
        self.progress[self.spec.index] = self.done
        for client in self.clients:
            client.close()
        cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
        command_bytes = len(encode_command(SET, self.write_keys[0][0], self.value,
                                           client_id="0" * 32, seq=1 << 20,
                                           first_unacked_seq=1 << 20))
        self.conn.send(("result", WorkerResult(
            clients=list(per_client),
            latency=self.latency,
            series=self.series,
            interval=self.spec.interval,
            cpu_seconds=cpu,
            started=started_wall,
            command_bytes=command_bytes if self.spec.op == "write" else 0,
            first_error=self.first_error,
        ).to_wire()))

    async def _receive(self) -> Any:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self.conn.fileno()
        loop.add_reader(fd, _wake, ready)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
            # The loop made the pipe non-blocking; a large message must not be read in pieces.
            os.set_blocking(fd, True)
        kind, payload = self.conn.recv()
        if kind != "go":
            raise RuntimeError(f"expected go, got {kind!r}")
        return payload

    async def _tick(self) -> None:
        """Publish progress and run the clients' watchdog until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            self.progress[self.spec.index] = self.done
            now = loop.time()
            for client in self.clients:
                client.check(now)

    async def _one(self, i: int, client: LoadClient) -> Response:
        """One unmeasured request: connects the client and, for writes, opens its session."""
        if self.spec.op == "write":
            return await client.write(OPEN_KEY, self.value)
        return await client.read(self.read_keys[0], self.spec.consistency, follow=False)

    async def _client(
        self, i: int, client: LoadClient, stop_at: float | None, quota: int | None
    ) -> ClientResult:
        state = _Quota(quota)
        lanes = [asyncio.ensure_future(self._lane(i, client, stop_at, state))
                 for _ in range(self.spec.pipeline)]
        # A client retries for up to ten timeouts: a request still unanswered a timeout after
        # the end (a frozen leader, a node refusing every attempt) must not hold the run up.
        timeout = self.spec.timeout
        cut = None if stop_at is None else max(0.0, stop_at + timeout - time.perf_counter())
        done, late = await asyncio.wait(lanes, timeout=cut)
        for lane in done:
            lane.result()  # a lane's own failure is the worker's
        if late:
            for lane in late:
                lane.cancel()
            await asyncio.wait(late)
            self._failed({"code": ErrorCode.TIMEOUT.value,
                          "message": f"no answer within {timeout:g}s after the end of the run"})
        duration = (state.last - self.start) if state.last else 0.0
        tally = client.tally
        return ClientResult(requests=state.answered, duration=duration,
                            errors=tally.errors + len(late), retries=tally.retries,
                            redirects=tally.redirects)

    async def _lane(
        self, i: int, client: LoadClient, stop_at: float | None, state: _Quota
    ) -> None:
        """One outstanding request of a client, reissued as soon as it is answered."""
        clock = time.perf_counter
        write = self.spec.op == "write"
        keys = self.write_keys[i] if write else self.read_keys
        nkeys = len(keys)
        value = self.value
        consistency = self.spec.consistency
        interval = self.spec.interval
        latency = self.latency
        series = self.series
        k = (i * 7919) % nkeys
        while (state.take() and (stop_at is None or clock() < stop_at)
               and self.refusal is None):
            k = k + 1 if k + 1 < nkeys else 0
            sent = clock()
            if write:
                response = await client.write(keys[k], value)
            else:
                response = await client.read(keys[k], consistency, follow=False)
            now = clock()
            state.last = now
            if response.get("type") != "result":
                self._failed(response)  # counted in the client's tally as an error
                continue
            took = now - sent
            bucket = bucket_of(took)
            latency.record(took, bucket)
            slot = int((now - self.start) / interval)
            while len(series) <= slot:
                series.append(Histogram())
            series[slot].record(took, bucket)
            state.answered += 1
            self.done += 1

    def _failed(self, response: Response) -> None:
        if self.first_error is None:
            self.first_error = {**_error(response), "t": time.perf_counter() - self.start}
        if response.get("code") in FINAL_CODES and self.refusal is None:
            # Every client's first request succeeded: not every request failed.
            self.refusal = _refusal(response, every=False)
            self.refused.set()


class _Quota:
    """Requests a client may still start (None: unlimited), when it last got an answer, and
    how many of its requests succeeded."""

    __slots__ = ("answered", "last", "left")

    def __init__(self, left: int | None) -> None:
        self.left = left
        self.last = 0.0
        self.answered = 0

    def take(self) -> bool:
        if self.left is None:
            return True
        if self.left <= 0:
            return False
        self.left -= 1
        return True


def _error(response: Response) -> dict[str, str]:
    """The code and message of a failed request's answer (peers' clients may omit either)."""
    return {"code": str(response.get("code") or "error"),
            "message": str(response.get("message") or "")}


def _refusal(response: Response, *, every: bool) -> Refusal:
    return {**_error(response), "every": every}


def split(total: int, parts: int) -> list[int]:
    """``total`` spread over ``parts`` as evenly as possible, larger shares first."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def assign(clients: int, targets: Sequence[str]) -> list[str]:
    """Client i's first address: targets taken round robin."""
    return [targets[i % len(targets)] for i in range(clients)]


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)

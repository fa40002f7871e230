"""Helpers of the integration tests: raw protocol requests, diagnostics, polling, bulk I/O.

Every wait is for a condition, with a deadline (``wait_until``). The one fixed window is
``holds_throughout``, which watches that something does NOT happen.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from typing import Any, TypeVar

import msgpack

from raftctl import AsyncClient
from raftctl.bench.election import parse_role_changes
from raftctl.localcluster import LocalCluster
from raftd.wire.client import parse_address

DEADLINE = 30.0
"""Generous deadline of every wait: a slow CI machine must never fail a test by timing."""
POLL = 0.05
STEADY: dict[str, Any] = {"election_timeout_ms": [3000, 6000]}
"""``[raft]`` keys of a cluster whose leader and term must not change for seconds while a test
watches (on a busy machine the default 150-300 ms lets one late heartbeat, or a CheckQuorum
step-down, start an election the test did not cause). Pass it as is: LocalCluster copies it."""

T = TypeVar("T")
Response = dict[str, Any]


def wait_until(
    probe: Callable[[], T | None], what: str, timeout: float = DEADLINE
) -> T:
    """Poll ``probe`` until it returns something other than None or False, and return that.

    Raises AssertionError naming ``what`` (and the last value seen) after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last is not None and last is not False:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(POLL)


def holds_throughout(check: Callable[[], str | None], seconds: float) -> None:
    """Assert that ``check`` finds nothing wrong (returns None) on every poll for ``seconds``.

    This observes that something does NOT happen (e.g. no leader is elected); the window is
    only an observation period, never a condition on how long anything takes.
    """
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        problem = check()
        assert problem is None, problem
        time.sleep(POLL)


# -- raw client protocol ---------------------------------------------------------------------------


def read_frames(sock: socket.socket, count: int | None = None) -> list[Any]:
    """Read msgpack objects from ``sock``: ``count`` of them, or (None) all until EOF."""
    unpacker = msgpack.Unpacker(raw=False)
    frames: list[Any] = []
    while count is None or len(frames) < count:
        data = sock.recv(65536)
        if not data:
            break
        unpacker.feed(data)
        frames.extend(unpacker)
    return frames


def one_shot(
    endpoint: str, payload: bytes | Mapping[str, Any], timeout: float = DEADLINE
) -> list[Any]:
    """Send one raw request (a map, or raw bytes) and return every frame until the server closes.

    Raises OSError (``TimeoutError`` included) when the node does not answer and close in time.
    """
    data = payload if isinstance(payload, bytes) else msgpack.packb(payload, use_bin_type=True)
    with socket.create_connection(parse_address(endpoint), timeout=timeout) as sock:
        sock.sendall(data)
        return read_frames(sock)


def diagnostic(endpoint: str, timeout: float = 1.0) -> Response | None:
    """The node's diagnostic map, or None if it does not answer (dead or SIGSTOPped)."""
    try:
        frames = one_shot(endpoint, {"type": "diagnostic"}, timeout)
    except OSError:
        return None
    return frames[0] if frames and frames[0].get("type") == "result" else None


# -- cluster state -------------------------------------------------------------------------------


def wait_diagnostic(endpoint: str) -> Response:
    """The node's diagnostic, polled: a loaded node may not answer one request in time."""
    return wait_until(lambda: diagnostic(endpoint, timeout=5.0), f"{endpoint}'s diagnostic")


def diag_of(cluster: LocalCluster, node: int) -> Response:
    return wait_diagnostic(cluster.endpoints[node])


def diagnostics(cluster: LocalCluster, nodes: Iterable[int] | None = None) -> dict[int, Response]:
    """Diagnostics of the given nodes (default: all) that answer, by node index."""
    wanted = range(len(cluster)) if nodes is None else nodes
    answers = {}
    for i in wanted:
        if cluster.is_running(i):
            diag = diagnostic(cluster.endpoints[i])
            if diag is not None:
                answers[i] = diag
    return answers


def current_leader(cluster: LocalCluster, nodes: Iterable[int] | None = None) -> int | None:
    """The node that leads in the highest term, once every running node of ``nodes`` (default:
    all) answers and names it (so a deposed leader that has not heard the news, or a node still
    starting, is never overlooked)."""
    wanted = [i for i in (range(len(cluster)) if nodes is None else nodes) if cluster.is_running(i)]
    answers = diagnostics(cluster, wanted)
    if not answers or len(answers) < len(wanted):
        return None
    top = max(d["persist"]["currentTerm"] for d in answers.values())
    leaders = [i for i, d in answers.items() if d["status"] == "leader" and
               d["persist"]["currentTerm"] == top]
    if len(leaders) != 1:
        return None
    address = cluster.endpoints[leaders[0]]
    if all(d["volatile"]["leaderId"] == address for d in answers.values()):
        return leaders[0]
    return None


def leader_diagnostic(
    cluster: LocalCluster, leader: int | None = None,
    ask: Callable[[str], Response | None] = diagnostic,
) -> tuple[int, Response] | None:
    """``(leader, its diagnostic)`` if the leader's own diagnostic says it leads, else None: one
    probe, for ``wait_until``. ``leader``: the node to ask (default: ``current_leader`` now);
    ``ask``: how to get an endpoint's diagnostic (default: ``diagnostic``)."""
    if leader is None:
        leader = current_leader(cluster)
        if leader is None:
            return None
    diag = ask(cluster.endpoints[leader])
    if diag is None or diag["status"] != "leader":
        return None
    return leader, diag


def leader_and_term(cluster: LocalCluster) -> tuple[int, int]:
    """The leader and its term, as its own diagnostic names them."""
    def probe() -> tuple[int, int] | None:
        found = leader_diagnostic(cluster)
        return None if found is None else (found[0], found[1]["persist"]["currentTerm"])

    return wait_until(probe, "a leader and its term")


def wait_for_leader(
    cluster: LocalCluster, nodes: Iterable[int] | None = None, timeout: float = DEADLINE
) -> int:
    """Wait until one leader is acknowledged by every answering node of ``nodes``."""
    chosen = list(range(len(cluster)) if nodes is None else nodes)

    def probe() -> int | None:
        if not any(cluster.is_running(i) for i in chosen):
            raise AssertionError(f"none of nodes {chosen} is running (see their logs)")
        return current_leader(cluster, chosen)

    return wait_until(probe, f"a leader among nodes {chosen}", timeout)


def wait_caught_up(cluster: LocalCluster, node: int, leader: int) -> Response:
    """Wait until ``node`` applied everything ``leader`` has committed; returns its diagnostic."""
    def probe() -> Response | None:
        lead = diagnostic(cluster.endpoints[leader])
        diag = diagnostic(cluster.endpoints[node])
        if lead is None or diag is None:
            return None
        if diag["log"]["appliedIndex"] >= lead["log"]["commitIndex"] > 0:
            return diag
        return None

    return wait_until(probe, f"node {node} to apply node {leader}'s commit index")


def agreed_state_hash(cluster: LocalCluster, nodes: Iterable[int] | None = None) -> str:
    """The state hash, once every node of ``nodes`` (default: all) reports the same one. Call
    it after the last write: each acknowledged write was applied by the leader that
    acknowledged it, so a hash all nodes agree on includes them all, whoever leads by now."""
    endpoints = [cluster.endpoints[i] for i in (range(len(cluster)) if nodes is None else nodes)]

    def probe() -> str | None:
        diags = [diagnostic(ep, timeout=5.0) for ep in endpoints]
        hashes = {d["stateHash"] for d in diags if d is not None}
        return hashes.pop() if None not in diags and len(hashes) == 1 else None

    return wait_until(probe, f"{endpoints} to report the same state hash")


def log_offsets(cluster: LocalCluster) -> list[int]:
    """Each node's log size now (0 before its first start): where ``log_since`` begins."""
    return [p.stat().st_size if p.exists() else 0 for p in cluster.log_paths]


def log_since(cluster: LocalCluster, node: int, offset: int) -> str:
    """What ``node`` logged after its log was ``offset`` bytes long."""
    with open(cluster.log_paths[node], "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def led_since(cluster: LocalCluster, node: int, offset: int) -> bool:
    """Whether ``node`` became leader after its log was ``offset`` bytes long: the proof of a
    transfer, whoever leads by the time we look (an election may follow it)."""
    changes = parse_role_changes(log_since(cluster, node, offset))
    return any(change.new == "leader" for change in changes)


def freeze(cluster: LocalCluster, node: int) -> None:
    """SIGSTOP a node this test started (the conftest teardown always SIGCONTs)."""
    cluster.kill(node, signal.SIGSTOP)


def thaw(cluster: LocalCluster, node: int) -> None:
    cluster.kill(node, signal.SIGCONT)


def kill_all_at_once(cluster: LocalCluster) -> None:
    """SIGKILL every running node before reaping any: none outlives the others by more than
    the time it takes to send the signals. Only PIDs of processes the cluster started (and has
    not reaped yet, so they cannot have been reused) are signalled."""
    running = [i for i in range(len(cluster)) if cluster.is_running(i)]
    for i in running:
        pid = cluster.pid(i)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    for i in running:
        cluster.kill(i)  # reaps it


# -- bulk key-value I/O ----------------------------------------------------------------------------


async def _bounded(concurrency: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Run the jobs with at most ``concurrency`` of them in flight; results in job order."""
    gate = asyncio.Semaphore(concurrency)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await job()

    return await asyncio.gather(*(run(job) for job in jobs))


def write_all(endpoints: list[str], items: Mapping[str, Any], concurrency: int = 64) -> None:
    """Write every item through one AsyncClient with ``concurrency`` requests in flight."""
    async def main() -> None:
        async with AsyncClient(endpoints, timeout=DEADLINE) as client:
            await _bounded(concurrency, [partial(client.set, k, v) for k, v in items.items()])

    asyncio.run(main())


def read_all(
    endpoints: list[str], keys: Iterable[str], consistency: str = "linearizable",
    concurrency: int = 64,
) -> dict[str, Any]:
    """Read every key through one AsyncClient; missing keys map to None."""
    keys = list(keys)

    async def main() -> list[Any]:
        async with AsyncClient(endpoints, timeout=DEADLINE) as client:
            return await _bounded(concurrency, [
                partial(client.get, k, consistency=consistency) for k in keys
            ])

    return dict(zip(keys, asyncio.run(main()), strict=True))


def missing_or_wrong(expected: Mapping[str, Any], actual: Mapping[str, Any]) -> dict[str, Any]:
    """The keys whose value in ``actual`` differs from ``expected`` (with what was read)."""
    return {k: actual.get(k) for k, v in expected.items() if actual.get(k) != v}

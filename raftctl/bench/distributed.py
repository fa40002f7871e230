"""Distributed mode: one head, J joiners on other machines, coordinated through the cluster.

The cluster under test is also the coordination medium (the seed's design), under the key
prefix ``bench/head/``:

- the head writes ``config`` (run id, load design, members, how many joiners it waits for);
- each joiner reads it, spawns and connects its workers, then registers ``RUN/joined/ID``;
- once all J registered, the head writes ``RUN/start`` (the joiners' order: each joiner's
  clients get disjoint keys) and samples the cluster's CPU; joiners poll for it every
  ``POLL_S`` and start at once, so starts differ by about one poll interval;
- each joiner pushes its merged worker results to ``RUN/result/ID`` (histograms: a few KB),
  or ``{"refused": ...}`` if the cluster refused its requests (`RunFailed`, even before it
  registered): the head then fails the same way instead of waiting;
- the head merges them into one report, writes it to disk, and deletes the run's keys.

A joiner only needs one reachable cluster endpoint (HEAD); the members come with the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from dataclasses import dataclass
from typing import Any

from raftctl.bench.results import Extras, WorkerResult, merge
from raftctl.bench.runner import BenchError, LoadSpec, RunFailed, run_load
from raftctl.bench.target import LeaderWatch, Target, find_leader
from raftctl.client import AsyncClient
from raftctl.connection import Credentials
from raftctl.errors import RaftctlError

PREFIX = "bench/head/"
CONFIG_KEY = PREFIX + "config"
POLL_S = 0.01
REGISTER_POLL_S = 0.1


@dataclass(frozen=True, slots=True)
class HeadOutcome:
    merged: WorkerResult
    extras: Extras
    joiners: list[str]


async def _wait_for(check: Any, limit: float, what: str, interval: float) -> Any:
    """Poll ``check()`` until it returns something other than None, for ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while True:
        answer = await check()
        if answer is not None:
            return answer
        if loop.time() > deadline:
            raise BenchError(f"gave up after {limit:g}s waiting for {what}")
        await asyncio.sleep(interval)


async def _results(client: AsyncClient, base: str) -> list[Any]:
    """The results the joiners pushed so far; raises the first refusal among them."""
    page = await client.scan(base + "result/")
    for item in page.items:
        if isinstance(item.value, dict) and "refused" in item.value:
            raise RunFailed.from_wire(item.value["refused"])
    return [item.value for item in page.items]


async def _delete_prefix(client: AsyncClient, prefix: str) -> None:
    keys = [item.key async for item in client.items(prefix)]
    await asyncio.gather(*(client.delete(k) for k in keys))


async def head(
    spec: LoadSpec, target: Target, joiners: int, wait: float
) -> HeadOutcome:
    """Publish the run, wait for ``joiners``, start them, and merge what they push back."""
    run = uuid.uuid4().hex[:12]
    base = f"{PREFIX}{run}/"
    async with AsyncClient([target.leader, *target.members], spec.timeout,
                           **target.access) as client:
        await client.set(CONFIG_KEY, {
            "run": run, "spec": spec.to_wire(), "joiners": joiners,
            "members": list(target.members), "leader": target.leader,
        })
        try:
            async def registered() -> list[str] | None:
                await _results(client, base)  # a joiner refused before registering
                page = await client.scan(base + "joined/")
                names = sorted(item.key.rsplit("/", 1)[1] for item in page.items)
                return names if len(names) >= joiners else None

            order = await _wait_for(registered, wait, f"{joiners} joiners", REGISTER_POLL_S)
            order = order[:joiners]
            watcher = LeaderWatch(target.members, spec.timeout, **target.access)
            cluster_before = target.cpu()
            watcher.start()
            await client.set(base + "start", {"order": order})
            budget = (spec.duration or spec.entries or 0) + 20 * spec.timeout + 60

            async def pushed() -> list[WorkerResult] | None:
                values = await _results(client, base)
                if len(values) < len(order):
                    return None
                return [WorkerResult.from_wire(value) for value in values]

            results = await _wait_for(pushed, budget, "the joiners' results", REGISTER_POLL_S)
            cluster_after = target.cpu()
            await watcher.stop()
        finally:
            await client.delete(CONFIG_KEY)
            await _delete_prefix(client, base)
    extras = Extras(parent_cpu_seconds=0.0, leader_changes=watcher.leader_changes,
                    term_changes=watcher.term_changes)
    if cluster_before is not None and cluster_after is not None:
        extras.cluster_cpu_by_node = {a: cluster_after[a] - cluster_before[a]
                                      for a in cluster_before}
        extras.cluster_cpu_seconds = sum(extras.cluster_cpu_by_node.values())
    return HeadOutcome(merge(results), extras, order)


async def join(
    endpoints: tuple[str, ...], wait: float, timeout: float,
    credentials: Credentials = Credentials(),
) -> tuple[LoadSpec, Target, WorkerResult, Extras]:
    """Fetch the head's run, take part in it, push the result; returns what this one measured.
    ``credentials``: this joiner's own (the head never publishes its token)."""
    me = f"{socket.gethostname()}-{os.getpid()}"
    access = credentials.client_options()
    async with AsyncClient(endpoints, timeout, **access) as client:
        async def published() -> dict[str, Any] | None:
            value = await client.get(CONFIG_KEY)
            return value if isinstance(value, dict) else None

        config = await _wait_for(published, wait, f"a head's configuration on "
                                 f"{', '.join(endpoints)}", REGISTER_POLL_S)
        spec = LoadSpec.from_wire(config["spec"])
        base = f"{PREFIX}{config['run']}/"
        members = tuple(config["members"])
        leader, _ = await find_leader(members, timeout, **access)
        target = Target(members, leader, None, credentials=credentials)

        async def go() -> int:
            await client.set(base + f"joined/{me}", {"host": socket.gethostname(),
                                                     "pid": os.getpid()})

            async def started() -> dict[str, Any] | None:
                value = await client.get(base + "start", consistency="stale")
                return value if isinstance(value, dict) else None

            start = await _wait_for(started, wait, "the head's start signal", POLL_S)
            if me not in start["order"]:
                raise BenchError(f"the head started without this joiner ({me})")
            offset: int = start["order"].index(me) * spec.clients
            return offset

        try:
            merged, extras = await run_load(
                spec, target, total_clients=spec.clients * int(config["joiners"]),
                watch=False, gate=go,
            )
        except RunFailed as err:
            with contextlib.suppress(RaftctlError):  # the refusal, not this, is the news
                await client.set(base + f"result/{me}", {"refused": err.to_wire()})
            raise
        await client.set(base + f"result/{me}", merged.to_wire())
    return spec, target, merged, extras

"""``bench election``: kill the leader of an idle local cluster, again and again, and time it.

Two figures per trial (the Raft paper's §9.3 / Figure 16 measures the first):

- *failover*: from the signal to the moment a new leader has committed an entry, i.e. when a
  write sent to it is acknowledged. A prober keeps one session-less write outstanding at
  every surviving member, resending every ``PROBE_INTERVAL_S`` after a redirect, so the figure
  is late by at most that interval.
- *election*: from the first candidacy of any survivor (its ``role follower -> pre_candidate``
  or ``-> candidate`` log line) to the winner's ``-> leader`` line. raftd logs role changes at
  INFO with millisecond timestamps; the survivors' logs are read from where they stood
  before the signal. This excludes the election timeout itself (the time it takes to notice
  the leader is gone), which failover includes.

Between trials the victim is restarted (SIGKILL) or resumed (SIGSTOP) and the cluster must
be idle and whole again: every member reachable, one leader, the same commit index.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgpack

from raftctl.bench.histogram import percentile, share_below
from raftctl.bench.protocol import Link, LinkLost
from raftctl.bench.runner import BenchError
from raftctl.errors import RaftctlError
from raftctl.localcluster import LocalCluster, scratch_dir
from raftctl.survey import collect_status

PROBE_INTERVAL_S = 0.003
FAILOVER_LIMIT_S = 10.0
STABLE_LIMIT_S = 30.0
SETTLE_S = (0.2, 0.4)
"""A pause before each signal, varied so the kill does not keep the same heartbeat phase."""
ELECTION_SHARES_MS = (50, 80, 100)
FAILOVER_SHARES_MS = (250, 400)

_ROLE_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*role (\w+) -> (\w+) \(term (\d+)"
)


@dataclass(frozen=True, slots=True)
class RoleChange:
    at: float
    """UNIX seconds (millisecond resolution, the log's)."""
    old: str
    new: str
    term: int


def parse_role_changes(text: str) -> list[RoleChange]:
    """The ``role A -> B (term T`` lines of a raftd text log, with their local timestamps."""
    out = []
    for line in text.splitlines():
        m = _ROLE_LINE.match(line)
        if m is None:
            continue
        stamp, millis, old, new, term = m.groups()
        at = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000
        out.append(RoleChange(at, old, new, int(term)))
    return out


def election_time(
    changes: Mapping[str, list[RoleChange]], winner: str, since: float
) -> tuple[float, float | None, float | None] | None:
    """First candidacy after ``since`` among ``changes`` (per member) -> ``winner`` leads.

    Returns (election, pre-vote, vote) seconds: the whole, then the winner's own last
    PreVote round (``pre_candidate -> candidate``) and vote round (``candidate -> leader``),
    each None where its lines are missing; None altogether without a candidacy or a lead.
    ``since`` is truncated to the log's milliseconds.
    """
    floor = int(since * 1000) / 1000
    starts = [c.at for log in changes.values() for c in log
              if c.at >= floor and c.new in ("pre_candidate", "candidate")]
    mine = [c for c in changes.get(winner, []) if c.at >= floor]
    leads = [k for k, c in enumerate(mine) if c.new == "leader"]
    if not starts or not leads:
        return None
    lead = mine[leads[0]]
    candidacy = next((c for c in reversed(mine[:leads[0]]) if c.new == "candidate"), None)
    pre = next((c for c in reversed(mine[:leads[0]]) if c.new == "pre_candidate"), None)
    vote = None if candidacy is None else lead.at - candidacy.at
    prevote = None if candidacy is None or pre is None else candidacy.at - pre.at
    return max(0.0, lead.at - min(starts)), prevote, vote


@dataclass(frozen=True, slots=True)
class Trial:
    failover: float | None
    election: float | None
    prevote: float | None = None
    """The winner's PreVote round; with ``vote``, where a slow election spent its time."""
    vote: float | None = None


def _stats(samples: list[float], shares: tuple[int, ...]) -> dict[str, Any]:
    ms = [s * 1000 for s in samples]
    return {
        "count": len(ms),
        "min": round(min(ms, default=0.0), 3),
        "p50": round(percentile(ms, 0.5), 3),
        "p90": round(percentile(ms, 0.9), 3),
        "p99": round(percentile(ms, 0.99), 3),
        "max": round(max(ms, default=0.0), 3),
        "mean": round(sum(ms) / len(ms), 3) if ms else 0.0,
        "share_under": {str(limit): round(share_below(ms, limit), 4) for limit in shares},
    }


def summarize(trials: list[Trial], *, servers: int, signal_name: str) -> dict[str, Any]:
    failovers = [t.failover for t in trials if t.failover is not None]
    elections = [t.election for t in trials if t.election is not None]
    prevotes = [t.prevote for t in trials if t.prevote is not None]
    votes = [t.vote for t in trials if t.vote is not None]
    return {
        "benchmark": "election",
        "servers": servers,
        "signal": signal_name,
        "trials": len(trials),
        "completed": len(failovers),
        "election_ms": _stats(elections, ELECTION_SHARES_MS),
        "failover_ms": _stats(failovers, FAILOVER_SHARES_MS),
        "prevote_round_ms": _stats(prevotes, ()),
        "vote_round_ms": _stats(votes, ()),
        "samples": {
            "election_ms": [round(s * 1000, 3) for s in elections],
            "failover_ms": [round(s * 1000, 3) for s in failovers],
        },
    }


def run_election(
    servers: int,
    trials: int,
    *,
    sigstop: bool,
    fsync: bool,
    timeout: float,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run ``trials`` trials on a fresh local cluster of ``servers`` nodes; the record."""
    sig = signal.SIGSTOP if sigstop else signal.SIGKILL
    results: list[Trial] = []
    with (scratch_dir("raftctl-bench-election-", keep_on=(BenchError,)) as base,
          LocalCluster(servers, base, fsync=fsync) as cluster):
        cluster.start_all()
        try:
            for k in range(trials):
                results.append(_trial(cluster, sig, timeout, k))
                if progress is not None:
                    progress(k + 1)
        finally:
            for i in range(len(cluster)):
                cluster.kill(i, signal.SIGCONT)  # a stopped node must hear SIGTERM
    return summarize(results, servers=servers, signal_name=sig.name)


def _trial(cluster: LocalCluster, sig: signal.Signals, timeout: float, k: int) -> Trial:
    victim = asyncio.run(_wait_stable(cluster, timeout))
    time.sleep(SETTLE_S[0] + (SETTLE_S[1] - SETTLE_S[0]) * ((k * 0.618) % 1.0))
    survivors = [i for i in range(len(cluster)) if i != victim]
    offsets = {i: _size(cluster.log_paths[i]) for i in survivors}
    killed_at = time.time()
    cluster.kill(victim, sig)
    try:
        winner, done_at = asyncio.run(_probe([cluster.endpoints[i] for i in survivors], k))
    finally:
        if sig == signal.SIGSTOP:
            cluster.kill(victim, signal.SIGCONT)
        else:
            cluster.start(victim)
    if winner is None:
        return Trial(None, None)
    changes = {cluster.endpoints[i]:
               parse_role_changes(_read_from(cluster.log_paths[i], offsets[i]))
               for i in survivors}
    timing = election_time(changes, winner, killed_at)
    if timing is None:
        return Trial(done_at - killed_at, None)
    return Trial(done_at - killed_at, *timing)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")


async def _wait_stable(cluster: LocalCluster, timeout: float) -> int:
    """Wait until every member answers, agrees on one leader, and has the same commit index."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STABLE_LIMIT_S
    seen = "no answer"
    while loop.time() < deadline:
        try:
            rows = await collect_status(list(cluster.endpoints), min(timeout, 1.0))
        except RaftctlError as exc:
            rows, seen = [], str(exc)
        leaders = {r.leader for r in rows}
        commits = {r.commit_index for r in rows}
        if (len(rows) == len(cluster) and all(r.reachable for r in rows)
                and len(leaders) == 1 and None not in leaders and len(commits) == 1
                and sum(r.role == "leader" for r in rows) == 1):
            leader = next(r.address for r in rows if r.role == "leader")
            return cluster.endpoints.index(leader)
        if rows:
            seen = "; ".join(
                f"{r.address} {r.role} term {r.term} leader {r.leader} commit {r.commit_index}"
                if r.reachable else f"{r.address} unreachable: {r.error}" for r in rows)
        await asyncio.sleep(0.05)
    raise BenchError(f"the cluster did not settle within {STABLE_LIMIT_S:g}s (last seen: "
                     f"{seen}; node logs: {', '.join(str(p) for p in cluster.log_paths)})")


async def _probe(survivors: list[str], k: int) -> tuple[str | None, float]:
    """Keep one write outstanding at each survivor; (the member that acked, when), or None."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[str, float]] = loop.create_future()

    async def one(address: str) -> None:
        rid = 0
        link: Link | None = None
        while not done.done():
            rid += 1
            body = {"type": "append", "id": rid,
                    "data": {"action": "change", "key": "bench/election", "value": k}}
            try:
                if link is None or link.closed:
                    link = await Link.open(address, 1.0)
                async with asyncio.timeout(1.0):
                    response = await link.send(rid, msgpack.packb(body))
            except (OSError, LinkLost, TimeoutError):
                link = None
            else:
                if response.get("type") == "result" and response.get("success") and not done.done():
                    done.set_result((address, time.time()))
                    break
            await asyncio.sleep(PROBE_INTERVAL_S)
        if link is not None:
            link.close()

    tasks = [loop.create_task(one(a)) for a in survivors]
    try:
        return await asyncio.wait_for(done, FAILOVER_LIMIT_S)
    except TimeoutError:
        return None, 0.0
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

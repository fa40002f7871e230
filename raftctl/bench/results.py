"""What one load run measured: per-worker results, their merge, and the summary record.

Workers (and, in distributed mode, joiners on other machines) each produce a `WorkerResult`;
`merge` adds them up and `summarize` derives the figures users read. Everything is pure and
wire-safe (``to_wire``: msgpack and JSON maps with str keys), because results cross process
pipes and travel through the cluster's own state machine in distributed mode.

Definitions (README "raftctl bench"):

- a client's *duration*: from the start signal to its last answer;
- *throughput*: acknowledged requests / the longest client duration (the wall time of the run);
- *cumulative rate*: the sum over clients of requests / duration (the seed's figure; it equals
  the throughput when every client runs as long as the others);
- *CPU per 1000 requests*: CPU-seconds over the measured window, divided by requests / 1000.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftctl.bench.histogram import Histogram

PERCENTILES = {"p50": 0.50, "p90": 0.90, "p99": 0.99}


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientResult:
    requests: int
    """Acknowledged requests (errors excluded)."""
    duration: float
    errors: int = 0
    retries: int = 0
    redirects: int = 0

    def to_wire(self) -> list[Any]:
        return [self.requests, self.duration, self.errors, self.retries, self.redirects]

    @classmethod
    def from_wire(cls, data: Sequence[Any]) -> ClientResult:
        requests, duration, errors, retries, redirects = data
        return cls(requests=int(requests), duration=float(duration), errors=int(errors),
                   retries=int(retries), redirects=int(redirects))


@dataclass(slots=True, kw_only=True)
class WorkerResult:
    """One load generator process (or a merge of several)."""

    clients: list[ClientResult]
    latency: Histogram
    series: list[Histogram]
    """Latencies of the answers received in each ``interval`` after the start."""
    interval: float
    cpu_seconds: float | None
    """CPU the generator spent in the measured window (None: unknown)."""
    started: float = 0.0
    """Wall-clock time of the start signal (UNIX seconds)."""
    command_bytes: int = 0
    """Bytes one write adds to the log (the encoded command); 0 for reads."""
    first_error: dict[str, Any] | None = None
    """The first request that failed: its ``code``, ``message`` and ``t`` (seconds after the
    start signal); None if none failed."""

    def to_wire(self) -> dict[str, Any]:
        return {
            "clients": [c.to_wire() for c in self.clients],
            "latency": self.latency.to_wire(),
            "series": [h.to_wire() for h in self.series],
            "interval": self.interval,
            "cpu_seconds": self.cpu_seconds,
            "started": self.started,
            "command_bytes": self.command_bytes,
            "first_error": self.first_error,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> WorkerResult:
        cpu = data.get("cpu_seconds")
        return cls(
            clients=[ClientResult.from_wire(c) for c in data["clients"]],
            latency=Histogram.from_wire(data["latency"]),
            series=[Histogram.from_wire(h) for h in data["series"]],
            interval=float(data["interval"]),
            cpu_seconds=None if cpu is None else float(cpu),
            started=float(data.get("started", 0.0)),
            command_bytes=int(data.get("command_bytes", 0)),
            first_error=data.get("first_error"),
        )


def merge(results: Iterable[WorkerResult]) -> WorkerResult:
    """Add up results: clients concatenated, histograms and series added slot by slot.

    Series are aligned by slot index: every worker starts on the same signal, so slot k
    covers the same seconds everywhere (within the start skew, milliseconds).
    """
    parts = list(results)
    if not parts:
        raise ValueError("nothing to merge")
    intervals = {p.interval for p in parts}
    if len(intervals) != 1:
        raise ValueError(f"results use different series intervals: {sorted(intervals)}")
    latency = Histogram()
    series: list[Histogram] = []
    cpu: float | None = 0.0
    errors = [p.first_error for p in parts if p.first_error is not None]
    for part in parts:
        latency.merge(part.latency)
        for k, h in enumerate(part.series):
            while len(series) <= k:
                series.append(Histogram())
            series[k].merge(h)
        cpu = None if cpu is None or part.cpu_seconds is None else cpu + part.cpu_seconds
    return WorkerResult(
        clients=[c for p in parts for c in p.clients],
        latency=latency,
        series=series,
        interval=parts[0].interval,
        cpu_seconds=cpu,
        started=min(p.started for p in parts),
        command_bytes=max(p.command_bytes for p in parts),
        first_error=min(errors, key=lambda e: e["t"], default=None),
    )


@dataclass(slots=True, kw_only=True)
class Extras:
    """Figures measured outside the workers: by the parent, around the run."""

    cluster_cpu_seconds: float | None = None
    cluster_cpu_by_node: dict[str, float] = field(default_factory=dict)
    parent_cpu_seconds: float | None = 0.0
    leader_changes: int | None = None
    term_changes: int | None = None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _per_1000(cpu: float | None, requests: int) -> float | None:
    if cpu is None or requests == 0:
        return None
    return round(cpu / requests * 1000, 6)


def summarize(merged: WorkerResult, extras: Extras) -> dict[str, Any]:
    """The summary record (``-o json`` prints it, the table shows it)."""
    clients = merged.clients
    requests = sum(c.requests for c in clients)
    durations = [c.duration for c in clients]
    wall = max(durations, default=0.0)
    lat = merged.latency
    first = merged.first_error
    loadgen = merged.cpu_seconds
    if loadgen is not None and extras.parent_cpu_seconds is not None:
        loadgen += extras.parent_cpu_seconds
    return {
        "requests": requests,
        "errors": sum(c.errors for c in clients),
        "retries": sum(c.retries for c in clients),
        "redirects": sum(c.redirects for c in clients),
        "first_error": None if first is None else {"code": first["code"],
                                                   "message": first["message"]},
        "duration_s": round(wall, 6),
        "client_duration_avg_s": round(statistics.fmean(durations), 6) if durations else 0.0,
        "client_duration_stdev_s": round(statistics.pstdev(durations), 6) if durations else 0.0,
        "throughput_rps": round(requests / wall, 1) if wall > 0 else 0.0,
        "cumulative_rps": round(sum(c.requests / c.duration for c in clients if c.duration > 0), 1),
        "avg_request_ms": _ms(lat.mean),
        "latency_ms": {
            **{name: _ms(lat.percentile(q)) for name, q in PERCENTILES.items()},
            "max": _ms(lat.max),
        },
        "log_mb": round(requests * merged.command_bytes / 1e6, 3),
        "cluster_cpu_s": _round(extras.cluster_cpu_seconds),
        "cluster_cpu_by_node": {k: round(v, 3) for k, v in extras.cluster_cpu_by_node.items()},
        "cluster_cpu_s_per_1000": _per_1000(extras.cluster_cpu_seconds, requests),
        "loadgen_cpu_s": _round(loadgen),
        "loadgen_cpu_s_per_1000": _per_1000(loadgen, requests),
        "leader_changes": extras.leader_changes,
        "term_changes": extras.term_changes,
        "series": series_records(merged),
    }


def series_records(merged: WorkerResult) -> list[dict[str, Any]]:
    """Per interval: its end (seconds from the start), requests/s, p50 and p99 latency."""
    out = []
    for k, h in enumerate(merged.series):
        out.append({
            "t": round((k + 1) * merged.interval, 3),
            "rps": round(h.count / merged.interval, 1),
            "p50_ms": _ms(h.percentile(0.5)),
            "p99_ms": _ms(h.percentile(0.99)),
        })
    return out


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or math.isnan(value) else round(value, digits)

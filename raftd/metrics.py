"""Prometheus metrics of one node, served at ``http://[metrics] address/metrics``.

The hot path only bumps plain integers (in ``Server`` and ``Replica``) or observes two
histograms (fsync and request latency); everything else is read when Prometheus scrapes,
by ``NodeCollector`` calling back into the server. The HTTP endpoint runs in
prometheus-client's own daemon thread, so the collector reads only simple attributes that a
concurrent event loop cannot leave half-updated.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from raftd.config import format_address

ROLES = ("follower", "pre_candidate", "candidate", "leader", "learner")
STATS_SECONDS = 10


class MetricsError(Exception):
    """The metrics endpoint cannot be served; ``str(err)`` names ``[metrics] address``.

    Not an OSError, so it is never taken for a failure of the node's own address.
    """


class RateStats:
    """Per-second counts over the last STATS_SECONDS seconds, as the seed's diagnostic shows."""

    def __init__(self) -> None:
        self.series: dict[str, deque[list[int]]] = {
            name: deque(maxlen=STATS_SECONDS) for name in ("reads", "writes", "append")
        }
        self._last: dict[str, int] = {}

    def sample(self, now_s: int, totals: dict[str, int]) -> None:
        for name, total in totals.items():
            previous = self._last.get(name, total)
            self.series[name].append([now_s, total - previous])
            self._last[name] = total

    def as_dict(self) -> dict[str, list[list[int]]]:
        return {name: list(points) for name, points in self.series.items()}


@dataclass(slots=True)
class Sample:
    """What the collector reads at scrape time."""

    role: str
    term: int
    commit_index: int
    applied_index: int
    last_log_index: int
    proposals: int
    committed_entries: int
    append_sent: int
    append_received: int
    dropped: dict[str, int] = field(default_factory=dict)
    requests: dict[tuple[str, str], int] = field(default_factory=dict)
    snapshots: int = 0
    client_rejected: dict[str, int] = field(default_factory=dict)
    client_connections: int = 0


class NodeCollector(Collector):
    def __init__(self, read: Callable[[], Sample]) -> None:
        self.read = read

    def collect(self) -> Iterator[Metric]:
        s = self.read()
        role = GaugeMetricFamily("raft_role", "1 for the role this node plays now", labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1.0 if name == s.role else 0.0)
        yield role
        for name, value, text in (
            ("raft_term", s.term, "Current term"),
            ("raft_commit_index", s.commit_index, "Highest log index known committed"),
            ("raft_applied_index", s.applied_index, "Highest log index applied"),
            ("raft_last_log_index", s.last_log_index, "Last index in the log"),
        ):
            yield GaugeMetricFamily(name, text, value=value)
        for name, value, text in (
            ("raft_proposals", s.proposals, "Entries proposed by this node as leader"),
            ("raft_committed_entries", s.committed_entries, "Entries applied"),
            ("raft_append_entries_sent", s.append_sent, "AppendEntries messages sent"),
            ("raft_append_entries_received", s.append_received,
             "AppendEntries messages received"),
            ("raft_snapshots", s.snapshots, "Snapshots taken"),
        ):
            yield CounterMetricFamily(name, text, value=value)
        dropped = CounterMetricFamily(
            "raft_datagrams_dropped", "Peer datagrams dropped", labels=["reason"]
        )
        for reason, count in sorted(s.dropped.items()):
            dropped.add_metric([reason], count)
        yield dropped
        requests = CounterMetricFamily(
            "raft_client_requests", "Client requests answered", labels=["type", "result"]
        )
        for (kind, res), count in sorted(s.requests.items()):
            requests.add_metric([kind, res], count)
        yield requests
        rejected = CounterMetricFamily(
            "raft_client_rejected", "Client requests and connections refused at the edge "
            "(token, limits)", labels=["reason"]
        )
        for reason, count in sorted(s.client_rejected.items()):
            rejected.add_metric([reason], count)
        yield rejected
        yield GaugeMetricFamily("raft_client_connections", "Open client connections",
                                value=s.client_connections)


class Metrics:
    """The registry of one node and the histograms the runtime observes directly."""

    def __init__(self, read: Callable[[], Sample]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(NodeCollector(read))
        self.fsync_seconds = Histogram(
            "raft_fsync_seconds", "Duration of one WAL fsync (group commit)",
            registry=self.registry,
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0),
        )
        self.request_seconds = Histogram(
            "raft_request_seconds", "Client request latency, arrival to answer",
            ["type"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.snapshot_seconds = Histogram(
            "raft_snapshot_seconds", "Duration of taking one snapshot", registry=self.registry,
        )

    def serve(self, host: str, port: int) -> None:
        """Serve ``/metrics`` on ``host:port``; raise MetricsError if it cannot be bound."""
        try:
            start_http_server(port, addr=host, registry=self.registry)
        except OSError as e:
            raise MetricsError(f"cannot serve metrics on {format_address(host, port)} "
                               f"([metrics] address): {e.strerror or e}") from None

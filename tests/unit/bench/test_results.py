"""Merging worker results and the summary figures derived from them."""

from __future__ import annotations

import pytest

from raftctl.bench.histogram import Histogram
from raftctl.bench.results import ClientResult, Extras, WorkerResult, merge, summarize


def _hist(*values: float) -> Histogram:
    h = Histogram()
    for v in values:
        h.record(v)
    return h


def _worker(clients: list[ClientResult], latencies: list[list[float]], cpu: float | None,
            started: float = 100.0) -> WorkerResult:
    return WorkerResult(clients=clients, latency=_hist(*(v for s in latencies for v in s)),
                        series=[_hist(*s) for s in latencies], interval=1.0, cpu_seconds=cpu,
                        started=started, command_bytes=150)


def test_merge_adds_clients_histograms_and_series_slot_by_slot() -> None:
    a = _worker([ClientResult(requests=3, duration=2.0)], [[0.001, 0.002], [0.003]], 0.5)
    b = _worker([ClientResult(requests=1, duration=1.0, errors=1)], [[0.004]], 0.25, 99.0)
    m = merge([a, b])
    assert [c.requests for c in m.clients] == [3, 1]
    assert m.latency.count == 4 and m.latency.max == 0.004
    assert [h.count for h in m.series] == [3, 1]
    assert m.cpu_seconds == 0.75 and m.started == 99.0


def test_merge_refuses_nothing_and_mixed_intervals() -> None:
    with pytest.raises(ValueError):
        merge([])
    a = _worker([], [], 0.0)
    b = WorkerResult(clients=[], latency=Histogram(), series=[], interval=0.5, cpu_seconds=0.0)
    with pytest.raises(ValueError):
        merge([a, b])


def test_unknown_cpu_stays_unknown() -> None:
    m = merge([_worker([], [], None), _worker([], [], 1.0)])
    assert m.cpu_seconds is None
    assert summarize(m, Extras())["loadgen_cpu_s_per_1000"] is None


def test_summary_figures() -> None:
    clients = [ClientResult(requests=1000, duration=2.0), ClientResult(requests=500, duration=1.0,
                                                                       errors=2, retries=3)]
    m = merge([_worker(clients, [[0.001] * 1000, [0.002] * 500], 0.3)])
    s = summarize(m, Extras(cluster_cpu_seconds=1.5, cluster_cpu_by_node={"a": 1.0, "b": 0.5},
                            parent_cpu_seconds=0.15, leader_changes=0, term_changes=0))
    assert s["requests"] == 1500 and s["errors"] == 2 and s["retries"] == 3
    assert s["duration_s"] == 2.0
    assert s["throughput_rps"] == 750.0
    assert s["cumulative_rps"] == 1000.0  # 500/s + 500/s
    assert s["client_duration_avg_s"] == 1.5 and s["client_duration_stdev_s"] == 0.5
    assert s["cluster_cpu_s_per_1000"] == pytest.approx(1.0)
    assert s["loadgen_cpu_s"] == pytest.approx(0.45)
    assert s["loadgen_cpu_s_per_1000"] == pytest.approx(0.3)
    assert s["log_mb"] == pytest.approx(1500 * 150 / 1e6)
    assert s["latency_ms"]["p50"] == pytest.approx(1.0, rel=0.01)
    assert s["latency_ms"]["max"] == 2.0
    assert [p["rps"] for p in s["series"]] == [1000.0, 500.0]


def test_worker_result_wire_round_trip() -> None:
    w = _worker([ClientResult(requests=2, duration=0.5, redirects=1)], [[0.001, 0.01]], 0.1)
    back = WorkerResult.from_wire(w.to_wire())
    assert back == w

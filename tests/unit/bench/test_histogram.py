"""Histogram percentiles against an exact oracle, merging, and the wire form."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftctl.bench.histogram import (
    RESOLUTION,
    Histogram,
    bucket_of,
    merged,
    percentile,
    share_below,
    value_of,
)

latencies = st.lists(st.floats(min_value=1e-6, max_value=100.0), min_size=1, max_size=300)
quantiles = st.sampled_from([0.0, 0.01, 0.5, 0.9, 0.99, 0.999, 1.0])


def test_percentile_is_nearest_rank() -> None:
    samples = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(samples, 0.5) == 3.0
    assert percentile(samples, 0.2) == 1.0
    assert percentile(samples, 0.21) == 2.0
    assert percentile(samples, 0.99) == 5.0
    assert percentile(samples, 0.0) == 1.0
    assert percentile([], 0.5) == 0.0


def test_share_below_is_strict() -> None:
    assert share_below([79.0, 80.0, 81.0, 100.0], 80) == 0.25
    assert share_below([], 80) == 0.0


@given(latencies, quantiles)
def test_histogram_percentile_within_resolution_of_exact(samples: list[float], q: float) -> None:
    h = Histogram()
    for s in samples:
        h.record(s)
    exact = percentile(samples, q)
    assert h.percentile(q) == pytest.approx(exact, rel=RESOLUTION)
    assert h.min <= h.percentile(q) <= h.max


@given(st.floats(min_value=1e-6, max_value=1e3))
def test_bucket_middle_is_close(value: float) -> None:
    assert value_of(bucket_of(value)) == pytest.approx(value, rel=RESOLUTION)


def test_extremes_sum_and_empty() -> None:
    h = Histogram()
    assert h.percentile(0.99) == 0.0 and h.mean == 0.0
    for v in (0.001, 0.002, 0.010):
        h.record(v)
    assert (h.min, h.max, h.count) == (0.001, 0.010, 3)
    assert h.mean == pytest.approx(0.013 / 3)
    assert h.percentile(1.0) == 0.010
    with pytest.raises(ValueError):
        h.percentile(1.5)


@given(latencies, latencies)
def test_merge_equals_recording_everything_in_one(a: list[float], b: list[float]) -> None:
    ha, hb, both = Histogram(), Histogram(), Histogram()
    for v in a:
        ha.record(v)
        both.record(v)
    for v in b:
        hb.record(v)
        both.record(v)
    m = merged([ha, hb])
    assert m.counts == both.counts and m.count == both.count
    assert (m.min, m.max) == (both.min, both.max)
    assert m.total == pytest.approx(both.total)


def test_wire_round_trip_and_validation() -> None:
    h = Histogram()
    for v in (0.0001, 0.0005, 0.0005, 0.2):
        h.record(v)
    back = Histogram.from_wire(h.to_wire())
    assert back == h
    empty = Histogram.from_wire(Histogram().to_wire())
    assert empty.count == 0 and empty.min == math.inf
    bad = h.to_wire()
    bad["count"] = 99
    with pytest.raises(ValueError):
        Histogram.from_wire(bad)

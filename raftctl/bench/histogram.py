"""Latency histograms that merge by addition, and exact percentiles of small samples.

Why a histogram and not the raw samples: a 64-client run at tens of thousands of requests per
second yields millions of latencies spread over several worker processes (and, in distributed
mode, several machines that push their results through the cluster itself, where a value must
stay small). Log-spaced buckets 1% wide keep every percentile within 1% of the exact figure,
hold a few hundred counts whatever the run length, and merge across workers by adding counts.
``min``, ``max``, ``count`` and ``total`` are kept exactly.

Invariant: ``count == sum(counts.values())``; every recorded value ``v`` lies in bucket
``bucket_of(v)``, and ``value_of(bucket_of(v))`` is within ``RESOLUTION`` of ``v`` (for v >= 1 µs).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

RESOLUTION = 0.01
"""Relative width of a bucket: percentiles are exact to within 1%."""
_SCALE = 1.0 / math.log1p(RESOLUTION)
_FLOOR_US = 1.0
"""Latencies below one microsecond share bucket 0 (nothing on a network is that fast)."""


def bucket_of(seconds: float) -> int:
    """The bucket holding a latency of ``seconds``."""
    micros = seconds * 1e6
    if micros <= _FLOOR_US:
        return 0
    return int(math.log(micros) * _SCALE)


def value_of(bucket: int) -> float:
    """The representative latency (seconds) of ``bucket``: its geometric middle."""
    return math.exp((bucket + 0.5) / _SCALE) / 1e6


@dataclass(slots=True)
class Histogram:
    """Counts of latencies (seconds) per log-spaced bucket, plus exact extremes and sum."""

    counts: dict[int, int] = field(default_factory=dict)
    count: int = 0
    total: float = 0.0
    min: float = math.inf
    max: float = 0.0

    def record(self, seconds: float, bucket: int | None = None) -> None:
        """``bucket``: ``bucket_of(seconds)``, when the caller computed it already (a load
        generator records each latency twice: overall and in its time slot)."""
        b = bucket_of(seconds) if bucket is None else bucket
        self.counts[b] = self.counts.get(b, 0) + 1
        self.count += 1
        self.total += seconds
        if seconds < self.min:
            self.min = seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s samples to this histogram."""
        for b, c in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + c
        self.count += other.count
        self.total += other.total
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The latency at quantile ``q`` (0..1), nearest rank; 0.0 for an empty histogram.

        The answer is the recorded extreme at q = 0 and q = 1, else a bucket's middle clamped
        to [min, max] so that p99 never exceeds the true maximum.
        """
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be within [0, 1], got {q}")
        if self.count == 0:
            return 0.0
        if q == 0.0:
            return self.min
        if q == 1.0:
            return self.max
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return min(max(value_of(b), self.min), self.max)
        return self.max  # unreachable while the invariant holds

    def to_wire(self) -> dict[str, Any]:
        """A msgpack- and JSON-safe form (map keys must be str on the wire: pairs instead)."""
        return {
            "buckets": sorted([b, c] for b, c in self.counts.items()),
            "count": self.count,
            "total": self.total,
            "min": self.min if self.count else 0.0,
            "max": self.max,
        }

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Histogram:
        h = cls({int(b): int(c) for b, c in data["buckets"]}, int(data["count"]),
                float(data["total"]), float(data["min"]), float(data["max"]))
        if h.count == 0:
            h.min = math.inf
        if sum(h.counts.values()) != h.count:
            raise ValueError("histogram counts do not add up to its count")
        return h


def merged(histograms: Iterable[Histogram]) -> Histogram:
    out = Histogram()
    for h in histograms:
        out.merge(h)
    return out


def percentile(samples: Sequence[float], q: float) -> float:
    """Exact nearest-rank percentile of a small sample (election trials); 0.0 when empty."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within [0, 1], got {q}")
    if not samples:
        return 0.0
    ordered = sorted(samples)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def share_below(samples: Sequence[float], limit: float) -> float:
    """Fraction of ``samples`` strictly below ``limit`` (the seed's "87% under 80 ms")."""
    if not samples:
        return 0.0
    return sum(1 for s in samples if s < limit) / len(samples)

"""Benchmarks of a rafty cluster: the engine behind ``raftctl bench`` and tests/perf.

Modules, one concern each: ``histogram`` (mergeable latency histograms, percentiles),
``results`` (per-worker results, merging, the summary record), ``procstat`` (CPU from /proc),
``protocol`` (a lean wire-protocol client), ``workers`` (load generator processes),
``target`` (the cluster under test, leader watch), ``runner`` (one load run), ``election``,
``distributed`` (head and joiners), ``report`` (table, JSON, progress) and ``plot``.
"""

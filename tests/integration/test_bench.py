"""raftctl bench end to end, as a user runs it: real raftctl and raftd processes.

Only the shape and consistency of the records is checked, never a speed: the machine is
shared and its figures are noise here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from raftctl.localcluster import LocalCluster

TIMEOUT = 120


def _raftctl(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "raftctl", *args], cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env={**os.environ, "RAFTCTL_ENDPOINTS": ""},
    )


def _json(proc: subprocess.Popen[str]) -> Any:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, f"exit {proc.returncode}: {err}"
    return json.loads(out)


def _check_load(record: dict[str, Any], *, watched: bool = True) -> None:
    """``watched``: the run polled the members for leader changes (joiners leave it to the
    head)."""
    assert record["requests"] > 0 and record["errors"] == 0
    assert record["throughput_rps"] > 0
    lat = record["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert record["log_mb"] > 0
    assert record["loadgen_cpu_s"] is not None
    assert isinstance(record["leader_changes"], int) == watched
    assert sum(point["rps"] for point in record["series"]) > 0


def test_write_on_a_cluster_it_starts(tmp_path: Path) -> None:
    record = _json(_raftctl("-o", "json", "bench", "write", "--servers", "3", "--duration",
                            "2", "--clients", "4", cwd=tmp_path))
    assert record["benchmark"] == "write" and record["servers"] == 3
    assert len(record["members"]) == 3 and record["leader"] in record["members"]
    assert record["fsync"] is True
    assert record["config"]["clients"] == 4 and record["config"]["duration"] == 2.0
    _check_load(record)
    assert set(record["cluster_cpu_by_node"]) == set(record["members"])
    assert record["cluster_cpu_s_per_1000"] is not None
    for field in ("client_duration_avg_s", "client_duration_stdev_s", "cumulative_rps",
                  "avg_request_ms", "term_changes"):
        assert field in record


def test_election_trials(tmp_path: Path) -> None:
    record = _json(_raftctl("-o", "json", "bench", "election", "--servers", "3", "--trials",
                            "3", cwd=tmp_path))
    assert record["benchmark"] == "election" and record["signal"] == "SIGKILL"
    assert record["trials"] == 3 and record["completed"] == 3
    failover = record["failover_ms"]
    assert failover["count"] == 3 and 0 < failover["p50"] <= failover["max"]
    assert set(failover["share_under"]) == {"250", "400"}
    assert set(record["election_ms"]["share_under"]) == {"50", "80", "100"}
    assert len(record["samples"]["failover_ms"]) == 3
    # The election figures come from parsing the survivors' role-change log lines: a change
    # of that log format would leave them empty without failing the run.
    election = record["election_ms"]
    assert election["count"] > 0 and 0 <= election["p50"] <= election["max"]
    assert len(record["samples"]["election_ms"]) == election["count"]
    assert record["vote_round_ms"]["count"] > 0


@pytest.mark.parametrize("consistency", ["linearizable", "stale"])
def test_read_on_a_running_cluster(cluster: LocalCluster, tmp_path: Path,
                                   consistency: str) -> None:
    record = _json(_raftctl("-e", ",".join(cluster.endpoints), "-o", "json", "bench", "read",
                            "--consistency", consistency, "--duration", "2", "--clients", "2",
                            "--keys", "200", cwd=tmp_path))
    assert record["benchmark"] == "read" and record["config"]["consistency"] == consistency
    assert record["config"]["keys"] == 200 and record["config"]["clients"] == 2
    assert record["leader"] in cluster.endpoints
    assert record["requests"] > 0 and record["errors"] == 0
    assert record["throughput_rps"] > 0 and record["avg_request_ms"] > 0
    lat = record["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert isinstance(record["leader_changes"], int)
    assert sum(point["rps"] for point in record["series"]) > 0


def test_serve_head_with_two_joiners(cluster: LocalCluster, tmp_path: Path) -> None:
    endpoints = ",".join(cluster.endpoints)
    report = tmp_path / "report.json"
    head = _raftctl("-e", endpoints, "-o", "json", "bench", "serve", "--head", "--joiners", "2",
                    "--clients", "2", "--duration", "2", "--wait", "60", "--report",
                    str(report), cwd=tmp_path)
    joiners = [_raftctl("-o", "json", "bench", "join", cluster.endpoints[k], "--wait", "60",
                        cwd=tmp_path) for k in (1, 2)]
    shares = [_json(j) for j in joiners]
    merged = _json(head)
    assert json.loads(report.read_text()) == merged
    assert len(merged["joiners"]) == 2
    assert merged["requests"] == sum(s["requests"] for s in shares)
    _check_load(merged)
    for share in shares:
        _check_load(share, watched=False)
    assert len(merged["latency_ms"]) == 4
    # The head's members run here: their CPU is found from their listening sockets.
    assert set(merged["cluster_cpu_by_node"]) == set(cluster.endpoints)

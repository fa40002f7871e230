"""raftctl bench end to end, as a user runs it: real raftctl and raftd processes.

Only the shape and consistency of the records is checked, never a speed: the machine is
shared and its figures are noise here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftctl import Client
from raftctl.localcluster import LocalCluster
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import (
    DEADLINE,
    STEADY,
    current_leader,
    wait_for_leader,
    wait_until,
)
from tests.unit.security.certs import make_pki

TIMEOUT = 120
TOKEN = "bench-client-token-0123456789abcdef"
LONG_RUN = "120"
"""--duration of runs that must stop long before it: a failure to stop shows as a slow test."""


def _raftctl(*args: str, cwd: Path, token: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "RAFTCTL_ENDPOINTS": ""}
    env.pop("RAFTCTL_TOKEN", None)
    if token is not None:
        env["RAFTCTL_TOKEN"] = token
    return subprocess.Popen(
        [sys.executable, "-m", "raftctl", *args], cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
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


def test_a_secured_cluster_with_its_token_and_tls(make_secure: ClusterFactory,
                                                  tmp_path: Path) -> None:
    """The load generators, the leader watch, the head and a joiner present the token and
    TLS files given as for any verb; without the token nothing runs: unauthorized, exit 1."""
    pki = make_pki(tmp_path / "pki")
    token_file = tmp_path / "client.token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    tls = ["--cacert", str(pki.ca), "--cert", str(pki.client_cert), "--key", str(pki.client_key)]
    cluster = make_secure(3, access={"token": TOKEN, "cacert": str(pki.ca),
                                     "cert": str(pki.client_cert), "key": str(pki.client_key)},
                          security={"client_token_file": str(token_file),
                                    "tls_cert": str(pki.node_cert), "tls_key": str(pki.node_key),
                                    "tls_ca": str(pki.ca)})
    endpoints = ",".join(cluster.endpoints)

    record = _json(_raftctl("-e", endpoints, *tls, "-o", "json", "bench", "write", "--clients",
                            "4", "--entries", "200", cwd=tmp_path, token=TOKEN))
    _check_load(record)
    assert record["requests"] == 200

    report = tmp_path / "report.json"
    head = _raftctl("-e", endpoints, *tls, "-o", "json", "bench", "serve", "--head",
                    "--joiners", "1", "--clients", "2", "--duration", "1", "--wait", "60",
                    "--report", str(report), cwd=tmp_path, token=TOKEN)
    joiner = _raftctl(*tls, "-o", "json", "bench", "join", cluster.endpoints[1], "--wait", "60",
                      cwd=tmp_path, token=TOKEN)
    share = _json(joiner)
    _check_load(share, watched=False)
    merged = _json(head)
    assert merged["requests"] == share["requests"]
    _check_load(merged)

    code, _, err = _failure(_raftctl("-e", endpoints, *tls, "bench", "write", "--clients", "2",
                                     "--duration", LONG_RUN, cwd=tmp_path))
    assert code == 1, err
    assert "unauthorized" in err and "Traceback" not in err


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen[str]) -> Iterator[None]:
    """Kill ``proc`` if the block leaves it running (a failed wait must not leak a run)."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _failure(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of a run expected to fail."""
    with _reaped(proc):
        out, err = proc.communicate(timeout=TIMEOUT)
    return proc.returncode, out, err


def _measuring(cluster: LocalCluster) -> bool:
    """Whether the run has begun its measured writes (the unmeasured first ones go to
    ``bench/open``; measured ones under ``bench/CLIENT/``)."""
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        return bool(client.scan("bench/0/", limit=1).items)


@contextlib.contextmanager
def _measuring_run(cluster: LocalCluster, tmp_path: Path,
                   *args: str) -> Iterator[subprocess.Popen[str]]:
    """``raftctl -o json ARGS`` against ``cluster``, once its measured writes have begun
    (killed if the block leaves it running)."""
    proc = _raftctl("-e", ",".join(cluster.endpoints), "-o", "json", *args, cwd=tmp_path)
    with _reaped(proc):
        wait_until(lambda: _measuring(cluster), "the measured writes")
        yield proc


@pytest.mark.parametrize(("size", "why"), [
    # Over the frame limit: the server answers without an id and closes the connection.
    ("2000000", ("too_large: frame exceeds 1114112 bytes: a value may have up to "
                 "max_entry_bytes (1048576 bytes)")),
    # Within the frame limit, over max_entry_bytes: the server answers the request itself.
    ("1048600", "too_large: a value of 1048600 bytes exceeds max_entry_bytes (1048576)"),
])
def test_a_value_the_cluster_refuses_stops_the_run_at_once(
    cluster: LocalCluster, tmp_path: Path, size: str, why: str
) -> None:
    started = time.monotonic()
    status, out, err = _failure(_raftctl(
        "-e", ",".join(cluster.endpoints), "-o", "json", "bench", "write", "--clients", "2",
        "--size", size, "--duration", LONG_RUN, cwd=tmp_path))
    elapsed = time.monotonic() - started
    assert (status, err, out) == (1, f"Error: every request failed: {why}\n", "")
    # Retrying would never help: no retry loop, no run of the full --duration.
    assert elapsed < float(LONG_RUN) / 2, elapsed


def test_a_refusal_in_the_middle_of_a_run_stops_it(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    # Node 2 accepts smaller values than the others: the run starts on another leader, and
    # its writes are refused once node 2 leads.
    cluster = make_cluster(3, raft=STEADY)
    config = cluster.config_paths[2]
    config.write_text(config.read_text().replace("[raft]\n", "[raft]\nmax_entry_bytes = 1000\n"))
    cluster.start_all()
    if wait_for_leader(cluster) == 2:
        with Client(cluster.endpoints, timeout=DEADLINE) as client:
            client.transfer_leader(cluster.endpoints[0])
        wait_until(lambda: current_leader(cluster) == 0, "node 0 to lead")
    started = time.monotonic()
    with _measuring_run(cluster, tmp_path, "bench", "write", "--clients", "2", "--size",
                        "2000", "--duration", LONG_RUN) as proc:
        with Client(cluster.endpoints, timeout=DEADLINE) as client:
            client.transfer_leader(cluster.endpoints[2])
        status, out, err = _failure(proc)
    elapsed = time.monotonic() - started
    why = "too_large: a value of 2000 bytes exceeds max_entry_bytes (1000)"
    assert (status, err, out) == (1, f"Error: a request failed: {why}\n", "")
    assert elapsed < float(LONG_RUN) / 2, elapsed


def test_a_frozen_cluster_cannot_hold_a_run_past_its_duration(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = make_cluster(3, raft=STEADY)
    cluster.start_all()
    wait_for_leader(cluster)
    duration, timeout = 8.0, 2.0  # long enough that the freeze lands inside the run
    with _measuring_run(cluster, tmp_path, "--timeout", f"{timeout:g}", "bench", "write",
                        "--clients", "2", "--duration", f"{duration:g}") as proc:
        frozen = time.monotonic()
        for i in range(len(cluster)):
            cluster.kill(i, signal.SIGSTOP)  # the fixture's teardown resumes them
        record = _json(proc)
    ended = time.monotonic() - frozen
    # Some writes succeeded before the freeze: the run reports, naming why the rest failed.
    assert record["requests"] > 0 and record["errors"] > 0
    assert record["first_error"] == {
        "code": "timeout", "message": f"no answer within {timeout:g}s after the end of the run"}
    # Each stuck write is cut a timeout after the end; it used to retry for ten timeouts
    # (20 s). The rest is the run's teardown (a last poll of the members, at most 1 s).
    assert ended < duration + timeout + 6, ended


def test_a_joiner_refused_by_the_cluster_fails_the_head_too(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    endpoints = ",".join(cluster.endpoints)
    started = time.monotonic()
    head = _raftctl("-e", endpoints, "bench", "serve", "--head", "--joiners", "1",
                    "--size", "2000000", "--duration", LONG_RUN, "--wait", LONG_RUN,
                    "--report", str(tmp_path / "report.json"), cwd=tmp_path)
    with _reaped(head):
        joiner = _failure(_raftctl("bench", "join", cluster.endpoints[1], "--wait", LONG_RUN,
                                   cwd=tmp_path))
        status, _, err = _failure(head)
    why = ("Error: every request failed: too_large: frame exceeds 1114112 bytes: a value may "
           "have up to max_entry_bytes (1048576 bytes)\n")
    assert joiner == (1, "", why)
    # The joiner failed before it registered: the head learns why instead of waiting --wait.
    assert status == 1 and err.endswith(why), err
    assert time.monotonic() - started < float(LONG_RUN) / 2
    assert not (tmp_path / "report.json").exists()
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        assert client.scan("bench/head/").items == []  # the head cleaned up after itself

"""raftctl bench end to end, as a user runs it: real raftctl and raftd processes.

Only the shape and consistency of the records is checked, never a speed: the machine is
shared and its figures are noise here.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from raftctl import Client
from raftctl.bench import election
from raftctl.bench.procstat import listening_pid
from raftctl.bench.report import emit
from raftctl.bench.runner import BenchError
from raftctl.localcluster import LocalCluster, free_ports
from raftd.wire.client import parse_address
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import (
    DEADLINE,
    STEADY,
    current_leader,
    wait_diagnostic,
    wait_for_leader,
    wait_until,
)
from tests.unit.client.fakenode import FakeNode
from tests.unit.security.certs import make_pki

TIMEOUT = 120
"""Deadline of every wait for a raftctl process to exit."""
TOKEN = "bench-client-token-0123456789abcdef"
LONG_RUN = "3600"
"""--duration (or --wait) of runs that must stop on their own long before it: one that does
not fails the test at the TIMEOUT of the wait for its exit."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _raftctl(*args: str, cwd: Path, token: str | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "RAFTCTL_ENDPOINTS": ""}
    env.pop("RAFTCTL_TOKEN", None)
    if token is not None:
        env["RAFTCTL_TOKEN"] = token
    return subprocess.Popen(
        [sys.executable, "-m", "raftctl", *args], cwd=cwd, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
    )


def _exited(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """stdout and stderr of ``proc`` once it exits by itself; fails the test (and kills it)
    if it is still running after TIMEOUT seconds."""
    try:
        return proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(map(str, proc.args))} still running after {TIMEOUT}s")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _json(proc: subprocess.Popen[str]) -> Any:
    out, err = _exited(proc)
    assert proc.returncode == 0, f"exit {proc.returncode}: {err}"
    return json.loads(out)


def _rendered(record: dict[str, Any], fmt: str, capsys: pytest.CaptureFixture[str]) -> str:
    """``record`` as ``raftctl -o FMT`` prints it (table: rich, plain: tab-separated)."""
    capsys.readouterr()
    table = io.StringIO()
    emit(record, fmt, Console(file=table, width=500, markup=False, emoji=False,
                              highlight=False))
    return table.getvalue() + capsys.readouterr().out


def _rows(text: str) -> dict[str, str]:
    """The label -> text rows of ``-o plain`` output."""
    return dict(line.split("\t", 1) for line in text.splitlines())


def _check_rendering(record: dict[str, Any], capsys: pytest.CaptureFixture[str],
                     expected: dict[str, list[str]]) -> None:
    """The table and plain renderings of a real record: each ``expected`` row (label ->
    pieces of its text) is there, in both."""
    plain = _rows(_rendered(record, "plain", capsys))
    table = _rendered(record, "table", capsys).splitlines()
    for label, pieces in expected.items():
        assert all(piece in plain[label] for piece in pieces), (label, plain[label])
        # The label column is padded to its widest label, then two spaces.
        line = next(line for line in table if line.startswith(label + "  "))
        assert all(piece in line for piece in pieces), (label, line)


def _is_png(path: Path) -> bool:
    return path.read_bytes().startswith(PNG_SIGNATURE)


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


def test_write_on_a_cluster_it_starts(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    picture = tmp_path / "write.png"
    record = _json(_raftctl("-o", "json", "bench", "write", "--servers", "3", "--duration",
                            "2", "--clients", "4", "--plot", str(picture), cwd=tmp_path))
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
    assert _is_png(picture)
    lat = record["latency_ms"]
    _check_rendering(record, capsys, {
        "benchmark": ["write"],
        "cluster": ["3 members, fsync on"],
        "load": ["4 clients x pipeline 1", "100-byte values"],
        "requests": [f"{record['requests']:,} (0 errors"],
        "throughput": [f"{record['throughput_rps']:,.0f} requests/s"],
        "latency": [f"p50 {lat['p50']:.2f}", f"p99 {lat['p99']:.2f}", f"max {lat['max']:.2f}"],
        "cluster CPU": [f"{record['cluster_cpu_s_per_1000']:,.3f} s per 1000", "µs/request"],
        "load generator CPU": [f"{record['loadgen_cpu_s_per_1000']:,.3f} s per 1000"],
        "leader changes": [f"{record['leader_changes']} (term changes"],
    })


@pytest.mark.parametrize(("signal_name", "trials", "flags"), [
    ("SIGKILL", 3, ()),
    ("SIGSTOP", 2, ("--sigstop",)),
], ids=["SIGKILL", "SIGSTOP"])
def test_election_trials(tmp_path: Path, capsys: pytest.CaptureFixture[str], signal_name: str,
                         trials: int, flags: tuple[str, ...]) -> None:
    picture = tmp_path / "election.png"
    record = _json(_raftctl("-o", "json", "bench", "election", "--servers", "3", "--trials",
                            str(trials), *flags, "--plot", str(picture), cwd=tmp_path))
    assert record["benchmark"] == "election" and record["signal"] == signal_name
    assert record["trials"] == trials and record["completed"] == trials
    failover = record["failover_ms"]
    assert failover["count"] == trials and 0 < failover["p50"] <= failover["max"]
    assert set(failover["share_under"]) == {"250", "400"}
    assert set(record["election_ms"]["share_under"]) == {"50", "80", "100"}
    assert len(record["samples"]["failover_ms"]) == trials
    # The election figures come from parsing the survivors' role-change log lines: a change
    # of that log format would leave them empty without failing the run.
    election = record["election_ms"]
    assert election["count"] > 0 and 0 <= election["p50"] <= election["max"]
    assert len(record["samples"]["election_ms"]) == election["count"]
    assert record["vote_round_ms"]["count"] > 0
    assert _is_png(picture)
    _check_rendering(record, capsys, {
        "benchmark": [f"election (3 servers, {signal_name})"],
        "trials": [f"{trials} of {trials} completed"],
        "election": [f"p50 {election['p50']:.1f}", f"p99 {election['p99']:.1f}"],
        "election shares": ["% < 50 ms", "% < 80 ms", "% < 100 ms"],
        "failover": [f"p50 {failover['p50']:.1f}", f"max {failover['max']:.1f} ms"],
        "failover shares": ["% < 250 ms", "% < 400 ms"],
        "winner's rounds": ["pre-vote p50", "vote p50"],
    })


def test_a_cluster_that_never_settles_is_described(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before each trial the election benchmark waits for one agreed leader; when that never
    comes the error says what the members looked like and where their logs are."""
    monkeypatch.setattr(election, "STABLE_LIMIT_S", 2.0)
    with LocalCluster(3, tmp_path) as cluster:
        cluster.start(0)  # a fresh cluster forms only once all its members started
        wait_diagnostic(cluster.endpoints[0])
        with pytest.raises(BenchError) as failed:
            asyncio.run(election._wait_stable(cluster, 1.0))
    message = str(failed.value)
    assert "did not settle within 2s (last seen: " in message, message
    assert f"{cluster.endpoints[1]} unreachable" in message, message
    assert re.search(rf"{re.escape(cluster.endpoints[0])} \w+ term \d+ leader None", message)
    assert str(cluster.log_paths[0]) in message


@pytest.mark.parametrize(("consistency", "spread"), [("linearizable", False), ("stale", True)])
def test_read_on_a_running_cluster(cluster: LocalCluster, tmp_path: Path,
                                   consistency: str, spread: bool) -> None:
    """``spread``: the clients read from every member, not only the leader."""
    record = _json(_raftctl("-e", ",".join(cluster.endpoints), "-o", "json", "bench", "read",
                            "--consistency", consistency, "--duration", "2", "--clients", "3",
                            "--keys", "200", *(["--spread"] if spread else []), cwd=tmp_path))
    assert record["benchmark"] == "read" and record["config"]["consistency"] == consistency
    assert record["config"]["spread"] is spread
    assert record["config"]["keys"] == 200 and record["config"]["clients"] == 3
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


def _first_line(proc: subprocess.Popen[str]) -> str:
    """The first line ``proc`` writes on stdout (waited for with a deadline, never read
    blocking), which must come before it exits."""
    assert proc.stdout is not None
    fd, got = proc.stdout.fileno(), bytearray()

    def line() -> str | None:
        if select.select([fd], [], [], 0)[0]:
            chunk = os.read(fd, 4096)
            assert chunk, f"exit {proc.wait()} before a line: {_exited(proc)[1]}"
            got.extend(chunk)
        return got.decode().splitlines()[0] if b"\n" in got else None

    return wait_until(line, "the first line of output", TIMEOUT)


def _gone(endpoint: str, pid: int) -> bool:
    """Whether nothing listens at ``endpoint`` any more and process ``pid`` has exited."""
    try:
        with socket.create_connection(parse_address(endpoint), timeout=DEADLINE):
            return False
    except ConnectionRefusedError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_serve_hosts_a_cluster_until_interrupted(tmp_path: Path) -> None:
    """``serve --servers 1`` without --head prints the endpoint of the cluster it started and
    keeps it up; a run against it there has --pipeline and the cluster's --no-fsync in its
    report (a real ``-o plain`` one); SIGINT stops it all with exit 0."""
    serve = _raftctl("bench", "serve", "--servers", "1", "--no-fsync", cwd=tmp_path)
    with _reaped(serve):
        endpoint = _first_line(serve)
        pid = listening_pid(parse_address(endpoint)[1])
        assert pid is not None
        assert wait_diagnostic(endpoint)["fsync"] is False
        plain = _raftctl("-e", endpoint, "-o", "plain", "bench", "write", "--duration", "1",
                         "--clients", "2", "--pipeline", "3", cwd=tmp_path)
        out, err = _exited(plain)
        assert plain.returncode == 0, err
        rows = _rows(out)
        assert rows["benchmark"] == "write"
        assert rows["cluster"] == "1 members, fsync off"
        assert rows["load"].startswith("2 clients x pipeline 3, 100-byte values")
        assert rows["requests"].endswith(" (0 errors, 0 retries)")
        for label in ("throughput", "latency", "cluster CPU", "leader changes"):
            assert rows[label] and "unknown" not in rows[label], (label, rows[label])
        assert "p99 " in rows["latency"] and " per 1000 " in rows["cluster CPU"]
        serve.send_signal(signal.SIGINT)
        out, err = _exited(serve)
    assert serve.returncode == 0, err
    assert out == "" and "serving until interrupted" in err and "Traceback" not in err
    wait_until(lambda: _gone(endpoint, pid), f"the served node {endpoint} to be gone")


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
    """Stop ``proc`` if the block leaves it running (a failed wait must not leak a run):
    SIGTERM first, so that it stops the nodes it started, then SIGKILL."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _failure(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of a run expected to fail (by itself, within TIMEOUT)."""
    out, err = _exited(proc)
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
    # Retrying would never help: no retry loop, no run of the full --duration (the wait for
    # the exit would fail first).
    status, out, err = _failure(_raftctl(
        "-e", ",".join(cluster.endpoints), "-o", "json", "bench", "write", "--clients", "2",
        "--size", size, "--duration", LONG_RUN, cwd=tmp_path))
    assert (status, err, out) == (1, f"Error: every request failed: {why}\n", "")


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
    # A --duration the run must not wait out: it stops at the refusal.
    with _measuring_run(cluster, tmp_path, "bench", "write", "--clients", "2", "--size",
                        "2000", "--duration", LONG_RUN) as proc:
        with Client(cluster.endpoints, timeout=DEADLINE) as client:
            client.transfer_leader(cluster.endpoints[2])
        status, out, err = _failure(proc)
    why = "too_large: a value of 2000 bytes exceeds max_entry_bytes (1000)"
    assert (status, err, out) == (1, f"Error: a request failed: {why}\n", "")


def test_a_frozen_cluster_cannot_hold_a_run_past_its_duration(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = make_cluster(3, raft=STEADY)
    cluster.start_all()
    wait_for_leader(cluster)
    clients, timeout = 2, 2.0
    # --duration: long enough that the freeze lands inside the run. --timeout: ten of them
    # (how long a request retries) end after the run's own end plus one.
    with _measuring_run(cluster, tmp_path, "--timeout", f"{timeout:g}", "bench", "write",
                        "--clients", str(clients), "--duration", "8") as proc:
        for i in range(len(cluster)):
            cluster.kill(i, signal.SIGSTOP)  # the fixture's teardown resumes them
        record = _json(proc)
    # Some writes succeeded before the freeze: the run reports, naming why the rest failed.
    assert record["requests"] > 0
    # Each client's stuck write was cut a timeout after the end (so the run ended by itself
    # within the wait for it): that, not a retry giving up after ten timeouts, is the first
    # error, and each cut write counts as one.
    assert record["first_error"] == {
        "code": "timeout", "message": f"no answer within {timeout:g}s after the end of the run"}
    assert record["errors"] >= clients


def _leader_that_never_commits(members: list[str]) -> Callable[[dict[str, Any]], Any]:
    """Answers of a node that says it leads ``members`` (itself first) and answers
    diagnostics, but never a write: a cluster that accepts requests and never commits."""
    me = members[0]

    def answer(request: dict[str, Any]) -> dict[str, Any] | None:
        if request.get("type") != "diagnostic":
            return None
        return {
            "type": "result", "success": True, "status": "leader",
            "persist": {"votedFor": me, "currentTerm": 2},
            "volatile": {"leaderId": me, "cluster": members, "voters": members,
                         "learners": [], "address": me},
            "log": {"commitIndex": 5, "appliedIndex": 5, "lastLogIndex": 5, "lastLogTerm": 2,
                    "firstIndex": 1},
            "stats": {"reads": [], "writes": [], "append": []},
            "catchingUp": False, "matchIndex": {m: 5 for m in members}, "lastContactMs": {},
        }

    return answer


def test_a_run_no_request_of_which_is_answered_names_every_member(tmp_path: Path) -> None:
    """Exit 3, and the message names the endpoints tried: every member, not only -e's."""
    others = [f"127.0.0.1:{port}" for port in free_ports(2)]  # nothing listens there
    node = FakeNode(lambda request: None)
    with node:
        members = [node.address, *others]
        node.answer = _leader_that_never_commits(members)
        status, out, err = _failure(_raftctl("-e", node.address, "--timeout", "0.5", "bench",
                                             "write", "--duration", "1", cwd=tmp_path))
    assert (status, out) == (3, ""), err
    assert err.startswith("Error: every request failed: timeout: ") and err.count("\n") == 1
    tried = err.rpartition("; endpoints tried: ")[2].rstrip("\n").split(", ")
    assert sorted(tried) == sorted(members), err
    assert "append" in node.types()  # the load generators did send writes


def test_a_joiner_refused_by_the_cluster_fails_the_head_too(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    endpoints = ",".join(cluster.endpoints)
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
    # The joiner failed before it registered: the head learns why instead of waiting --wait
    # (which would outlast the wait for its exit).
    assert status == 1 and err.endswith(why), err
    assert not (tmp_path / "report.json").exists()
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        assert client.scan("bench/head/").items == []  # the head cleaned up after itself

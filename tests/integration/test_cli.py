"""raftctl against real nodes: every verb and output format, exit codes and messages, and
``status --watch`` driven in a pseudo-terminal while leadership moves.

Most invocations run the real command in a subprocess, as a user would; a few go through
click's CliRunner (in process, same code) where many small checks would otherwise cost a
Python start-up each.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from raftctl import Client
from raftctl.cli import cli
from raftctl.localcluster import LocalCluster, free_ports
from tests.integration.helpers import (
    DEADLINE,
    current_leader,
    diagnostic,
    freeze,
    leader_diagnostic,
    thaw,
    wait_for_leader,
    wait_until,
)

DESIGN_STATUS_FIELDS = {
    "address", "role", "term", "leader", "commit_index", "applied_index", "last_log_index",
    "reachable",
}


def raftctl(
    endpoints: Sequence[str], *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``raftctl ARGS`` as a user would: a fresh process, endpoints from the environment.

    The client timeout is DEADLINE unless ARGS give ``--timeout``: the 5 s default is short
    for a request that meets an election on a loaded machine."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    env["RAFTCTL_ENDPOINTS"] = ",".join(endpoints)
    env["RAFTCTL_TIMEOUT"] = str(DEADLINE)
    done = subprocess.run(
        [sys.executable, "-m", "raftctl", *args],
        check=False,
        input=input.decode() if input is not None else None,
        capture_output=True,
        text=True,
        env=env,
        timeout=2 * DEADLINE,  # a backstop only: raftctl gives up (exit 3) at its own timeout
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def invoke(endpoints: Sequence[str], *args: str) -> tuple[int, str, str]:
    """The same command in process (CliRunner): (exit status, stdout, stderr); the client
    timeout is DEADLINE too unless ARGS give ``--timeout``."""
    result = CliRunner().invoke(cli, ["-e", ",".join(endpoints), *args], prog_name="raftctl",
                                env={"RAFTCTL_TIMEOUT": str(DEADLINE)})
    assert "Traceback" not in result.output + result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_key_value_verbs_in_every_format(cluster: LocalCluster) -> None:
    eps = cluster.endpoints
    assert raftctl(eps, "set", "cli/greeting", "hello world").stdout == "OK\n"
    done = raftctl(eps, "set", "cli/multi", "-", input=b"line 1\nline 2\n")
    assert done.returncode == 0, done.stderr
    assert raftctl(eps, "set", "--json", "cli/n", '{"a": [1, 2.5, null]}').returncode == 0

    assert raftctl(eps, "get", "cli/greeting").stdout == "hello world\n"
    got = json.loads(raftctl(eps, "-o", "json", "get", "cli/n").stdout)
    assert got["key"] == "cli/n" and got["value"] == {"a": [1, 2.5, None]}
    assert got["revision"] > 0
    assert invoke(eps, "get", "cli/greeting", "--consistency", "stale")[:2] == (0, "hello world\n")
    assert invoke(eps, "-o", "table", "get", "cli/multi")[1] == "line 1\nline 2\n"

    assert raftctl(eps, "list", "cli/").stdout == "cli/greeting\ncli/multi\ncli/n\n"
    listed = json.loads(invoke(eps, "-o", "json", "list", "cli/")[1])
    assert [r["key"] for r in listed] == ["cli/greeting", "cli/multi", "cli/n"]
    assert all(set(r) == {"key", "revision"} for r in listed)
    table = invoke(eps, "-o", "table", "list", "cli/")[1].splitlines()
    assert table[0].split() == ["KEY", "REVISION"] and len(table) == 4
    prefixed = raftctl(eps, "get", "--prefix", "cli/").stdout.splitlines()
    assert prefixed == [
        "cli/greeting\thello world",
        'cli/multi\t"line 1\\nline 2"',
        'cli/n\t{"a": [1, 2.5, null]}',
    ]
    assert json.loads(invoke(eps, "-o", "json", "get", "--prefix", "cli/g")[1]) == [
        {"key": "cli/greeting", "value": "hello world", "revision": listed[0]["revision"]}
    ]
    assert "hello world" in invoke(eps, "-o", "table", "get", "--prefix", "cli/")[1]

    deleted = json.loads(invoke(eps, "-o", "json", "delete", "cli/multi")[1])
    assert deleted == {"action": "delete", "key": "cli/multi"}
    missing = raftctl(eps, "get", "cli/multi")
    assert (missing.returncode, missing.stdout) == (1, "")
    assert missing.stderr == "Error: key not found: cli/multi\n"
    gone = invoke(eps, "delete", "cli/multi")
    assert gone == (1, "", "Error: key not found: cli/multi\n")
    # A key holding a line break is named on one line, as list and get --prefix write it.
    assert invoke(eps, "get", "cli/a\nb") == (1, "", 'Error: key not found: "cli/a\\nb"\n')


def test_list_pages_through_many_keys(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        for i in range(1200):  # more than one page (1000 keys)
            client.set(f"many/{i:04}", i)
    status, out, _ = invoke(cluster.endpoints, "list", "many/")
    assert status == 0 and out.splitlines() == [f"many/{i:04}" for i in range(1200)]


def test_compare_and_set_conditions(cluster: LocalCluster) -> None:
    eps = cluster.endpoints
    raftctl(eps, "set", "cas/k", "v1")
    revision = json.loads(raftctl(eps, "-o", "json", "get", "cas/k").stdout)["revision"]
    stale = raftctl(eps, "set", "cas/k", "v2", "--if-revision", str(revision - 1))
    assert (stale.returncode, stale.stdout) == (1, "")
    assert stale.stderr == f"Error: condition failed: key 'cas/k' has revision {revision}\n"
    done = raftctl(eps, "-o", "json", "set", "cas/k", "v2", "--if-revision", str(revision))
    current = json.loads(done.stdout)["revision"]
    assert done.returncode == 0 and current > revision
    exists = invoke(eps, "set", "cas/k", "v3", "--if-absent")
    assert exists == (1, "", "Error: condition failed: key 'cas/k' exists\n")
    assert invoke(eps, "set", "cas/new", "v", "--if-absent")[0] == 0
    assert invoke(eps, "set", "cas/newer", "v", "--if-revision", "0")[0] == 0
    assert invoke(eps, "delete", "cas/k", "--if-revision", str(revision)) == (
        1, "", f"Error: condition failed: key 'cas/k' has revision {current}\n")
    assert raftctl(eps, "get", "cas/k").stdout == "v2\n"  # neither write nor delete happened


def test_status_and_diagnostic(cluster: LocalCluster) -> None:
    eps = cluster.endpoints

    def agreeing_rows() -> list[dict[str, Any]] | None:
        """Status rows in which one member leads and everyone names it. Leadership may move
        on a loaded machine, even while one survey runs: then ask again."""
        done = raftctl([eps[0]], "-o", "json", "status")  # one endpoint is enough
        rows = json.loads(done.stdout) if done.returncode == 0 else []
        leaders = [r["address"] for r in rows if r["role"] == "leader"]
        if len(leaders) != 1:
            return None
        roles_ok = all(r["role"] == "follower" for r in rows if r["address"] != leaders[0])
        return rows if roles_ok and all(r["leader"] == leaders[0] for r in rows) else None

    rows = wait_until(agreeing_rows, "status rows that agree on one leader")
    assert sorted(r["address"] for r in rows) == sorted(eps)
    for row in rows:
        assert DESIGN_STATUS_FIELDS <= set(row) and row["reachable"] is True
    table = raftctl(eps, "-o", "table", "status").stdout
    assert table.splitlines()[0].split()[:4] == ["ADDRESS", "ROLE", "TERM", "LEADER"]
    plain = invoke(eps, "status")[1].splitlines()
    assert len(plain) == 3 and all(line.split("\t")[9] == "yes" for line in plain)

    def cli_diagnostic(endpoint: str) -> dict[str, Any] | None:
        """``raftctl diagnostic ENDPOINT``, as JSON."""
        done = raftctl(eps, "-o", "json", "diagnostic", endpoint)
        return json.loads(done.stdout) if done.returncode == 0 else None

    # ``diagnostic LEADER`` of the leader resolved just before (it may have moved since).
    index, diag = wait_until(lambda: leader_diagnostic(cluster, ask=cli_diagnostic),
                             "diagnostic LEADER to show a leader")
    leader = eps[index]
    assert set(diag["stats"]) >= {"reads", "writes", "append"}
    for series in diag["stats"].values():  # [UNIX second, count] per second, the last 10
        assert len(series) <= 10 and all(
            type(second) is int and abs(second - time.time()) < 3600 and count >= 0
            for second, count in series), series
    assert set(diag["persist"]) == {"votedFor", "currentTerm"}
    assert {"index", "term", "bytes"} <= set(diag["snapshot"]) and diag["stateHash"]
    assert f"diagnostic of {leader}" in invoke(eps, "-o", "table", "diagnostic", leader)[1]
    assert "log.commitIndex\t" in invoke(eps, "diagnostic")[1]


def test_health(cluster: LocalCluster) -> None:
    eps = cluster.endpoints
    wait_for_leader(cluster)
    table = invoke(eps, "-o", "table", "health")[1].splitlines()
    assert table[0].split() == ["ADDRESS", "HEALTHY", "TOOK", "LEADER", "COMMIT"]
    plain = invoke(eps, "health")[1].splitlines()
    assert sorted(line.split("\t")[0] for line in plain) == sorted(eps)

    def healthy() -> list[dict[str, Any]] | None:
        """Every member healthy and naming the leader the cluster agrees on right after. An
        election during the check (a loaded machine) fails it or moves the leader: ask again."""
        done = raftctl(eps, "-o", "json", "health")
        if done.returncode != 0:
            return None
        checks = json.loads(done.stdout)
        leader = current_leader(cluster)
        if leader is None or any(c["leader"] != eps[leader] for c in checks):
            return None
        return checks

    checks = wait_until(healthy, "a health check of every member naming the leader")
    assert sorted(c["address"] for c in checks) == sorted(eps)
    assert all(c["healthy"] and c["took_ms"] >= 0 for c in checks)


def test_without_quorum_reads_writes_and_health_fail_with_exit_1(cluster: LocalCluster) -> None:
    """Two of three nodes frozen: the last one answers, but no leader can exist."""
    leader = wait_for_leader(cluster)
    alone = (leader + 1) % 3
    others = [i for i in range(3) if i != alone]
    try:
        for i in others:
            freeze(cluster, i)
        eps = [cluster.endpoints[alone]]

        def leaderless() -> bool:
            answer = diagnostic(eps[0])
            return answer is not None and answer["volatile"]["leaderId"] is None

        wait_until(leaderless, "the lone node to know no leader")
        # 5 s: time for the lone node to answer on a loaded machine (1 s may not be), while
        # health waits that long for each frozen member to time out.
        status, out, err = invoke(eps, "--timeout", "5", "set", "k", "v")
        assert (status, out) == (1, "") and "no_leader" in err and err.count("\n") == 1
        status, out, err = invoke(eps, "--timeout", "5", "health")
        # The reason names each member's failure: the lone node knows no leader, the frozen
        # ones do not answer.
        assert status == 1 and err.startswith("Error: 3 of 3 members unhealthy ("), err
        assert f"{eps[0]}: no_leader: no leader is known" in err and "timed out" in err, err
    finally:
        for i in others:
            thaw(cluster, i)


def test_unreachable_cluster_exits_3_naming_the_endpoints() -> None:
    endpoints = [f"127.0.0.1:{port}" for port in free_ports(2)]
    for args in (["get", "k"], ["status"], ["add-node", "127.0.0.1:9"]):
        done = raftctl(endpoints, "--timeout", "0.5", *args)
        assert (done.returncode, done.stdout) == (3, "")
        assert done.stderr.startswith("Error: no node reachable")
        assert done.stderr.count("\n") == 1 and all(e in done.stderr for e in endpoints)


def test_global_options_after_the_verb(cluster: LocalCluster, tmp_path: Path) -> None:
    """-e, -o and --timeout after the verb: the same, winning there; the environment as ever."""
    eps = ",".join(cluster.endpoints)
    dead = f"127.0.0.1:{free_ports(1)[0]}"
    # A generous client timeout from the environment unless a case sets it (a real request
    # may meet an election on a loaded machine); every case below types what it tests.
    clean = {"RAFTCTL_ENDPOINTS": None, "RAFTCTL_TIMEOUT": str(DEADLINE)}

    def run(*args: str, **env: str) -> Result:
        result = CliRunner().invoke(cli, list(args), env={**clean, **env}, prog_name="raftctl")
        assert "Traceback" not in result.output + result.stderr
        return result

    assert run("-e", eps, "set", "cli/after", "v").exit_code == 0
    before = run("-e", eps, "-o", "json", "get", "cli/after")
    after = run("get", "cli/after", "-o", "json", "-e", eps)
    assert (after.exit_code, after.stdout) == (0, before.stdout)
    assert json.loads(after.stdout)["value"] == "v"
    mixed = run("-o", "json", "get", "cli/after", "-e", eps)
    assert (mixed.exit_code, mixed.stdout) == (0, before.stdout)

    # Given on both sides, the value after the verb wins, whichever way round.
    rescued = run("-e", dead, "-o", "json", "--timeout", "0.5", "get", "cli/after", "-e", eps,
                  "-o", "plain", "--timeout", str(DEADLINE))
    assert (rescued.exit_code, rescued.stdout) == (0, "v\n")
    doomed = run("-e", eps, "--timeout", "30", "get", "cli/after", "-e", dead, "--timeout", "0.5")
    assert doomed.exit_code == 3 and dead in doomed.stderr and eps not in doomed.stderr

    # The environment applies as before, and a value after the verb overrides it too.
    assert run("get", "cli/after", RAFTCTL_ENDPOINTS=eps).stdout == "v\n"
    assert run("get", "cli/after", "-e", eps, RAFTCTL_ENDPOINTS=dead).stdout == "v\n"
    timed_out = run("get", "cli/after", "-e", dead, RAFTCTL_ENDPOINTS=eps, RAFTCTL_TIMEOUT="0.5")
    assert timed_out.exit_code == 3 and dead in timed_out.stderr

    # Nested groups take them after the subcommand (and after the group) as well.
    saved = run("snapshot", "save", str(tmp_path / "after.snap"), "-o", "json", "-e", eps)
    assert saved.exit_code == 0, saved.stderr
    assert json.loads(saved.stdout)["file"] == str(tmp_path / "after.snap")
    nested = run("-e", dead, "snapshot", "-e", eps, "save", str(tmp_path / "b.snap"),
                 "--timeout", "10")
    assert nested.exit_code == 0, nested.stderr


def test_bad_arguments_exit_2(cluster: LocalCluster) -> None:
    done = raftctl(cluster.endpoints, "set", "k", "v", "--if-revision", "1", "--if-absent")
    assert (done.returncode, done.stdout) == (2, "")
    assert "exclude each other" in done.stderr
    assert raftctl(cluster.endpoints, "get", "--prefix").returncode == 2


@pytest.mark.parametrize("output", ["json", "plain"])
def test_status_watch_prints_a_block_per_refresh_and_ends_on_sigint(
    cluster: LocalCluster, output: str
) -> None:
    """Without a terminal: ``-o json`` one array per line, ``-o plain`` rows then a blank
    line, each refresh; SIGINT (Ctrl-C) ends it with exit status 0."""
    wait_for_leader(cluster)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    env["RAFTCTL_ENDPOINTS"] = ",".join(cluster.endpoints)
    proc = subprocess.Popen(
        [sys.executable, "-m", "raftctl", "-o", output, "status", "--watch", "0.2"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    blocks: list[list[str]] = []
    try:
        assert proc.stdout is not None and proc.stderr is not None
        lines: list[str] = []
        while len(blocks) < 3:  # a refresh every 0.2 s; pytest-timeout bounds a hang
            line = proc.stdout.readline()
            assert line, f"raftctl ended early: {proc.wait()} {proc.stderr.read()}"
            if output == "json":
                blocks.append([line])
            elif line.strip():
                lines.append(line)
            else:
                blocks.append(lines)
                lines = []
        proc.send_signal(signal.SIGINT)  # our own child
        _, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    for block in blocks:
        if output == "json":
            rows = json.loads(block[0])
            assert sorted(r["address"] for r in rows) == sorted(cluster.endpoints)
            assert all(DESIGN_STATUS_FIELDS <= set(r) for r in rows)
        else:
            assert sorted(line.split("\t")[0] for line in block) == sorted(cluster.endpoints)


# -- status --watch in a pseudo-terminal -----------------------------------------------------------

_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


class Terminal:
    """A process on the slave side of a pty this test reads, as a terminal would display it."""

    def __init__(self, argv: Sequence[str], env: dict[str, str]) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: a terminal of 140x50, then raftctl
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 140, 0, 0))
            os.execve(argv[0], list(argv), env)
        self.pid, self.fd = pid, fd
        self.raw = b""
        self.status: int | None = None

    @property
    def text(self) -> str:
        return _ESCAPES.sub("", self.raw.decode(errors="replace"))

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if ready:
            try:
                self.raw += os.read(self.fd, 65536)
            except OSError:  # EIO: the child closed its side
                pass

    def wait_for(self, pattern: str, what: str, since: int | None = None) -> str:
        """Read until ``pattern`` (a regex) appears after offset ``since`` of ``text`` (None:
        the current end); returns the match."""
        start = len(self.text) if since is None else since
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text[start:])
            if found:
                return found.group(0)
            self.pump(0.1)
        raise AssertionError(f"no {what} on screen; it shows:\n{self.text[-3000:]}")

    def ctrl_c(self) -> int:
        """Type Ctrl-C; returns the exit status once the process ends."""
        os.write(self.fd, b"\x03")
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = status
                self.pump(0.1)
                return os.waitstatus_to_exitcode(status)
            self.pump(0.1)
        raise AssertionError("raftctl did not exit after Ctrl-C")

    def close(self) -> None:
        if self.status is None:
            os.kill(self.pid, signal.SIGKILL)  # our own child, started above
            os.waitpid(self.pid, 0)
        os.close(self.fd)


@pytest.fixture
def watch(cluster: LocalCluster) -> Iterator[Terminal]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAFTCTL_", "NO_COLOR"))}
    env.update(RAFTCTL_ENDPOINTS=",".join(cluster.endpoints), TERM="xterm-256color",
               COLUMNS="140", LINES="50")
    terminal = Terminal([sys.executable, "-m", "raftctl", "status", "--watch", "0.3"], env)
    try:
        yield terminal
    finally:
        terminal.close()


def test_status_watch_redraws_and_highlights_changes(
    cluster: LocalCluster, watch: Terminal
) -> None:
    members = "|".join(map(re.escape, cluster.endpoints))
    wait_for_leader(cluster)
    watch.wait_for(rf"(?:{members}) +leader", "first frame with a leader")
    assert "Every 0.3s: raftctl status" in watch.text

    before, since = len(watch.raw), len(watch.text)
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        # A named target: the client retries a transfer that an election interrupted.
        leader = cluster.endpoints[wait_for_leader(cluster)]
        new = client.transfer_leader(next(e for e in cluster.endpoints if e != leader))
    # "was" names whoever the last frame showed leading (on a loaded machine, not always the
    # leader resolved above), or none: a frame that caught the target campaigning shows no
    # leader in the top term, and the change reads "no leader (was A)", "new leader B (was none)".
    was = "|".join(map(re.escape, [e for e in cluster.endpoints if e != new] + ["none"]))
    watch.wait_for(rf"new leader {re.escape(new)} \(was (?:{was})\)", "leader change", since)
    # The term bump and the new leader's row are in that frame (or one before it).
    watch.wait_for(r"term \d+ -> \d+", "term bump", since)
    watch.wait_for(rf"{re.escape(new)} +leader", "a frame with the new leader", since)
    # The frame that saw the change draws the changed cells in reverse video (SGR 7).
    drawn = watch.raw[before:].decode(errors="replace")
    assert re.search(r"\x1b\[(?:\d+;)*7(?:;\d+)*m *leader", drawn), drawn[-2000:]

    follower = next(i for i, e in enumerate(cluster.endpoints) if e != new)
    freeze(cluster, follower)
    try:
        watch.wait_for(
            rf"{re.escape(cluster.endpoints[follower])} unreachable: timed out",
            "the frozen member reported unreachable",
        )
    finally:
        thaw(cluster, follower)
    watch.wait_for(rf"{re.escape(cluster.endpoints[follower])} reachable again", "its return")

    assert watch.ctrl_c() == 0
    assert "Traceback" not in watch.text and "Aborted" not in watch.text

"""raftctl as a real process: stdin closed, Ctrl-C during a request, stdout a closed pipe.

These involve signals, descriptors and pipes, so each runs ``python -m raftctl`` in its own
process, against a silent socket or one real ``raftd`` node.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftctl import Client
from raftctl.exitcodes import ExitCode
from raftctl.localcluster import LocalCluster, free_ports
from raftd.wire.client import MAX_KEY_BYTES
from tests.integration.helpers import DEADLINE, wait_until

RAFTCTL = [sys.executable, "-m", "raftctl"]
PIPE_KEYS = 200  # 200 keys of 4 KB: far more than a pipe holds, so raftctl is still writing


def refused() -> str:
    return f"127.0.0.1:{free_ports(1)[0]}"


def test_set_with_stdin_closed_is_a_usage_error() -> None:
    # `raftctl set k - <&-`: Python starts with sys.stdin None.
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *RAFTCTL, "-e", refused(), "set", "k", "-"],
        capture_output=True, text=True, timeout=DEADLINE, check=False,
    )
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert done.stderr.splitlines()[-1] == (
        "Error: Invalid value for 'VALUE': '-' reads stdin, which is closed"
    )


def test_set_with_unreadable_stdin_is_a_usage_error(tmp_path: Path) -> None:
    with open(tmp_path / "out", "wb") as write_only:  # `raftctl set k - 0>file`
        done = subprocess.run(
            [*RAFTCTL, "-e", refused(), "set", "k", "-"], stdin=write_only,
            capture_output=True, text=True, timeout=DEADLINE, check=False,
        )
    assert done.returncode == ExitCode.USAGE, done.stderr
    assert "Traceback" not in done.stderr
    assert "Invalid value for 'VALUE': cannot read stdin" in done.stderr


@pytest.fixture
def silent() -> Iterator[socket.socket]:
    """A listening socket that accepts connections and never answers."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(DEADLINE)
        yield server


def interrupt_mid_request(server: socket.socket, *args: str) -> subprocess.CompletedProcess[str]:
    """Run raftctl against `server`, press Ctrl-C once its request is out, and wait."""
    endpoint = f"127.0.0.1:{server.getsockname()[1]}"
    proc = subprocess.Popen(
        [*RAFTCTL, "-e", endpoint, "--timeout", str(DEADLINE), *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        conn, _ = server.accept()
        with conn:
            conn.settimeout(DEADLINE)
            assert conn.recv(1), "raftctl connected but sent no request"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.parametrize(
    "args",
    [["get", "k"], ["set", "k", "v"], ["list"], ["status"], ["health"], ["diagnostic"]],
    ids=" ".join,
)
def test_ctrl_c_during_a_request_exits_130(silent: socket.socket, args: list[str]) -> None:
    done = interrupt_mid_request(silent, *args)
    assert (done.returncode, done.stdout, done.stderr) == (130, "", "Interrupted\n")


def test_ctrl_c_still_ends_a_status_watch_with_0(silent: socket.socket) -> None:
    done = interrupt_mid_request(silent, "status", "--watch", "0.2", "-o", "json")
    assert done.returncode == 0, done.stderr  # (a slow machine may show a timed-out refresh)
    assert "Interrupted" not in done.stderr and "Traceback" not in done.stderr


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real node holding PIPE_KEYS long keys."""
    with LocalCluster(1, tmp_path_factory.mktemp("node"), fsync=False) as cluster:
        cluster.start_all()
        cluster.wait_for_leader(timeout=DEADLINE)
        with Client(cluster.endpoints, timeout=DEADLINE) as client:
            for i in range(PIPE_KEYS):
                client.set(f"{i:04d}".ljust(4000, "k"), i)
        yield cluster.endpoints[0]


# A write that fails ends raftctl with 141. One big write (a whole table or JSON document) that
# the reader cuts short counts as done for Python (the short count is dropped): exit 0.
PIPE_CLOSED_OR_CUT = {ExitCode.PIPE_CLOSED, ExitCode.OK}


@pytest.mark.parametrize(
    "args,statuses",
    [
        (["list"], {ExitCode.PIPE_CLOSED}),
        (["get", "--prefix", ""], {ExitCode.PIPE_CLOSED}),
        (["status", "--watch", "0.1"], {ExitCode.PIPE_CLOSED}),  # table frames (rich)
        (["status", "--watch", "0.1", "-o", "json"], {ExitCode.PIPE_CLOSED}),
        (["list", "-o", "table"], PIPE_CLOSED_OR_CUT),
        (["list", "-o", "json"], PIPE_CLOSED_OR_CUT),
    ],
    ids=lambda arg: " ".join(arg) if isinstance(arg, list) else "",
)
def test_a_closed_stdout_pipe_ends_quietly(
    node: str, args: list[str], statuses: set[ExitCode]
) -> None:
    # `raftctl list | head -1`: read one line, then close the pipe while raftctl writes.
    proc = subprocess.Popen(
        [*RAFTCTL, "-e", node, "--timeout", str(DEADLINE), *args],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    with proc.stderr:
        try:
            assert proc.stdout.readline()
            proc.stdout.close()
            assert proc.wait(timeout=DEADLINE) in statuses
            assert proc.stderr.read() == b""  # no "Error", no BrokenPipe warning at exit
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_long_keys_are_checked_before_any_request(node: str) -> None:
    # The server's own limit, named by raftctl as a usage error (not bad_request, exit 1).
    at_limit, over = "k" * MAX_KEY_BYTES, "é" * (MAX_KEY_BYTES // 2 + 1)
    ok = subprocess.run([*RAFTCTL, "-e", node, "set", at_limit, "v"],
                        capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert (ok.returncode, ok.stdout) == (0, "OK\n"), ok.stderr
    too_long = subprocess.run([*RAFTCTL, "-e", node, "set", over, "v"],
                              capture_output=True, text=True, timeout=DEADLINE, check=False)
    assert too_long.returncode == ExitCode.USAGE
    assert too_long.stderr.splitlines()[-1] == (
        f"Error: Invalid value for 'KEY': a key is at most {MAX_KEY_BYTES} UTF-8 bytes, "
        f"not {MAX_KEY_BYTES + 2}"
    )


def test_ctrl_c_stops_a_benchmark_and_its_workers_quietly(node: str) -> None:
    """Ctrl-C reaches the terminal's whole process group, load generators included: one
    "Interrupted" and exit 130, no traceback from the workers or their pipes."""
    proc = subprocess.Popen(
        [*RAFTCTL, "-e", node, "bench", "write", "--duration", "60", "--clients", "4",
         "--workers", "2", "--keys", "8"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own group, which the "terminal" interrupts as a whole
    )
    try:
        with Client([node], timeout=DEADLINE) as client:
            def loaded() -> bool:
                if client.get("bench/0/0") is not None:  # the workers are writing
                    return True
                assert proc.poll() is None, "no load"
                return False

            wait_until(loaded, "the workers' first write (no load)")
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=DEADLINE)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert (proc.returncode, err) == (130, "Interrupted\n"), err


def _children(pid: int) -> set[int]:
    """The PIDs of ``pid``'s children (its threads' too), from /proc."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(c) for c in (task / "children").read_text().split()}
    return found


def test_sigterm_stops_the_nodes_a_benchmark_started(tmp_path: Path) -> None:
    """``timeout 60 raftctl bench write --servers 1`` must not leave its node running: SIGTERM
    unwinds like Ctrl-C, stopping the local cluster, and exits 143 (128 + SIGTERM)."""
    proc = subprocess.Popen(
        [*RAFTCTL, "bench", "write", "--servers", "1", "--duration", "3600", "--clients", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=tmp_path, start_new_session=True)
    try:
        def node_started() -> set[int] | None:
            assert proc.poll() is None, proc.communicate()
            nodes = {c for c in _children(proc.pid)
                     if b"raftd" in Path(f"/proc/{c}/cmdline").read_bytes()}
            return nodes or None

        nodes = wait_until(node_started, "the benchmark's node")
        proc.send_signal(signal.SIGTERM)  # to raftctl only, not its process group
        _, err = proc.communicate(timeout=DEADLINE)
        # Before the cleanup below kills the group: raftctl must have stopped and reaped them.
        outlived = [pid for pid in nodes if Path(f"/proc/{pid}").exists()]
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever of the group is left
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err, err
    assert outlived == [], f"nodes {outlived} outlived raftctl"

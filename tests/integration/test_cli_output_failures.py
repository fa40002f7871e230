"""raftctl against real nodes when its output cannot be written, and output scripts can trust.

stdout a full device (``> /dev/full``) or closed (``>&-``): one line on stderr, exit status 1,
never a traceback, and the command itself still ran (a ``set`` is applied). ``-o json`` is
always strict JSON, even for floats JSON has no number for; keys in plain output are one
unambiguous cell each. Each command is a fresh ``python -m raftctl`` process.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from raftctl import Client
from raftctl.exitcodes import ExitCode
from raftctl.localcluster import LocalCluster
from tests.integration.helpers import DEADLINE
from tests.unit.cli.readers import read_key, strict_json

FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not FULL.exists(), reason="no /dev/full here")


def raftctl(
    endpoints: Sequence[str], *args: str, stdout: int | IO[Any] = subprocess.PIPE,
    close_stdout: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``raftctl ARGS`` in a fresh process; ``close_stdout``: started with ``>&-``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    env["RAFTCTL_ENDPOINTS"] = ",".join(endpoints)
    env["RAFTCTL_TIMEOUT"] = str(DEADLINE)
    command = [sys.executable, "-m", "raftctl", *args]
    if close_stdout:
        command = ["sh", "-c", 'exec "$@" >&-', "sh", *command]
    return subprocess.run(
        command, stdout=stdout, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=env, timeout=2 * DEADLINE, check=False,
    )


OUTPUTS = [
    ["get", "out/k"],
    ["-o", "json", "get", "out/k"],
    ["list"],
    ["-o", "table", "list"],
    ["get", "--prefix", "out/"],
    ["-o", "json", "status"],
    ["-o", "table", "status"],
    ["diagnostic"],
    ["status", "--watch", "0.2", "-o", "json"],
    ["status", "--watch", "0.2", "-o", "table"],  # rich frames, one after another
]


@needs_dev_full
@pytest.mark.parametrize("args", OUTPUTS, ids=" ".join)
def test_a_full_stdout_is_one_line_and_exit_1(cluster: LocalCluster, args: list[str]) -> None:
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("out/k", "v")
    with FULL.open("w") as full:
        done = raftctl(cluster.endpoints, *args, stdout=full)
    # One line: no traceback, no "Exception ignored" from Python flushing stdout at exit.
    assert (done.returncode, done.stderr) == (
        ExitCode.FAILED, "Error: cannot write the output: No space left on device\n"
    )


@needs_dev_full
def test_a_set_into_a_full_stdout_is_still_applied(cluster: LocalCluster) -> None:
    with FULL.open("w") as full:
        done = raftctl(cluster.endpoints, "set", "out/full", "1", stdout=full)
    assert (done.returncode, done.stderr) == (
        ExitCode.FAILED, "Error: cannot write the output: No space left on device\n"
    )
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        assert client.get("out/full") == "1"


@pytest.mark.parametrize(
    "args", [["get", "out/k"], ["-o", "table", "list"], ["-o", "json", "status"]], ids=" ".join
)
def test_a_closed_stdout_is_one_line_and_exit_1(cluster: LocalCluster, args: list[str]) -> None:
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("out/k", "v")
    done = raftctl(cluster.endpoints, *args, close_stdout=True)
    assert (done.returncode, done.stderr) == (
        ExitCode.FAILED, "Error: cannot write the output: Bad file descriptor\n"
    )


def test_with_stdout_closed_the_command_still_runs(cluster: LocalCluster) -> None:
    # Like `echo hi >&-`: the work is done, only its output fails.
    done = raftctl(cluster.endpoints, "-o", "plain", "set", "out/closed", "1", close_stdout=True)
    assert (done.returncode, done.stderr) == (
        ExitCode.FAILED, "Error: cannot write the output: Bad file descriptor\n"
    )
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        assert client.get("out/closed") == "1"
    # A command that prints nothing on stdout fails as ever, with its own message.
    missing = raftctl(cluster.endpoints, "get", "out/missing", close_stdout=True)
    assert (missing.returncode, missing.stderr) == (
        ExitCode.FAILED, "Error: key not found: out/missing\n"
    )


def test_json_output_of_non_finite_floats_is_strict_json(cluster: LocalCluster) -> None:
    # The Python API stores any float; JSON has no NaN or infinities.
    stored = {
        "nf/inf": math.inf, "nf/minus": -math.inf, "nf/nan": math.nan,
        "nf/nested": {"xs": [1.5, math.nan]},
    }
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        for key, value in stored.items():
            client.set(key, value)
    one = raftctl(cluster.endpoints, "-o", "json", "get", "nf/inf")
    assert one.returncode == 0, one.stderr
    assert strict_json(one.stdout)["value"] == {"float": "Infinity"}
    listed = raftctl(cluster.endpoints, "-o", "json", "get", "--prefix", "nf/")
    assert {r["key"]: r["value"] for r in strict_json(listed.stdout)} == {
        "nf/inf": {"float": "Infinity"},
        "nf/minus": {"float": "-Infinity"},
        "nf/nan": {"float": "NaN"},
        "nf/nested": {"xs": [1.5, {"float": "NaN"}]},
    }
    # Plain output prints a value that is not a string as JSON: strict JSON too.
    assert strict_json(raftctl(cluster.endpoints, "get", "nf/nan").stdout) == {"float": "NaN"}


def test_set_json_refuses_nan_and_keeps_the_key(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("nf/kept", 1.0)
        for value in ("NaN", "1e400", "[-Infinity]"):
            done = raftctl(cluster.endpoints, "set", "--json", "nf/kept", value)
            assert done.returncode == ExitCode.USAGE, done.stderr
            assert "Traceback" not in done.stderr
            assert client.get("nf/kept") == 1.0
        # Finite numbers at the edges still go in: tiny ones round to 0.
        for value in ("1e-400", "-1.7976931348623157e308"):
            done = raftctl(cluster.endpoints, "set", "--json", "nf/kept", "--", value)
            assert done.returncode == 0, done.stderr
            assert client.get("nf/kept") == float(value)


KEYS = [
    "esc/plain",
    "esc/a\nb",
    "esc/c\td",
    "esc/e\x1b[31mf",
    'esc/"g"',
    "esc/h\\nb",  # a backslash and an n: printable, so as it is
    "esc/é\u200bz",
]


def test_keys_are_unambiguous_in_plain_output(cluster: LocalCluster) -> None:
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        for i, key in enumerate(KEYS):
            client.set(key, f"v{i}\tx" if i % 2 else f"v{i}")
    in_order = sorted(KEYS)

    listed = raftctl(cluster.endpoints, "list", "esc/").stdout.splitlines()
    assert [read_key(line) for line in listed] == in_order
    assert "esc/plain" in listed and "esc/h\\nb" in listed  # ordinary keys as they are

    rows = [line.split("\t") for line in
            raftctl(cluster.endpoints, "get", "--prefix", "esc/").stdout.splitlines()]
    assert all(len(row) == 2 for row in rows)  # tabs and line breaks are all escaped
    assert [read_key(key) for key, _ in rows] == in_order
    assert rows[in_order.index("esc/a\nb")] == ['"esc/a\\nb"', '"v1\\tx"']
    assert rows[in_order.index("esc/plain")] == ["esc/plain", "v0"]

    table = raftctl(cluster.endpoints, "-o", "table", "list", "esc/").stdout.splitlines()
    assert len(table) == 1 + len(KEYS)  # a header, then one line per key


def test_plain_values_keep_escape_sequences(cluster: LocalCluster) -> None:
    # The value is the data: into a pipe, click would have stripped the colour codes.
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("esc/value", "\x1b[31mred\x1b[0m")
    assert raftctl(cluster.endpoints, "get", "esc/value").stdout == "\x1b[31mred\x1b[0m\n"


@needs_dev_full
@pytest.mark.parametrize("args", [["--help"], ["--version"], ["get", "--help"]], ids=" ".join)
def test_help_into_a_full_stdout_is_one_line_and_exit_1(args: list[str]) -> None:
    """click prints these before any command runs: the entry point reports them the same."""
    with open(FULL, "w") as full:
        done = raftctl(["127.0.0.1:1"], *args, stdout=full)
    assert (done.returncode, done.stderr) == (
        1, "Error: cannot write the output: No space left on device\n")

"""``raftctl fl demo`` as a user runs it: one real process, which starts 3 raftd nodes and 2
participant processes of its own, trains 3 rounds and SIGKILLs the aggregator after round 1.

The output is checked line by line: a row per round, in order; the SIGKILL, then another node
taking over; the closing line next to centralized training. The demo runs in its own process
group (everything in it was started by this test); if it outlives its deadline it gets SIGINT
(its context managers stop what it started), then the group gets SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numpy", reason="needs the rafty[federated] extra")
pytest.importorskip("sklearn", reason="needs the rafty[federated] extra")
pytest.importorskip("cryptography", reason="needs the rafty[federated] extra")

ROUNDS = 3
DEADLINE = 120.0
"""The demo takes ~10 s on 2 cores; its own deadline for the rounds is 60 s + 10 s a round."""
ENDPOINT = r"127\.0\.0\.1:\d+"
ROW = re.compile(rf"^ +(\d+)  ({ENDPOINT}) +(\d+) +(\d+) +(\d\.\d{{4}}) +\d+\.\d\ds$")
KILL = re.compile(rf"^==> SIGKILL the aggregator ({ENDPOINT}) in round (\d+)$")
TAKEOVER = re.compile(rf"^ +({ENDPOINT}) took over as aggregator \d+\.\d\ds after the kill; "
                      r"training goes on; restarting the killed node$")
SHARES = re.compile(rf"^rounds aggregated per node: {ENDPOINT} \d+(, {ENDPOINT} \d+)*$")
CLOSING = re.compile(r"^federated accuracy (\d\.\d{4}) +centralized \(all shards in one "
                     r"place\) (\d\.\d{4})$")


def _run_demo(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the demo makes its temp dir in here
    proc = subprocess.Popen([sys.executable, "-m", "raftctl", "fl", "demo", *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path, env=env, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        with contextlib.suppress(ProcessLookupError):  # none left: the demo stopped them
            os.killpg(proc.pid, signal.SIGKILL)  # the nodes and participants it started
        proc.communicate()
        pytest.fail(f"raftctl fl demo still running after {DEADLINE:g}s\n"
                    f"stdout:\n{out}\nstderr:\n{err}")
    return proc.returncode, out, err


def test_the_demo_trains_survives_the_aggregators_kill_and_compares_with_centralized(
    tmp_path: Path,
) -> None:
    code, out, err = _run_demo(tmp_path, "--servers", "3", "--participants", "2",
                               "--rounds", str(ROUNDS))
    report = f"exit {code}\nstdout:\n{out}\nstderr:\n{err}"
    assert code == 0, report
    lines = out.splitlines()
    assert re.fullmatch(r"==> 3 raftd nodes, 2 participants \(IID shards of \d+, \d+ digits\), "
                        rf"{ROUNDS} rounds of softmax regression", lines[0]), report
    assert lines[1].split() == ["ROUND", "AGGREGATOR", "TERM", "UPDATES", "ACCURACY", "ROUND",
                                "TIME"], report

    rows = [(i, m) for i, line in enumerate(lines) if (m := ROW.match(line))]
    assert [int(m[1]) for _, m in rows] == list(range(1, ROUNDS + 1)), report
    for _, row in rows:
        assert 1 <= int(row[4]) <= 2, report  # updates: min_updates, or fewer at the timeout

    kills = [(i, m) for i, line in enumerate(lines) if (m := KILL.match(line))]
    takeovers = [(i, m) for i, line in enumerate(lines) if (m := TAKEOVER.match(line))]
    assert len(kills) == 1 and len(takeovers) == 1, report
    (kill_at, kill), (takeover_at, takeover) = kills[0], takeovers[0]
    assert kill_at < takeover_at and takeover[1] != kill[1], report
    assert 2 <= int(kill[2]) <= ROUNDS, report  # killed once round 1 was committed
    # Every line is accounted for: the rows, the kill, the takeover, a blank, then the end.
    assert len(lines) == 2 + ROUNDS + 2 + 3, report
    assert lines[-3] == "" and SHARES.match(lines[-2]), report

    closing = CLOSING.match(lines[-1])
    assert closing, report
    federated, centralized = float(closing[1]), float(closing[2])
    assert closing[1] == rows[-1][1][5], report  # the last row tests the final model too
    assert 0.5 < federated <= 1 and 0.5 < centralized <= 1, report

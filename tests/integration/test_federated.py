"""Federated learning on real processes: 3 raftd nodes, 4 ``raftctl fl participate`` processes.

One run checks the issue's promises together (each start costs seconds): IID shards reach,
by round 10, a test accuracy within 3 points of the same model trained centrally; the
aggregator SIGKILLed mid-round is replaced and training goes on, the round number never goes
back and no committed round is lost; with a small ``rotate_after_s`` leadership rotates at
least twice. A participant also ends, with its exit status, when no node answers (3) or the
cluster refuses it for good (1). Every wait has a deadline; nothing asserts a duration.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("numpy", reason="needs the rafty[federated] extra")
pytest.importorskip("sklearn", reason="needs the rafty[federated] extra")
pytest.importorskip("cryptography", reason="needs the rafty[federated] extra")

from raftctl.errors import BadRequest
from raftctl.fl.demo import FederatedRun
from raftctl.localcluster import free_ports
from raftd.federated.coordinator import MAX_STATUS_ROUNDS
from raftd.federated.data import write_split
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import wait_for_leader

ROUNDS = 20
"""Participants train this far; round 10 is judged on accuracy, the rest gives the rotation
and the crash room to happen."""
JUDGED_ROUND = 10
KILL_AFTER_ROUND = 3
DEADLINE = 90.0
ROTATION = re.compile(r"rotating: handing leadership to (\S+)")


def _tails(run: FederatedRun) -> str:
    paths = [*run.cluster.log_paths, *run.participant_logs]
    return "\n".join(f"--- {p}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:])
                     for p in paths if p.exists())


def _until(run: FederatedRun, what: str, check: Any, deadline: float) -> dict[str, Any]:
    """Follow the status (long polls) until ``check(status)`` holds; fail at the deadline."""
    st = run.status()
    while not check(st):
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{_tails(run)}"
        st = run.next_change(st)
    return st


def test_federated_training_survives_the_aggregator_and_rotates(tmp_path: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    with FederatedRun(tmp_path, servers=3, participants=4, rounds=ROUNDS, rotate_after_s=0.3,
                      min_updates=4, round_timeout_s=5.0, fsync=True) as run:
        run.start()

        # Mid-round: the aggregator has committed round KILL_AFTER_ROUND and holds the next.
        st = _until(run, f"round {KILL_AFTER_ROUND}",
                    lambda s: s["round"] >= KILL_AFTER_ROUND and run.aggregator_index(s)
                    is not None, deadline)
        victim = run.aggregator_index(st)
        assert victim is not None
        killed_term, killed_round = st["aggregator"]["term"], st["round"]
        run.cluster.kill(victim)

        after = _until(run, "a new aggregator", lambda s: s["aggregator"]["term"] > killed_term
                       and s["aggregator"]["node"] != run.cluster.endpoints[victim], deadline)
        assert after["round"] >= killed_round, "a committed round was lost with the aggregator"

        _until(run, f"round {ROUNDS}", lambda s: s["round"] >= ROUNDS, deadline)
        assert run.wait_participants(max(1.0, deadline - time.monotonic())) == [0] * 4, \
            _tails(run)
        final = run.status()

        seen = run.seen
        assert seen.rounds_seen == sorted(seen.rounds_seen), "the round number went back"
        # No committed round lost: one record per round, each from the aggregator of its term.
        assert sorted(seen.records) == list(range(ROUNDS + 1)), sorted(seen.records)
        assert all(seen.records[r]["updates"] >= 1 for r in range(1, ROUNDS + 1))
        assert sum(final["aggregations"].values()) == ROUNDS
        terms = [seen.records[r]["term"] for r in range(1, ROUNDS + 1)]
        assert terms == sorted(terms)
        assert any(seen.records[r]["node"] != run.cluster.endpoints[victim]
                   for r in range(killed_round + 1, ROUNDS + 1))

        # Rotation: leaders handed over by themselves, at least twice.
        rotations = [m for p in run.cluster.log_paths for m in ROTATION.findall(p.read_text())]
        assert len(rotations) >= 2, f"rotations: {rotations}\n{_tails(run)}"
        assert len({node for _, node in seen.aggregators}) >= 2

        # Accuracy of round 10's model on the held-out test set (the participants test it).
        judged = seen.records[JUDGED_ROUND]["accuracy"]
        central = run.centralized()
        assert judged is not None and judged >= central - 0.03, (judged, central)
        _, model = run.global_model()
        assert model.evaluate(run.test.X, run.test.y) >= central - 0.03

        # fl_status returns at most MAX_STATUS_ROUNDS records, and says so when asked more.
        with pytest.raises(BadRequest, match="recent"):
            run.client.request({"type": "fl_status", "recent": MAX_STATUS_ROUNDS + 1})


def participate(endpoints: list[str], data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``raftctl ARGS fl participate --data DATA`` as a user would, in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTCTL_")}
    done = subprocess.run(
        [sys.executable, "-m", "raftctl", "-e", ",".join(endpoints), *args, "fl", "participate",
         "--data", str(data), "--name", "p1"],
        check=False, capture_output=True, text=True, env=env, timeout=DEADLINE)
    assert "Traceback" not in done.stderr, done.stderr
    return done


def test_participate_gives_up_when_no_node_answers(tmp_path: Path) -> None:
    shard = write_split(tmp_path, 1, alpha=None).shards[0]
    endpoints = [f"127.0.0.1:{port}" for port in free_ports(2)]
    done = participate(endpoints, shard, "--timeout", "1")
    assert (done.returncode, done.stdout) == (3, ""), done.stderr
    last = done.stderr.splitlines()[-1]
    assert last.startswith("Error: no node reachable") and all(e in last for e in endpoints)


def test_participate_ends_at_once_on_a_cluster_without_federated(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = make_cluster(1)
    cluster.start_all()
    wait_for_leader(cluster)
    shard = write_split(tmp_path / "data", 1, alpha=None).shards[0]
    done = participate(cluster.endpoints, shard)
    # One line and no "retrying after": the refusal is final.
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == ("Error: the cluster answered with an error: bad_request: "
                           "application 'fl' is not enabled on this node"
                           " (its config needs [federated] enabled = true)\n")

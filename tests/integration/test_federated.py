"""Federated learning on real processes: 3 raftd nodes, 4 ``raftctl fl participate`` processes.

One run checks the issue's promises together (each start costs seconds): IID shards reach,
by round 10, a test accuracy within 3 points of the same model trained centrally; the
aggregator SIGKILLed while it holds updates of an uncommitted round is replaced and training
goes on, the round number never goes back and no committed round is lost; with a small
``rotate_after_s`` leadership rotates at least twice. On one node, malformed, non-finite,
wrong-shape and duplicate updates sent through ``fl_update`` are refused with their reason and
the committed model is the average of the good updates alone. A participant also ends, with
its exit status, when no node answers (3) or the cluster refuses it for good (1). Every wait
has a deadline; nothing asserts a duration.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

# Skip, not fail, without the rafty[federated] extra: nothing that imports numpy, sklearn or
# cryptography (numpy itself, raftd.federated, raftctl.fl) may be imported above this.
np = pytest.importorskip("numpy", reason="needs the rafty[federated] extra")
pytest.importorskip("sklearn", reason="needs the rafty[federated] extra")
pytest.importorskip("cryptography", reason="needs the rafty[federated] extra")

from raftctl.blocking import Client
from raftctl.cli import cli as raftctl_cli
from raftctl.errors import BadRequest
from raftctl.fl.demo import FederatedRun
from raftctl.localcluster import free_ports
from raftd.federated import crypto
from raftd.federated.coordinator import MAX_STATUS_ROUNDS, model_context, update_context
from raftd.federated.data import write_split
from raftd.federated.fedavg import Update, encode_update, fedavg
from raftd.federated.model import ModelSpec, Params, decode_params
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import wait_for_leader, wait_until

ROUNDS = 20
"""Participants train this far; round 10 is judged on accuracy, the rest gives the rotation
and the crash room to happen."""
JUDGED_ROUND = 10
KILL_AFTER_ROUND = 3
DEADLINE = 90.0
ROTATION = re.compile(r"rotating: handing leadership to (\S+) after \S+ as aggregator "
                      r"\(term (\d+)\)")


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


def _handovers(run: FederatedRun) -> set[tuple[int, str, str]]:
    """(term, from, to) of every rotation a node started, from the node logs."""
    return {(int(term), node, to)
            for node, path in zip(run.cluster.endpoints, run.cluster.log_paths, strict=True)
            for to, term in ROTATION.findall(path.read_text())}


def _rotations(run: FederatedRun) -> list[tuple[int, str, str]]:
    """Completed rotations: aggregator A of term T started handing leadership to X, and the
    committed aggregator record of term T + 1 is X's (X took over from A, nobody between)."""
    led = dict(run.seen.aggregators)
    led.update((r["term"], r["node"]) for r in run.seen.records.values() if r["term"])
    return sorted((t, a, x) for t, a, x in _handovers(run)
                  if led.get(t) == a and led.get(t + 1) == x)


def _holding(run: FederatedRun, past: int) -> dict[str, Any] | None:
    """The leader's status once it aggregates a round after ``past`` and holds updates of it."""
    st = run.status()
    agg = st.get("aggregator")
    if st.get("stale") or agg is None or agg["node"] != st["node"] or st["round"] < past:
        return None
    return st if (st.get("updates") or 0) >= 1 else None


def test_federated_training_survives_the_aggregator_and_rotates(tmp_path: Path) -> None:
    deadline = time.monotonic() + DEADLINE
    with FederatedRun(tmp_path, servers=3, participants=4, rounds=ROUNDS, rotate_after_s=0.3,
                      min_updates=4, round_timeout_s=3.0, fsync=True) as run:
        run.start()

        # Mid-round: stop participant p4 (our child) so that no round it has not sent to yet
        # can fill up (min_updates=4) before the kill. It may have sent to round frozen + 1
        # already: wait for a later round, then kill its aggregator as soon as it holds updates.
        # A round p4 missed closes after round_timeout_s (3 s), well within p4's give-up time
        # (10 s of silence) and well after the first update of the next round arrives.
        _until(run, f"round {KILL_AFTER_ROUND}", lambda s: s["round"] >= KILL_AFTER_ROUND,
               deadline)
        held = run.procs[-1]
        held.send_signal(signal.SIGSTOP)
        try:
            # An aggregator's round is the latest committed one (it applied its own rounds).
            frozen = _until(run, "the aggregator's status",
                            lambda s: s.get("updates") is not None, deadline)["round"]
            st = wait_until(lambda: _holding(run, frozen + 1),
                            f"an aggregator holding updates of a round after {frozen + 1}",
                            deadline - time.monotonic())
            victim = run.cluster.endpoints.index(st["node"])
            run.cluster.kill(victim)
        finally:
            held.send_signal(signal.SIGCONT)
        killed_term, killed_round = st["aggregator"]["term"], st["round"]

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
        # The kill landed mid-round: the round the victim held updates of was committed by a
        # later aggregator, and the victim's term ended with the kill, not with a rotation.
        held_round = seen.records[killed_round + 1]
        assert held_round["term"] > killed_term, (held_round, killed_term)
        assert held_round["node"] != run.cluster.endpoints[victim]
        assert not [h for h in _handovers(run) if h[:2] == (killed_term, st["node"])]

        # Rotation: leaders handed over by themselves, and the next one took over, twice.
        rotations = _rotations(run)
        assert len(rotations) >= 2, f"rotations: {rotations}\n{_tails(run)}"

        # Accuracy of round 10's model on the held-out test set (the participants test it).
        judged = seen.records[JUDGED_ROUND]["accuracy"]
        central = run.centralized()
        assert judged is not None and judged >= central - 0.03, (judged, central)
        _, model = run.global_model()
        assert model.evaluate(run.test.X, run.test.y) >= central - 0.03

        # fl_status returns at most MAX_STATUS_ROUNDS records, and says so when asked more.
        with pytest.raises(BadRequest, match="recent"):
            run.client.request({"type": "fl_status", "recent": MAX_STATUS_ROUNDS + 1})


def _seal(status: dict[str, Any], name: str, plaintext: bytes) -> dict[str, Any]:
    """An fl_update of ``plaintext`` as participant ``name`` for round 1, sealed to the
    aggregator of ``status``: only what is inside is wrong, never the envelope."""
    agg = status["aggregator"]
    sealed = crypto.seal(crypto.load_public(agg["public_key"]), plaintext,
                         update_context(name, 1))
    return {"type": "fl_update", "participant": name, "round": 1, "key_id": agg["key_id"],
            "sealed": sealed}


def test_bad_updates_are_refused_with_a_reason_and_never_reach_the_model(
    make_cluster: ClusterFactory,
) -> None:
    # One node aggregates for good (no voter to rotate to); two updates close a round.
    cluster = make_cluster(1, federated={"enabled": True, "min_updates": 2,
                                         "round_timeout_s": 3600})
    cluster.start_all()
    wait_for_leader(cluster)
    keys = {name: crypto.generate_private_key() for name in ("p1", "p2")}
    spec = ModelSpec()
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        for name, key in keys.items():
            client.request({"type": "fl_register", "participant": name,
                            "public_key": crypto.public_der(key)})
        client.request({"type": "fl_init", "spec": spec.to_dict()})

        def status() -> dict[str, Any]:
            return client.request({"type": "fl_status"})

        def model() -> tuple[int, bytes]:
            got = client.request({"type": "fl_model", "participant": "p1"})
            return got["round"], crypto.open_sealed(keys["p1"], got["sealed"],
                                                    model_context("p1", got["round"]))

        st = wait_until(lambda: (s := status())["accepting"] and s["updates"] is not None
                        and s, "the aggregator to open round 1")
        first_round, initial = model()
        assert first_round == 0
        params = decode_params(initial)

        def update(name: str, p: Params, n: int = 10) -> dict[str, Any]:
            return _seal(st, name, encode_update(Update(name, 1, p, n)))

        nan = [a.copy() for a in params]
        nan[0][0, 0] = np.nan
        bad = {
            "malformed": _seal(st, "p1", b"\xc1 not msgpack"),
            "mismatch": _seal(st, "p1", encode_update(Update("p2", 1, params, 10))),
            "non_finite": update("p1", nan),
            "shape": update("p1", [params[0].T, params[1]]),
            "dtype": update("p1", [a.astype(np.float32) for a in params]),
            "undecryptable": update("p1", params) | {"sealed": b"\x00" * 64},
        }
        for reason, request in bad.items():
            answer = client.request(request)
            assert (answer["success"], answer["reason"]) == (False, reason), answer
        assert status()["updates"] == 0

        good = {"p1": Update("p1", 1, [a + 1.0 for a in params], 30),
                "p2": Update("p2", 1, [a - 2.0 for a in params], 10)}
        accepted = client.request(_seal(st, "p1", encode_update(good["p1"])))
        assert (accepted["success"], accepted["updates"]) == (True, 1), accepted
        twice = client.request(update("p1", [a + 100.0 for a in params], 1000))
        assert (twice["success"], twice["reason"]) == (False, "duplicate"), twice
        assert status()["updates"] == 1
        assert model() == (0, initial)  # nothing refused reached the committed model

        client.request(_seal(st, "p2", encode_update(good["p2"])))
        wait_until(lambda: status()["round"] == 1, "round 1 to commit")
        committed_round, committed = model()
        assert committed_round == 1
        expected = fedavg([good["p1"], good["p2"]])
        assert all(np.array_equal(got, want) for got, want in
                   zip(decode_params(committed), expected, strict=True))
        record = status()["rounds"][-1]
        assert (record["participants"], record["examples"]) == (["p1", "p2"], 40), record

    # What an operator sees of it: raftctl fl status, as JSON and as tables.
    shown = CliRunner().invoke(raftctl_cli, ["-e", cluster.endpoints[0], "-o", "json", "fl",
                                             "status", "--rounds", "1"])
    assert shown.exit_code == 0, shown.output
    view = json.loads(shown.stdout)
    assert (view["round"], view["participants"], view["updates"]) == (1, 2, 0), view
    aggregator = view["aggregator"]
    assert aggregator["node"] == cluster.endpoints[0] and "public_key" not in aggregator
    assert [r["round"] for r in view["rounds"]] == [1]
    table = CliRunner().invoke(raftctl_cli, ["-e", cluster.endpoints[0], "-o", "plain", "fl",
                                             "status"])
    assert table.exit_code == 0 and cluster.endpoints[0] in table.stdout, table.output


def test_split_writes_shards_and_a_test_set(tmp_path: Path) -> None:
    done = CliRunner().invoke(raftctl_cli, ["fl", "split", "--parts", "3", "--alpha", "0.5",
                                            "--out", str(tmp_path / "shards")])
    assert done.exit_code == 0, done.output
    shards = [np.load(tmp_path / "shards" / f"shard{i}.npz") for i in (1, 2, 3)]
    test = np.load(tmp_path / "shards" / "test.npz")
    sizes = [len(s["y"]) for s in shards]
    assert all(size > 0 for size in sizes) and len(test["y"]) > 0
    assert sum(sizes) + len(test["y"]) == 1797  # every digit of load_digits, dealt once


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

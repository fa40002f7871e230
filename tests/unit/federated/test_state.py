"""FederatedState: deterministic commands, rounds that never go back, and snapshots."""

from __future__ import annotations

from typing import Any

from raftd.federated.coordinator import next_voter
from raftd.federated.state import APP_NAME, MAX_ROUND_RECORDS, FederatedState
from raftd.statemachine import APP, DictStateMachine, encode_batch, encode_command

SPEC = {"kind": "softmax", "features": 64, "classes": 10, "hidden": 32, "seed": 0}


def agg(term: int, node: str = "n1") -> dict[str, Any]:
    return {"op": "aggregator", "term": term, "node": node, "public_key": b"K" * 10}


def rnd(number: int, term: int, node: str = "n1", **extra: Any) -> dict[str, Any]:
    return {"op": "round", "round": number, "term": term, "node": node, "model": b"M%d" % number,
            "participants": ["p1", "p2"], "examples": 100, **extra}


def started() -> FederatedState:
    state = FederatedState()
    assert "error" not in state.apply({"op": "init", "spec": SPEC, "model": b"M0"}, 1)
    assert "error" not in state.apply(agg(2), 2)
    return state


def test_rounds_advance_one_by_one_from_the_current_aggregator() -> None:
    state = started()
    assert state.apply(rnd(1, 2), 3) == {"round": 1}
    assert (state.round, state.model, state.aggregations) == (1, b"M1", {"n1": 1})
    for stale in (rnd(1, 2), rnd(3, 2), rnd(0, 2)):  # repeated, skipping, going back
        assert state.apply(stale, 4)["error"] == "condition_failed"
    assert state.apply(rnd(2, 1), 4)["error"] == "condition_failed"  # an older aggregator
    assert state.apply(rnd(2, 2, node="n9"), 4)["error"] == "condition_failed"
    assert (state.round, state.model) == (1, b"M1")


def test_an_older_aggregator_record_is_refused() -> None:
    state = started()
    assert state.apply(agg(1, "n2"), 5)["error"] == "condition_failed"
    assert state.apply(agg(2, "n2"), 5)["error"] == "condition_failed"
    assert state.apply(agg(3, "n2"), 5) == {"term": 3, "round": 0}
    assert state.aggregator is not None and state.aggregator["node"] == "n2"
    assert state.apply(rnd(1, 2), 6)["error"] == "condition_failed"  # n1's round, too late


def test_init_once_then_same_spec_is_a_no_op() -> None:
    state = started()
    assert state.apply({"op": "init", "spec": SPEC, "model": b"other"}, 5) == {"round": 0}
    assert state.model == b"M0"
    other = {**SPEC, "kind": "mlp"}
    assert state.apply({"op": "init", "spec": other, "model": b"x"}, 5)["error"]


def test_bad_commands_are_refused_without_raising() -> None:
    state = FederatedState()
    for bad in (None, [], {"op": "nope"}, {"op": "register"}, {"op": "register",
                "participant": "", "public_key": b"k"}, {"op": "aggregator", "term": -1},
                {"op": "round"}, rnd(1, 1), {"op": "init", "spec": SPEC}):
        assert state.apply(bad, 1)["error"] in ("bad_request", "condition_failed")
    assert state.apply({"op": "register", "participant": "p", "public_key": b"k"}, 1)["key_id"]


def test_accuracy_is_filled_in_for_the_evaluated_round() -> None:
    state = started()
    state.apply(rnd(1, 2), 3)
    state.apply(rnd(2, 2, evaluation=[1, 90, 100]), 4)
    assert state.accuracy() == {"round": 1, "accuracy": 0.9, "evaluated": 100}
    status = state.status()
    assert status["round"] == 2 and status["aggregations"] == {"n1": 2}
    assert [r["round"] for r in status["rounds"]] == [0, 1, 2]


def test_round_records_are_bounded() -> None:
    state = started()
    for r in range(1, MAX_ROUND_RECORDS + 20):
        state.apply(rnd(r, 2), r)
    assert len(state.rounds) == MAX_ROUND_RECORDS
    assert state.rounds[-1]["round"] == MAX_ROUND_RECORDS + 19


def test_listeners_hear_applied_changes_only() -> None:
    state = started()
    heard: list[str] = []
    state.listeners.append(heard.append)
    state.apply(rnd(1, 2), 3)
    state.apply(rnd(1, 2), 3)
    assert heard == ["round"]


def test_state_travels_in_snapshots_beside_the_keys() -> None:
    """Through the real DictStateMachine: APP commands in a batch, capture, restore."""
    sm, state = DictStateMachine(), FederatedState()
    sm.register_app(APP_NAME, state)
    commands = [{"op": "init", "spec": SPEC, "model": b"M0"}, agg(4),
                {"op": "register", "participant": "p1", "public_key": b"PK"}, rnd(1, 4)]
    results = sm.apply_batch(encode_batch(1000, [encode_command(APP, APP_NAME, c)
                                                 for c in commands]))
    assert all("error" not in r for r in results)
    assert sm.data == {}  # nothing in the user's key space
    snapshot = b"".join(sm.capture().chunks())
    state.apply(rnd(2, 4), 2000)  # after the capture: must not leak into the snapshot

    sm2, state2 = DictStateMachine(), FederatedState()
    sm2.register_app(APP_NAME, state2)
    sm2.restore(snapshot)
    assert (state2.round, state2.model, state2.participants) == (1, b"M1", {"p1": b"PK"})
    assert state2.aggregator is not None and state2.aggregator["term"] == 4
    assert state2.aggregations == {"n1": 1}
    assert state2.status()["rounds"][-1]["round"] == 1


def test_rotation_goes_round_robin_over_sorted_voters() -> None:
    voters = ("c:1", "a:1", "b:1")
    assert next_voter("a:1", voters, None) == "b:1"
    assert next_voter("b:1", voters, None) == "c:1"
    assert next_voter("c:1", voters, None) == "a:1"
    assert next_voter("a:1", voters, "b:1") == "c:1"  # b did not take over: skip it
    assert next_voter("a:1", voters, "c:1") == "b:1"
    assert next_voter("a:1", ("a:1",), None) is None
    assert next_voter("z:1", voters, None) is None  # not a voter (a learner): no rotation

"""LayeredDict: an O(1) freeze for snapshots, checked against a plain dict."""

from __future__ import annotations

import random

from raftd.layered import LayeredDict
from raftd.statemachine import DELETE, SET, DictStateMachine, encode_batch, encode_command


def test_frozen_view_is_unchanged_by_later_writes_and_overlay_folds_back() -> None:
    rng = random.Random(5)
    oracle: dict[str, int] = {}
    layered = LayeredDict()
    for round_ in range(20):
        frozen, release = layered.freeze() if round_ % 2 else ({}, None)
        before = dict(oracle)
        for _ in range(200):
            key = f"k{rng.randrange(50)}"
            if rng.random() < 0.3:
                oracle.pop(key, None)
                layered.delete(key)
            else:
                oracle[key] = rng.randrange(1000)
                layered.set(key, oracle[key])
            assert layered.get(key) == oracle.get(key)
        assert len(layered) == len(oracle)
        assert dict(layered.items()) == oracle
        if release is not None:
            assert frozen == before  # the snapshot's view never moved
            release()
        assert layered.as_dict() == oracle


def test_a_second_freeze_while_one_is_held_gets_a_copy() -> None:
    layered = LayeredDict({"a": 1})
    first, release_first = layered.freeze()
    layered.set("b", 2)
    second, _ = layered.freeze()
    assert first == {"a": 1} and second == {"a": 1, "b": 2}
    release_first()
    assert layered.as_dict() == {"a": 1, "b": 2}


def test_state_machine_snapshot_during_writes_is_the_state_at_capture() -> None:
    sm = DictStateMachine()
    sm.apply_batch(encode_batch(1, [encode_command(SET, f"k{i}", i) for i in range(30_000)]))
    digest_at_capture = sm.digest()
    capture = sm.capture()
    chunks = capture.chunks()
    first = next(chunks)  # serialization has started (in production: in a worker thread)
    sm.apply_batch(encode_batch(2, [encode_command(DELETE, "k1"), encode_command(SET, "new", 1)]))
    blob = first + b"".join(chunks)
    copy = DictStateMachine()
    copy.restore(blob)
    assert copy.digest() == digest_at_capture
    assert sm.get("k1")[0] is False and sm.get("new")[1] == 1
    assert sm.key_count() == 30_000 and len(sm.data) == 30_000

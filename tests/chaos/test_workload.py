"""The chaos workload's bookkeeping, without a cluster: deadlines, lost writes, key rotation."""

from __future__ import annotations

import random

from tests.chaos.linearizability import DELETE, GET, SET, Op
from tests.chaos.workload import KeySpace, Recorder, _Record, lost_writes


def _set(call: float, ret: float | None, value: str, revision: int | None = None) -> Op:
    return Op(0, "k", SET, call, ret, value=value, revision=revision)


def test_a_later_write_of_the_same_session_settles_unknown_ones() -> None:
    recorder = Recorder()
    recorder.records += [
        _Record(_set(0, None, "a"), "s1", "s1"),
        _Record(_set(1, None, "b"), "s1", "s1"),
        _Record(Op(0, "k", GET, 2, 3, found=False)),  # reads settle nothing
        _Record(_set(4, 5, "c", 9), "s1", "s1"),
        _Record(_set(6, None, "d"), "s1", "s1"),  # the client's last write: never settled
    ]
    history = recorder.history()
    assert [op.deadline for op in history] == [5, 5, None, None, None]


def test_a_session_change_settles_nothing() -> None:
    recorder = Recorder()
    recorder.records += [
        _Record(_set(0, None, "a"), "s1", "s2"),  # raised SessionExpired: a new session
        _Record(_set(1, None, "b"), "s2", "s2"),
        _Record(Op(1, "k", SET, 2, 3, value="x", revision=4), "s9", "s9"),  # another client
        _Record(_set(4, 5, "c", 9), "s2", "s2"),
    ]
    assert [op.deadline for op in recorder.history()] == [None, 5, None, None]


def test_lost_writes() -> None:
    acked = [_set(0, 1, "a", 3), _set(2, 3, "b", 7)]
    present = Op(-1, "k", GET, 10, 11, value="b", found=True, revision=7)
    assert lost_writes(acked, {"k": present}) == []
    stale = Op(-1, "k", GET, 10, 11, value="a", found=True, revision=3)
    assert len(lost_writes(acked, {"k": stale})) == 1
    absent = Op(-1, "k", GET, 10, 11, found=False)
    assert len(lost_writes(acked, {"k": absent})) == 1
    deleted = [*acked, Op(0, "k", DELETE, 4, None)]
    assert lost_writes(deleted, {"k": absent}) == []


def test_keys_rotate_after_their_share_of_operations() -> None:
    keys = KeySpace("p", slots=2, per_key=3)
    rng = random.Random(1)
    picked = [keys.pick(rng) for _ in range(30)]
    assert keys.keys == list(dict.fromkeys(picked))
    assert all(picked.count(key) <= 3 for key in keys.keys)
    assert {key.split("/")[1].split(".")[0] for key in keys.keys} == {"0", "1"}

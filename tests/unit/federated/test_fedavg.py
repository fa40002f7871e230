"""FedAvg and update validation: a weighted mean, and refusals that never touch the model."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from raftd.federated.fedavg import (
    MAX_UPDATE_BYTES,
    InvalidUpdate,
    RoundBuffer,
    Update,
    decode_update,
    encode_update,
    fedavg,
)
from raftd.federated.model import encode_params

REFERENCE = [np.zeros((2, 3)), np.zeros(3)]


def update(name: str, value: float, n: int, rnd: int = 1) -> Update:
    return Update(name, rnd, [np.full((2, 3), value), np.full(3, -value)], n)


def test_fedavg_is_the_mean_weighted_by_num_examples() -> None:
    updates = [update("a", 1.0, 10), update("b", 4.0, 30), update("c", -2.0, 60)]
    averaged = fedavg(updates)
    # By hand: (1*10 + 4*30 - 2*60) / 100 = 0.1
    np.testing.assert_allclose(averaged[0], np.full((2, 3), 0.1))
    np.testing.assert_allclose(averaged[1], np.full(3, -0.1))
    assert [a.dtype for a in averaged] == [np.float64, np.float64]


def test_fedavg_of_distinct_arrays_elementwise() -> None:
    a = Update("a", 1, [np.array([[1.0, 2.0]]), np.array([0.0])], 1)
    b = Update("b", 1, [np.array([[3.0, 6.0]]), np.array([4.0])], 3)
    W, bias = fedavg([a, b])
    np.testing.assert_allclose(W, [[(1 * 1 + 3 * 3) / 4, (2 * 1 + 6 * 3) / 4]])
    np.testing.assert_allclose(bias, [3.0])


def test_fedavg_keeps_the_dtype_of_the_model() -> None:
    a = Update("a", 1, [np.ones(4, dtype=np.float32)], 1)
    b = Update("b", 1, [np.zeros(4, dtype=np.float32)], 1)
    (out,) = fedavg([a, b])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, 0.5)


def test_fedavg_needs_an_update() -> None:
    with pytest.raises(ValueError):
        fedavg([])


def test_a_valid_update_round_trips() -> None:
    u = Update("p1", 3, [np.arange(6.0).reshape(2, 3), np.ones(3)], 42, (7, 9))
    got = decode_update(encode_update(u), participant="p1", round=3, reference=REFERENCE)
    assert (got.participant, got.round, got.num_examples, got.evaluation) == ("p1", 3, 42, (7, 9))
    np.testing.assert_array_equal(got.params[0], u.params[0])


def _plain(arrays: list[np.ndarray], **fields: object) -> bytes:
    body = {"v": 1, "participant": "p1", "round": 1, "num_examples": 5,
            "params": encode_params(arrays)}
    body.update(fields)
    return msgpack.packb(body, use_bin_type=True)


BAD = {
    "not msgpack": (b"\xc1\xc1garbage", "malformed"),
    "no version": (msgpack.packb({"participant": "p1"}), "malformed"),
    "other participant": (_plain(REFERENCE, participant="p2"), "mismatch"),
    "other round": (_plain(REFERENCE, round=2), "mismatch"),
    "zero examples": (_plain(REFERENCE, num_examples=0), "malformed"),
    "examples not int": (_plain(REFERENCE, num_examples=1.5), "malformed"),
    "bad evaluation": (_plain(REFERENCE, evaluation=[5, 3]), "malformed"),
    "params garbage": (_plain(REFERENCE, params=b"xyz"), "malformed"),
    "wrong shape": (_plain([np.zeros((3, 2)), np.zeros(3)]), "shape"),
    "missing array": (_plain([np.zeros((2, 3))]), "shape"),
    "wrong dtype": (_plain([np.zeros((2, 3), dtype=np.float32), np.zeros(3)]), "dtype"),
    "nan": (_plain([np.full((2, 3), np.nan), np.zeros(3)]), "non_finite"),
    "inf": (_plain([np.zeros((2, 3)), np.array([0.0, np.inf, 0.0])]), "non_finite"),
    "too large": (b"\x00" * (MAX_UPDATE_BYTES + 1), "too_large"),
}


@pytest.mark.parametrize("plaintext,reason", list(BAD.values()), ids=list(BAD))
def test_a_bad_update_is_refused_with_a_reason(plaintext: bytes, reason: str) -> None:
    with pytest.raises(InvalidUpdate) as refused:
        decode_update(plaintext, participant="p1", round=1, reference=REFERENCE)
    assert refused.value.reason == reason
    assert str(refused.value)


def test_refused_and_duplicate_updates_never_corrupt_the_model() -> None:
    reference = [np.full((2, 3), 7.0), np.full(3, 7.0)]
    before = [p.copy() for p in reference]
    buffer = RoundBuffer(1, reference)
    good = {"a": update("a", 1.0, 1), "b": update("b", 3.0, 1)}
    for name, u in good.items():
        buffer.claim(name)
        buffer.add(u)
    # A second update from "a" is refused, whether it arrives after or during the first.
    with pytest.raises(InvalidUpdate) as dup:
        buffer.claim("a")
    assert dup.value.reason == "duplicate"
    buffer.claim("c")
    with pytest.raises(InvalidUpdate):
        buffer.claim("c")
    # "c" sends NaNs: refused at validation, its slot given back, nothing kept.
    with pytest.raises(InvalidUpdate):
        decode_update(_plain([np.full((2, 3), np.nan), np.zeros(3)], participant="c"),
                      participant="c", round=1, reference=reference)
    buffer.release("c")
    assert len(buffer) == 2
    averaged = fedavg(buffer.ordered())
    np.testing.assert_allclose(averaged[0], np.full((2, 3), 2.0))
    for p, b in zip(reference, before, strict=True):
        np.testing.assert_array_equal(p, b)  # the global model is untouched
    # An update whose slot was never claimed is refused too.
    with pytest.raises(InvalidUpdate):
        buffer.add(update("z", 1.0, 1))


def test_average_does_not_depend_on_arrival_order() -> None:
    first, second = RoundBuffer(1, REFERENCE), RoundBuffer(1, REFERENCE)
    updates = [update(n, v, k) for n, v, k in (("x", 0.3, 3), ("y", 0.7, 5), ("z", 0.1, 2))]
    for buffer, order in ((first, updates), (second, updates[::-1])):
        for u in order:
            buffer.claim(u.participant)
            buffer.add(u)
    a, b = fedavg(first.ordered()), fedavg(second.ordered())
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))

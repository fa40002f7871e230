"""Models, the stable parameter encoding, and the digits splits."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest

from raftd.federated.data import (
    Shard,
    load_digits_dataset,
    split_dirichlet,
    split_iid,
    train_test,
    write_split,
)
from raftd.federated.model import (
    Model,
    ModelSpec,
    ParamsError,
    decode_params,
    encode_params,
    initial_params,
)


@pytest.fixture(scope="module")
def digits() -> tuple[Shard, Shard]:
    return train_test(load_digits_dataset(), 0.2, seed=0)


def test_encoding_is_stable_little_endian_dtype_shape_bytes() -> None:
    params = [np.arange(6, dtype=">f8").reshape(2, 3), np.array([1.5], dtype=np.float32)]
    data = encode_params(params)
    obj = msgpack.unpackb(data)
    assert obj["arrays"][0]["dtype"] == "<f8" and obj["arrays"][0]["shape"] == [2, 3]
    assert obj["arrays"][0]["data"] == np.arange(6, dtype="<f8").tobytes()
    assert encode_params(decode_params(data)) == data
    back = decode_params(data)
    np.testing.assert_array_equal(back[0], params[0])
    back[0][0, 0] = 99.0  # decoded arrays are writable copies


@pytest.mark.parametrize("mutate,why", [
    (lambda o: o.update(v=2), "format version"),
    (lambda o: o.update(arrays=[]), "non-empty"),
    (lambda o: o["arrays"][0].update(dtype="<i8"), "dtype"),
    (lambda o: o["arrays"][0].update(dtype="|O"), "dtype"),
    (lambda o: o["arrays"][0].update(shape=[3, 3]), "should hold"),
    (lambda o: o["arrays"][0].update(shape=[-1]), "invalid shape"),
    (lambda o: o["arrays"][0].update(data="text"), "should hold"),
    (lambda o: o["arrays"][0].update(extra=1), "map of"),
])
def test_decode_refuses_what_is_not_parameters(mutate, why: str) -> None:  # type: ignore[no-untyped-def]
    obj = msgpack.unpackb(encode_params([np.zeros((2, 3))]))
    mutate(obj)
    with pytest.raises(ParamsError, match=why):
        decode_params(msgpack.packb(obj))


def test_decode_refuses_oversized_and_non_bytes() -> None:
    with pytest.raises(ParamsError):
        decode_params(b"\x00" * 100, max_bytes=10)
    with pytest.raises(ParamsError):
        decode_params("text")


@pytest.mark.parametrize("kind", ["softmax", "mlp"])
def test_training_learns_digits(kind: str, digits: tuple[Shard, Shard]) -> None:
    train, test = digits
    spec = ModelSpec(kind=kind)
    model = Model(spec)
    assert [p.shape for p in model.params] == spec.shapes()
    before = model.evaluate(test.X, test.y)
    model.fit(train.X, train.y, epochs=5, lr=0.5)
    assert model.evaluate(test.X, test.y) > max(0.85, before)


def test_spec_is_checked_and_round_trips() -> None:
    spec = ModelSpec(kind="mlp", hidden=8, seed=3)
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    for bad in ({"kind": "tree"}, {"features": 0}, {"classes": 1}, {"hidden": "x"},
                {"unknown": 1}):
        with pytest.raises((ValueError, TypeError)):
            ModelSpec.from_dict(bad)
    # The same seed gives the same initial MLP.
    a, b = initial_params(spec), initial_params(ModelSpec(kind="mlp", hidden=8, seed=3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_iid_split_deals_everything_once(digits: tuple[Shard, Shard]) -> None:
    train, _ = digits
    shards = split_iid(train, 4, seed=0)
    assert sum(len(s) for s in shards) == len(train)
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1
    assert all(len(np.unique(s.y)) == 10 for s in shards)


def test_dirichlet_split_skews_labels(digits: tuple[Shard, Shard]) -> None:
    train, _ = digits
    skewed = split_dirichlet(train, 5, alpha=0.1, seed=0)
    assert sum(len(s) for s in skewed) == len(train)
    assert all(len(s) >= 10 for s in skewed)
    # With alpha 0.1 a shard's most common label dominates far more than the IID 10%.
    top_share = [np.bincount(s.y, minlength=10).max() / len(s) for s in skewed]
    assert np.mean(top_share) > 0.3
    with pytest.raises(ValueError):
        split_dirichlet(train, 5, alpha=0.0, seed=0)


def test_write_split_writes_shards_and_test_set(tmp_path: Path) -> None:
    split = write_split(tmp_path / "out", 3, alpha=0.5, seed=1)
    assert [p.name for p in split.shards] == ["shard1.npz", "shard2.npz", "shard3.npz"]
    test = Shard.load(split.test)
    total = sum(len(Shard.load(p)) for p in split.shards) + len(test)
    assert total == 1797
    assert 0.15 < len(test) / total < 0.25
    (tmp_path / "bad.npz").write_bytes(b"not npz")
    with pytest.raises(ValueError):
        Shard.load(tmp_path / "bad.npz")

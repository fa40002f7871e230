"""The digits data set (bundled with scikit-learn: nothing is downloaded) and its splits.

A held-out test set is cut first (stratified, fixed seed), then the rest is dealt to the
participants: IID (a random permutation in equal parts) or with label skew, the usual
Dirichlet partition: for each class, the share each participant gets is drawn from
Dir(alpha, ..., alpha). Small alpha (0.1) gives each participant few classes, large alpha
(100) approaches IID. A draw that leaves some participant with fewer than ``min_size``
examples is redrawn, so every shard can train.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MIN_SHARD_SIZE = 10
MAX_DIRICHLET_DRAWS = 1000


@dataclass(frozen=True, slots=True)
class Shard:
    """Examples (rows of X, pixel values scaled to [0, 1]) and their integer labels."""

    X: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def save(self, path: str | os.PathLike[str]) -> None:
        with open(path, "wb") as f:  # np.savez would append ".npz" to a name lacking it
            np.savez(f, X=self.X, y=self.y)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Shard:
        """Raises ValueError if the file is not a shard written by `save`."""
        try:
            with np.load(path, allow_pickle=False) as f:
                X, y = f["X"], f["y"]
        except (OSError, KeyError, ValueError) as exc:
            raise ValueError(f"{path}: not a data shard ({exc})") from None
        if X.ndim != 2 or y.ndim != 1 or len(X) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"{path}: a shard holds X (n x features) and integer labels y (n)")
        return cls(X.astype(np.float64), y.astype(np.int64))


def load_digits_dataset() -> Shard:
    """The 1797 8x8 digit images of scikit-learn, as 64 features in [0, 1], labels 0-9."""
    from sklearn.datasets import load_digits  # slow to import: only when data is needed

    digits = load_digits()
    return Shard(digits.data.astype(np.float64) / 16.0, digits.target.astype(np.int64))


def train_test(data: Shard, test_fraction: float, seed: int) -> tuple[Shard, Shard]:
    """A stratified split: each class keeps the same share in the test set."""
    rng = np.random.default_rng(seed)
    test_idx: list[np.ndarray] = []
    for label in np.unique(data.y):
        idx = rng.permutation(np.flatnonzero(data.y == label))
        test_idx.append(idx[: round(len(idx) * test_fraction)])
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(len(data)), test)
    return _take(data, rng.permutation(train)), _take(data, test)


def split_iid(data: Shard, parts: int, seed: int) -> list[Shard]:
    order = np.random.default_rng(seed).permutation(len(data))
    return [_take(data, idx) for idx in np.array_split(order, parts)]


def split_dirichlet(data: Shard, parts: int, alpha: float, seed: int,
                    min_size: int = MIN_SHARD_SIZE) -> list[Shard]:
    """Label-skewed shards (see the module docstring); ValueError if none fits ``min_size``."""
    if alpha <= 0:
        raise ValueError("alpha must be positive")
    if parts * min_size > len(data):
        raise ValueError(f"{len(data)} examples cannot give {parts} shards of {min_size}")
    rng = np.random.default_rng(seed)
    for _ in range(MAX_DIRICHLET_DRAWS):
        shards: list[list[int]] = [[] for _ in range(parts)]
        for label in np.unique(data.y):
            idx = rng.permutation(np.flatnonzero(data.y == label))
            shares = rng.dirichlet(np.full(parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for shard, piece in zip(shards, np.split(idx, cuts), strict=True):
                shard.extend(piece.tolist())
        if min(len(s) for s in shards) >= min_size:
            return [_take(data, rng.permutation(np.array(s))) for s in shards]
    raise ValueError(f"no Dirichlet draw with alpha {alpha} gave every shard {min_size} examples")


def _take(data: Shard, idx: np.ndarray) -> Shard:
    return Shard(data.X[idx], data.y[idx])


@dataclass(frozen=True, slots=True)
class Split:
    shards: list[Path]
    test: Path
    sizes: list[int]
    classes: list[int]
    """How many distinct labels each shard holds (10 everywhere for IID)."""


def write_split(out_dir: str | os.PathLike[str], parts: int, *, alpha: float | None,
                seed: int = 0, test_fraction: float = 0.2) -> Split:
    """Write ``shard{k}.npz`` (k = 1..parts) and ``test.npz`` into ``out_dir``.

    ``alpha`` None deals IID shards, otherwise Dirichlet(alpha) label skew.
    """
    if parts < 1:
        raise ValueError("parts must be at least 1")
    train, test = train_test(load_digits_dataset(), test_fraction, seed)
    shards = (split_iid(train, parts, seed) if alpha is None
              else split_dirichlet(train, parts, alpha, seed))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"shard{k}.npz" for k in range(1, parts + 1)]
    for path, shard in zip(paths, shards, strict=True):
        shard.save(path)
    test.save(out / "test.npz")
    return Split(paths, out / "test.npz", [len(s) for s in shards],
                 [len(np.unique(s.y)) for s in shards])

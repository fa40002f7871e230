"""numpy models for federated learning: softmax regression and a one-hidden-layer MLP.

A model's parameters are a list of arrays whose order, shapes and dtype are fixed by its
`ModelSpec`; that is what lets an aggregator check an update against the global model and
average updates element by element. Training is plain mini-batch SGD on the cross-entropy, so
a participant's local step is the same algorithm as centralized training (FedAvg's premise).

`encode_params` / `decode_params` are the one stable byte form of parameters, used in the
replicated log and inside encrypted messages: a msgpack list of ``(dtype, shape, bytes)`` with
little-endian dtypes, so the bytes do not depend on the machine that wrote them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import msgpack
import numpy as np

PARAMS_FORMAT = 1
DTYPES = ("<f4", "<f8")
"""Accepted parameter dtypes, as little-endian numpy type strings."""
MAX_PARAM_BYTES = 8 << 20
"""Largest encoded parameter list accepted (a 64-128-10 MLP is under 100 KiB)."""
MAX_DIMENSION = 1 << 16
KINDS = ("softmax", "mlp")

Params = list[np.ndarray]


class ParamsError(ValueError):
    """Bytes that are not a valid encoded parameter list; the message says why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSpec:
    """What the cluster trains: agreed once (the first ``fl_init``) and kept in the state."""

    kind: str = "softmax"
    features: int = 64
    classes: int = 10
    hidden: int = 32
    """Hidden units of the MLP (ignored by softmax regression)."""
    seed: int = 0
    """Seeds the initial parameters, so every run of a demo starts from the same model."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("features", "classes", "hidden"):
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= MAX_DIMENSION:
                raise ValueError(f"model {name} must be an integer from 1 to {MAX_DIMENSION}")
        if self.classes < 2:
            raise ValueError("a model needs at least 2 classes")
        if type(self.seed) is not int or not 0 <= self.seed < 2**63:
            raise ValueError("model seed must be a non-negative 64-bit integer")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> ModelSpec:
        """Raises ValueError on anything but the fields of a valid spec."""
        if not isinstance(data, dict) or not set(data) <= set(cls.__dataclass_fields__):
            raise ValueError(f"a model spec is a map of {', '.join(cls.__dataclass_fields__)}")
        return cls(**data)

    def shapes(self) -> list[tuple[int, ...]]:
        if self.kind == "softmax":
            return [(self.features, self.classes), (self.classes,)]
        return [(self.features, self.hidden), (self.hidden,),
                (self.hidden, self.classes), (self.classes,)]


class Model:
    """Parameters plus the forward and backward passes of one `ModelSpec`."""

    def __init__(self, spec: ModelSpec, params: Params | None = None) -> None:
        self.spec = spec
        self.params: Params = initial_params(spec) if params is None else [
            np.array(p, dtype=np.float64) for p in params]
        if [p.shape for p in self.params] != spec.shapes():
            raise ValueError("parameters do not match the model spec")

    def _forward(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities, and the hidden activations (MLP) for the backward pass."""
        if self.spec.kind == "softmax":
            W, b = self.params
            return _softmax(X @ W + b), None
        W1, b1, W2, b2 = self.params
        hidden = np.maximum(X @ W1 + b1, 0.0)
        return _softmax(hidden @ W2 + b2), hidden

    def _gradients(self, X: np.ndarray, y: np.ndarray) -> Params:
        probs, hidden = self._forward(X)
        delta = probs
        delta[np.arange(len(y)), y] -= 1.0
        delta /= len(y)  # d(mean cross-entropy)/d(logits)
        if hidden is None:
            return [X.T @ delta, delta.sum(axis=0)]
        W2 = self.params[2]
        back = (delta @ W2.T) * (hidden > 0)
        return [X.T @ back, back.sum(axis=0), hidden.T @ delta, delta.sum(axis=0)]

    def fit(self, X: np.ndarray, y: np.ndarray, epochs: int, lr: float, *,
            batch_size: int = 32, seed: int = 0) -> None:
        """Mini-batch SGD on the mean cross-entropy; ``seed`` orders the batches."""
        rng = np.random.default_rng(seed)
        n = len(y)
        for _ in range(epochs):
            order = rng.permutation(n)
            for start in range(0, n, batch_size):
                idx = order[start:start + batch_size]
                for param, grad in zip(self.params, self._gradients(X[idx], y[idx]), strict=True):
                    param -= lr * grad

    def predict(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(np.argmax(self._forward(X)[0], axis=1))

    def evaluate(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on ``(X, y)``: the fraction of labels predicted right."""
        if len(y) == 0:
            return 0.0
        return float(np.mean(self.predict(X) == y))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True))


def initial_params(spec: ModelSpec) -> Params:
    """Softmax regression starts at zero; the MLP needs random (He) weights to break symmetry."""
    if spec.kind == "softmax":
        return [np.zeros(shape) for shape in spec.shapes()]
    rng = np.random.default_rng(spec.seed)
    params: Params = []
    for shape in spec.shapes():
        if len(shape) == 2:
            params.append(rng.standard_normal(shape) * np.sqrt(2.0 / shape[0]))
        else:
            params.append(np.zeros(shape))
    return params


def encode_params(params: Params) -> bytes:
    """The stable byte form: ``{"v", "arrays": [{"dtype", "shape", "data"}, ...]}``."""
    arrays = []
    for p in params:
        dtype = p.dtype.newbyteorder("<")
        if dtype.str not in DTYPES:
            raise ValueError(f"cannot encode parameters of dtype {p.dtype}")
        data = np.ascontiguousarray(p, dtype=dtype).tobytes()
        arrays.append({"dtype": dtype.str, "shape": list(p.shape), "data": data})
    packed: bytes = msgpack.packb({"v": PARAMS_FORMAT, "arrays": arrays}, use_bin_type=True)
    return packed


def decode_params(data: Any, *, max_bytes: int = MAX_PARAM_BYTES) -> Params:
    """Parse `encode_params` output; `ParamsError` says what is wrong with anything else.

    Arrays are fresh, writable copies: nothing aliases the input buffer.
    """
    if not isinstance(data, bytes):
        raise ParamsError("parameters must be bytes")
    if len(data) > max_bytes:
        raise ParamsError(f"parameters of {len(data)} bytes exceed the limit of {max_bytes}")
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types on garbage
        raise ParamsError(f"parameters are not msgpack: {type(exc).__name__}") from None
    if not isinstance(obj, dict) or obj.get("v") != PARAMS_FORMAT:
        raise ParamsError("parameters lack the format version")
    arrays = obj.get("arrays")
    if not isinstance(arrays, list) or not arrays:
        raise ParamsError("parameters must be a non-empty list of arrays")
    params: Params = []
    for i, entry in enumerate(arrays):
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data"}:
            raise ParamsError(f"array {i} must be a map of dtype, shape and data")
        dtype, shape, raw = entry["dtype"], entry["shape"], entry["data"]
        if dtype not in DTYPES:
            raise ParamsError(f"array {i} has dtype {dtype!r}; accepted: {', '.join(DTYPES)}")
        if (not isinstance(shape, list) or not 1 <= len(shape) <= 4
                or any(type(d) is not int or not 0 <= d <= MAX_DIMENSION for d in shape)):
            raise ParamsError(f"array {i} has an invalid shape {shape!r}")
        expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if not isinstance(raw, bytes) or len(raw) != expected:
            raise ParamsError(f"array {i} should hold {expected} bytes for shape {shape}")
        params.append(np.frombuffer(raw, dtype=dtype).reshape(shape).copy())
    return params

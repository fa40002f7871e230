"""Updates: their plaintext form, their validation, and FedAvg.

An update is what one participant learned in one round: its new parameters and how many
examples it trained on. The aggregator trusts nothing in it: `decode_update` checks that it
names the expected participant and round, that every array has the global model's shape and
dtype, that every value is finite, and that it fits the size limit; a `RoundBuffer` keeps at
most one per participant per round. Only validated updates are ever averaged, and averaging
produces a new list, so a bad update can be refused but can never touch the global model.

FedAvg (McMahan et al. 2017; Flower's ``aggregate``): the new global parameters are the mean
of the participants' parameters weighted by their ``num_examples``, computed in float64 and
cast back to the global model's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from raftd.federated.model import (
    MAX_PARAM_BYTES,
    Params,
    ParamsError,
    decode_params,
    encode_params,
)

UPDATE_FORMAT = 1
MAX_UPDATE_BYTES = MAX_PARAM_BYTES + 4096
MAX_EXAMPLES = 1 << 40


class InvalidUpdate(ValueError):
    """An update was refused; ``reason`` is a short word, the message says more."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Update:
    participant: str
    round: int
    """The round this update is for: the global model of ``round - 1`` was trained on."""
    params: Params
    num_examples: int
    evaluation: tuple[int, int] | None = None
    """(correct, total) of the received global model on the participant's test data."""


def encode_update(update: Update) -> bytes:
    """The plaintext an update is sealed in (see ``crypto.seal``)."""
    body: dict[str, Any] = {
        "v": UPDATE_FORMAT,
        "participant": update.participant,
        "round": update.round,
        "num_examples": update.num_examples,
        "params": encode_params(update.params),
    }
    if update.evaluation is not None:
        body["evaluation"] = list(update.evaluation)
    packed: bytes = msgpack.packb(body, use_bin_type=True)
    return packed


def decode_update(plaintext: bytes, *, participant: str, round: int,
                  reference: Params) -> Update:
    """Parse and validate an update against the global model ``reference``.

    Raises `InvalidUpdate` with reason ``too_large``, ``malformed``, ``mismatch`` (another
    participant or round than the envelope says), ``shape``, ``dtype`` or ``non_finite``.
    """
    if len(plaintext) > MAX_UPDATE_BYTES:
        raise InvalidUpdate("too_large", f"update of {len(plaintext)} bytes exceeds "
                                         f"{MAX_UPDATE_BYTES}")
    try:
        body = msgpack.unpackb(plaintext, raw=False)
    except Exception:  # noqa: BLE001 - msgpack raises many types on garbage
        raise InvalidUpdate("malformed", "the update is not msgpack") from None
    if not isinstance(body, dict) or body.get("v") != UPDATE_FORMAT:
        raise InvalidUpdate("malformed", "the update lacks its format version")
    if body.get("participant") != participant or body.get("round") != round:
        raise InvalidUpdate("mismatch", f"the update is not {participant}'s for round {round}")
    n = body.get("num_examples")
    if type(n) is not int or not 1 <= n <= MAX_EXAMPLES:
        raise InvalidUpdate("malformed", "num_examples must be a positive integer")
    evaluation = body.get("evaluation")
    if evaluation is not None:
        if (not isinstance(evaluation, list) or len(evaluation) != 2
                or any(type(v) is not int or v < 0 for v in evaluation)
                or evaluation[0] > evaluation[1]):
            raise InvalidUpdate("malformed", "evaluation must be [correct, total]")
        evaluation = (evaluation[0], evaluation[1])
    try:
        params = decode_params(body.get("params"))
    except ParamsError as exc:
        raise InvalidUpdate("malformed", str(exc)) from None
    check_params(params, reference)
    return Update(participant, round, params, n, evaluation)


def check_params(params: Params, reference: Params) -> None:
    """Same number of arrays, same shapes and dtypes as ``reference``, finite values."""
    if len(params) != len(reference):
        raise InvalidUpdate("shape", f"expected {len(reference)} arrays, got {len(params)}")
    for i, (p, ref) in enumerate(zip(params, reference, strict=True)):
        if p.shape != ref.shape:
            raise InvalidUpdate("shape", f"array {i} has shape {p.shape}, expected {ref.shape}")
        if p.dtype != ref.dtype:
            raise InvalidUpdate("dtype", f"array {i} has dtype {p.dtype}, expected {ref.dtype}")
        if not np.all(np.isfinite(p)):
            raise InvalidUpdate("non_finite", f"array {i} holds NaN or infinite values")


def fedavg(updates: Sequence[Update]) -> Params:
    """The mean of the updates' parameters weighted by ``num_examples`` (a new list)."""
    if not updates:
        raise ValueError("FedAvg needs at least one update")
    total = sum(u.num_examples for u in updates)
    averaged = []
    for i, ref in enumerate(updates[0].params):
        acc = np.zeros(ref.shape, dtype=np.float64)
        for u in updates:
            acc += u.params[i].astype(np.float64) * (u.num_examples / total)
        averaged.append(acc.astype(ref.dtype))
    return averaged


@dataclass(slots=True)
class RoundBuffer:
    """The validated updates of one round on the aggregator, at most one per participant.

    ``claim`` reserves a participant's slot while its update is decrypted in a worker thread,
    so two copies sent at once cannot both pass.
    """

    round: int
    reference: Params
    """The global model of ``round - 1``: what updates are checked against."""
    updates: dict[str, Update] = field(default_factory=dict)
    claimed: set[str] = field(default_factory=set)

    def claim(self, participant: str) -> None:
        if participant in self.updates or participant in self.claimed:
            raise InvalidUpdate("duplicate", f"{participant} already sent an update for round "
                                             f"{self.round}")
        self.claimed.add(participant)

    def release(self, participant: str) -> None:
        """Give the slot back after a refused update: the participant may send a good one."""
        self.claimed.discard(participant)

    def add(self, update: Update) -> None:
        """Keep a validated update whose slot was claimed."""
        if update.round != self.round or update.participant not in self.claimed:
            raise InvalidUpdate("mismatch", f"no claimed slot for {update.participant} in "
                                            f"round {self.round}")
        self.claimed.discard(update.participant)
        self.updates[update.participant] = update

    def __len__(self) -> int:
        return len(self.updates)

    def ordered(self) -> list[Update]:
        """Updates by participant name: the same average whatever order they arrived in."""
        return [self.updates[p] for p in sorted(self.updates)]

"""FederatedState: the replicated state of federated learning (a ``statemachine.AppStateMachine``).

It holds only what must survive any crash and be the same on every node, kept compact
because it travels in every snapshot's header: the model spec, the current global model and
its round number, the last ``MAX_ROUND_RECORDS`` round records, the participants' public
keys, the current aggregator record, and how many rounds each node aggregated. Updates are
never stored: they live only in the aggregator's memory until averaged (``coordinator``).

Commands (msgpack maps, applied in log order on every node, deterministic, never raising):

- ``{"op": "init", "spec", "model"}``: the first one sets the model to train (round 0); a
  later one with the same spec is a no-op, with another spec it is refused.
- ``{"op": "register", "participant", "public_key"}``: a participant's key (a newer replaces).
- ``{"op": "aggregator", "term", "node", "public_key"}``: a new leader announces itself;
  refused unless its term is newer than the current record's.
- ``{"op": "round", "round", "term", "node", "model", ...}``: a FedAvg result. Invariant: it
  is applied only if ``round == self.round + 1`` and it comes from the current aggregator
  record, so the round number never goes back, never skips, and a round is committed once
  even if an old leader's proposal and a new leader's both reach the log.

Listeners (the node's coordinator) are told of every applied change, on the event loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any, TypeGuard

APP_NAME = "fl"
"""The application's name: its commands' key in the log, its requests' ``fl_`` prefix."""
STATE_FORMAT = 1
MAX_ROUND_RECORDS = 256
MAX_PARTICIPANTS = 10_000
MAX_NAME_CHARS = 128
MAX_PUBLIC_KEY_BYTES = 1024
MAX_MODEL_BYTES = (8 << 20) + 4096
MAX_LISTED_PARTICIPANTS = 64
"""A round record names its contributors up to this many; beyond, only the count is kept."""
DEFAULT_STATUS_ROUNDS = 10
"""Round records a status carries unless asked for more (``fl_status``'s ``recent``)."""

Result = dict[str, Any]
Listener = Callable[[str], None]


def _refuse(message: str, code: str = "bad_request") -> Result:
    return {"error": code, "message": message}


def _name(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and 1 <= len(value) <= MAX_NAME_CHARS


def _count(value: Any) -> TypeGuard[int]:
    return type(value) is int and 0 <= value < 2**63


def key_id(der: bytes) -> str:
    """Same as ``crypto.key_id``, without needing the federated extra."""
    return hashlib.sha256(der).hexdigest()[:16]


class FederatedState:
    def __init__(self) -> None:
        self.spec: dict[str, Any] | None = None
        self.model: bytes | None = None
        """The global model (``model.encode_params``) of round ``round``."""
        self.round = 0
        self.rounds: list[dict[str, Any]] = []
        """The last records, oldest first. Records are replaced, never mutated in place, so
        a capture may share them."""
        self.participants: dict[str, bytes] = {}
        self.aggregator: dict[str, Any] | None = None
        self.aggregations: dict[str, int] = {}
        """node -> rounds it committed as aggregator."""
        self.listeners: list[Listener] = []

    # -- commands --------------------------------------------------------------------------
    def apply(self, payload: Any, clock_ms: int) -> Result:
        if not isinstance(payload, dict):
            return _refuse("a federated command is a map")
        op = payload.get("op")
        handler = _HANDLERS.get(op) if isinstance(op, str) else None
        if handler is None or not isinstance(op, str):
            return _refuse(f"unknown federated command {op!r}")
        result = handler(self, payload, clock_ms)
        if "error" not in result:
            for listener in self.listeners:
                listener(op)
        return result

    def _init(self, cmd: dict[str, Any], clock_ms: int) -> Result:
        spec, model = cmd.get("spec"), cmd.get("model")
        if not isinstance(spec, dict) or not isinstance(model, bytes):
            return _refuse("init needs a spec map and model bytes")
        if len(model) > MAX_MODEL_BYTES:
            return _refuse(f"a model is at most {MAX_MODEL_BYTES} bytes")
        if self.spec is not None:
            if spec != self.spec:
                return _refuse(f"the cluster already trains another model: {self.spec}",
                               "condition_failed")
            return {"round": self.round}
        self.spec, self.model, self.round = spec, model, 0
        self._record({"round": 0, "node": None, "term": None, "updates": 0, "examples": 0,
                      "participants": [], "started_ms": clock_ms, "committed_ms": clock_ms,
                      "model_bytes": len(model), "accuracy": None})
        return {"round": 0}

    def _register(self, cmd: dict[str, Any], clock_ms: int) -> Result:
        name, key = cmd.get("participant"), cmd.get("public_key")
        if not _name(name):
            return _refuse(f"participant must be a name of 1 to {MAX_NAME_CHARS} characters")
        if not isinstance(key, bytes) or not 0 < len(key) <= MAX_PUBLIC_KEY_BYTES:
            return _refuse(f"public_key must be at most {MAX_PUBLIC_KEY_BYTES} bytes")
        if name not in self.participants and len(self.participants) >= MAX_PARTICIPANTS:
            return _refuse(f"at most {MAX_PARTICIPANTS} participants", "condition_failed")
        self.participants[name] = key
        return {"participant": name, "key_id": key_id(key)}

    def _aggregator(self, cmd: dict[str, Any], clock_ms: int) -> Result:
        term, node, key = cmd.get("term"), cmd.get("node"), cmd.get("public_key")
        if not _count(term) or not _name(node) or not isinstance(key, bytes) \
                or len(key) > MAX_PUBLIC_KEY_BYTES:
            return _refuse("aggregator needs term, node and public_key")
        current = self.aggregator
        if current is not None and term <= current["term"]:
            return _refuse(f"aggregator of term {term} is not newer than term "
                           f"{current['term']}", "condition_failed")
        self.aggregator = {"term": term, "node": node, "round": self.round, "public_key": key,
                           "key_id": key_id(key), "since_ms": clock_ms}
        return {"term": term, "round": self.round}

    def _commit_round(self, cmd: dict[str, Any], clock_ms: int) -> Result:
        rnd, term, node = cmd.get("round"), cmd.get("term"), cmd.get("node")
        model, names, examples = cmd.get("model"), cmd.get("participants"), cmd.get("examples")
        if (not _count(rnd) or not _count(term) or not _name(node) or not isinstance(model, bytes)
                or len(model) > MAX_MODEL_BYTES or not isinstance(names, list | tuple)
                or not all(_name(n) for n in names) or not _count(examples)):
            return _refuse("round needs round, term, node, model, participants and examples")
        if self.model is None:
            return _refuse("no model to train yet", "condition_failed")
        agg = self.aggregator
        if agg is None or (agg["term"], agg["node"]) != (term, node):
            return _refuse(f"{node} (term {term}) is not the current aggregator",
                           "condition_failed")
        if rnd != self.round + 1:
            return _refuse(f"round {rnd} does not follow round {self.round}", "condition_failed")
        self._set_accuracy(cmd.get("evaluation"))
        started = cmd.get("started_ms")
        self.model, self.round = model, rnd
        self.aggregations[node] = self.aggregations.get(node, 0) + 1
        self._record({
            "round": rnd, "node": node, "term": term, "updates": len(names), "examples": examples,
            "participants": sorted(names)[:MAX_LISTED_PARTICIPANTS],
            "started_ms": started if _count(started) else clock_ms, "committed_ms": clock_ms,
            "model_bytes": len(model), "accuracy": None,
        })
        return {"round": rnd}

    def _set_accuracy(self, evaluation: Any) -> None:
        """``[round, correct, total]``: participants' test of that round's model, if known."""
        if (not isinstance(evaluation, list | tuple) or len(evaluation) != 3
                or not all(_count(v) for v in evaluation) or not 0 < evaluation[2]
                or evaluation[1] > evaluation[2]):
            return
        rnd, correct, total = evaluation
        for i, record in enumerate(self.rounds):
            if record["round"] == rnd:
                self.rounds[i] = {**record, "accuracy": correct / total, "evaluated": total}

    def _record(self, record: dict[str, Any]) -> None:
        self.rounds.append(record)
        if len(self.rounds) > MAX_ROUND_RECORDS:
            del self.rounds[0]

    # -- snapshots -------------------------------------------------------------------------
    def capture(self) -> dict[str, Any]:
        return {"v": STATE_FORMAT, "spec": self.spec, "model": self.model, "round": self.round,
                "rounds": list(self.rounds), "participants": dict(self.participants),
                "aggregator": self.aggregator, "aggregations": dict(self.aggregations)}

    def restore(self, state: Any) -> None:
        if not isinstance(state, dict) or state.get("v") != STATE_FORMAT:
            raise ValueError("unknown federated state format in the snapshot")
        self.spec = state["spec"]
        self.model = state["model"]
        self.round = state["round"]
        self.rounds = [dict(r) for r in state["rounds"]]
        self.participants = dict(state["participants"])
        self.aggregator = dict(state["aggregator"]) if state["aggregator"] is not None else None
        self.aggregations = dict(state["aggregations"])
        for listener in self.listeners:
            listener("restore")

    # -- reads -----------------------------------------------------------------------------
    def accuracy(self) -> dict[str, Any] | None:
        """The latest round whose model participants evaluated, and its test accuracy."""
        for record in reversed(self.rounds):
            if record.get("accuracy") is not None:
                return {"round": record["round"], "accuracy": record["accuracy"],
                        "evaluated": record.get("evaluated", 0)}
        return None

    def status(self, recent: int = DEFAULT_STATUS_ROUNDS) -> dict[str, Any]:
        """What ``raftctl fl status`` shows (and participants need), without the model."""
        return {
            "round": self.round,
            "spec": self.spec,
            "aggregator": dict(self.aggregator) if self.aggregator is not None else None,
            "participants": len(self.participants),
            "participant_names": sorted(self.participants)[:MAX_LISTED_PARTICIPANTS],
            "aggregations": dict(sorted(self.aggregations.items())),
            "accuracy": self.accuracy(),
            "rounds": self.rounds[-recent:] if recent > 0 else [],
        }


_HANDLERS: dict[str, Callable[[FederatedState, dict[str, Any], int], Result]] = {
    "init": FederatedState._init,
    "register": FederatedState._register,
    "aggregator": FederatedState._aggregator,
    "round": FederatedState._commit_round,
}

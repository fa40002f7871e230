"""FederatedApp: the node-local side of federated learning (a ``server.ServerApp``).

Theory of operation. Every node plays the same part; only the leader acts on it:

1. Keys. Each node keeps one fresh RSA key pair ready, generated in a worker thread ahead of
   time (a generation takes up to ~0.6 s; an election timeout is 150 ms). A new leader takes
   it, commits an aggregator record ``(term, node, round, public key)`` through the log, and
   starts generating the next pair: every term of leadership gets a key of its own.
2. Rounds. Once its record is applied (and with it everything earlier in the log) the
   leader opens round ``state.round + 1``: a worker thread decodes the global model the
   round's updates are checked against (an update arriving meanwhile waits for it), then
   each update is decrypted, parsed and validated in a worker thread against that model, at
   most one per participant. When
   ``min_updates`` arrived, or ``round_timeout_s`` passed since the round began with at least
   one update, FedAvg runs in a worker thread and the new model is proposed as a ``round``
   command; the state applies it only if it is the next round from the current aggregator.
   Updates live only in this leader's memory: if it dies, participants notice the new
   aggregator record and send theirs again, encrypted to the new key.
3. Rotation. After ``rotate_after_s`` the leader hands leadership to the next voter in sorted
   order (round-robin), at a round boundary when it can: never while averaging, nor while a
   membership change or another transfer is in flight. A target that does not take over
   (the transfer aborts after an election timeout) is skipped next time.
4. Reads. ``fl_status`` and ``fl_model`` are answered by the leader (followers redirect), so
   participants see the latest round; with no leader known a node answers ``fl_status`` from
   its own state, marked ``stale``. ``fl_status`` may wait (long poll) until the round or the
   aggregator changes. ``fl_model`` returns the global model sealed to the participant's
   registered key.

NB: all CPU work (keys, key parsing, model decoding, decryption, validation, averaging,
sealing) runs in this app's worker threads; the event loop only moves small maps and
bookkeeping. A worker's result comes back to the loop through its future's callback, which
first checks that what it was computed for (the round, the term) is still current: the
coordinator's state is only ever read and written on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from raftd.config import FederatedSection
from raftd.core import NO_NODE, ProposalDropped, StateRole
from raftd.core.raft import Raft
from raftd.federated import crypto
from raftd.federated.fedavg import (
    MAX_UPDATE_BYTES,
    InvalidUpdate,
    RoundBuffer,
    Update,
    decode_update,
    fedavg,
)
from raftd.federated.model import (
    ModelSpec,
    Params,
    ParamsError,
    decode_params,
    encode_params,
    initial_params,
)
from raftd.federated.state import (
    APP_NAME,
    DEFAULT_STATUS_ROUNDS,
    MAX_NAME_CHARS,
    FederatedState,
)
from raftd.wire.client import AppRequest, ErrorCode, error, redirect, result

if TYPE_CHECKING:
    from raftd.server import Server

log = logging.getLogger("raftd.federated")

Reply = Callable[[dict[str, Any]], None]

CHECK_INTERVAL_S = 0.05
"""How often the leader looks at its round deadline and rotation clock."""
MAX_WAIT_S = 2.0
"""Longest ``fl_status`` long poll: well below the client library's default 5 s deadline."""
MAX_STATUS_ROUNDS = 100
"""Most round records one ``fl_status`` returns (``recent``; DEFAULT_STATUS_ROUNDS if absent)."""
RETRY_ANNOUNCE_S = 0.1
MAX_SEALED_BYTES = MAX_UPDATE_BYTES + 1024
WORKERS = 2
"""Key generation may run beside decryption; the event loop keeps its own thread."""


def update_context(participant: str, round: int) -> bytes:
    """Associated data of a sealed update: it opens only as this participant's, this round."""
    return f"rafty-fl update {participant} {round}".encode()


def model_context(participant: str, round: int) -> bytes:
    """Associated data of the global model of ``round`` sealed for ``participant``."""
    return f"rafty-fl model {participant} {round}".encode()


class BadBody(ValueError):
    """A request's fields are wrong; answered as ``bad_request``."""


def _field(body: dict[str, Any], name: str, kind: type, *, optional: bool = False) -> Any:
    value = body.get(name)
    if value is None and optional:
        return None
    if type(value) is not kind and not (kind is float and type(value) is int):
        raise BadBody(f"field {name!r} must be a {kind.__name__}")
    return value


def _participant(body: dict[str, Any]) -> str:
    name: str = _field(body, "participant", str)
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise BadBody(f"participant must be 1 to {MAX_NAME_CHARS} characters")
    return name


def refused(reason: str, message: str, **fields: Any) -> dict[str, Any]:
    """A request understood but not acted on: ``reason`` tells the participant what to do."""
    return result(success=False, reason=reason, message=message, **fields)


@dataclass(slots=True)
class _Watcher:
    round: int
    term: int | None
    reply: Reply
    recent: int
    timer: asyncio.TimerHandle | None = None


@dataclass(frozen=True, slots=True)
class _Average:
    model: bytes
    examples: int
    participants: list[str]
    evaluation: list[int] | None


class FederatedApp:
    def __init__(self, server: Server, settings: FederatedSection, state: FederatedState) -> None:
        self.server = server
        self.settings = settings
        self.state = state
        self.id = server.id
        self.executor = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="fl")
        self.next_key: Future[tuple[RSAPrivateKey, bytes]] = self.executor.submit(_fresh_key)
        """Ready ahead of time for the next term this node leads (with its public DER)."""
        self.key: RSAPrivateKey | None = None
        """The private key of our applied aggregator record (None: not aggregating)."""
        self.key_id = ""
        self.term = 0
        """The term we lead in; 0 when not leader."""
        self.active = False
        """Our aggregator record is applied: updates are welcome."""
        self.buffer: RoundBuffer | None = None
        """The open round's updates; None until its reference model is decoded."""
        self.open_round = 0
        """The round we aggregate, ``state.round + 1`` (0: none), ready or still opening."""
        self.opening: asyncio.Future[Params] | None = None
        """The worker decoding the open round's reference model; None once ``buffer`` is set."""
        self.round_started = 0.0
        self.round_started_ms = 0
        self.leading_since = 0.0
        self.aggregating = False
        self.skip_past: str | None = None
        """The last rotation target that did not take over: the next rotation goes past it."""
        self.transfer_target: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.watchers: list[_Watcher] = []
        self.handlers: dict[str, Callable[[dict[str, Any], Reply], None]] = {
            "fl_status": self._status_request,
            "fl_register": self._register,
            "fl_init": self._init,
            "fl_model": self._model,
            "fl_update": self._update,
        }
        state.listeners.append(self._on_state_change)

    # -- ServerApp -------------------------------------------------------------------------
    def handle(self, request: AppRequest, reply: Reply) -> None:
        handler = self.handlers.get(request.kind)
        if handler is None:
            reply(error(ErrorCode.BAD_REQUEST, f"unknown request type {request.kind!r}; "
                        f"known: {', '.join(sorted(self.handlers))}"))
            return
        try:
            handler(request.body, reply)
        except BadBody as exc:
            reply(error(ErrorCode.BAD_REQUEST, f"{request.kind}: {exc}"))

    def long_polls(self, request: AppRequest) -> bool:
        return "wait_s" in request.body  # fl_status waiting for the next round or term

    def on_role_change(self, role: StateRole, term: int) -> None:
        self._stop_leading()
        if role is StateRole.LEADER:
            self.term = term
            self.skip_past = None
            loop = asyncio.get_running_loop()
            loop.create_task(self._announce(term))
            self.timer = loop.call_later(CHECK_INTERVAL_S, self._check)
        self._wake_watchers(force=True)

    def close(self) -> None:
        self._stop_leading()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # -- leadership ------------------------------------------------------------------------
    def _leading(self, term: int | None = None) -> bool:
        raft = self.server.node.raft
        return raft.role is StateRole.LEADER and (term is None or raft.current_term == term)

    def _stop_leading(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.active:
            log.info("no longer aggregating (term %d)", self.term)
        self.term = 0
        self.active = False
        self.key = None
        self.buffer = None
        self.open_round = 0
        self.opening = None
        self.aggregating = False
        self.transfer_target = None

    async def _announce(self, term: int) -> None:
        """Commit our aggregator record with the key pair prepared ahead of time."""
        key, der = await asyncio.wrap_future(self.next_key)
        if not self._leading(term) or self.active:
            return
        # The key is spent once proposed: the next term we lead gets a fresh one.
        self.next_key = self.executor.submit(_fresh_key)

        def committed(response: dict[str, Any]) -> None:
            if not self._leading(term):
                return
            if response.get("type") != "result":
                log.warning("aggregator record for term %d not committed (%s); retrying",
                            term, response.get("message") or response.get("type"))
                asyncio.get_running_loop().call_later(
                    RETRY_ANNOUNCE_S, lambda: asyncio.ensure_future(self._announce(term)))
                return
            self.key, self.key_id, self.active = key, crypto.key_id(der), True
            self.leading_since = asyncio.get_running_loop().time()
            self._new_round()
            log.info("aggregating from round %d (term %d, key %s)",
                     self.state.round + 1, term, self.key_id)
            self._wake_watchers(force=True)

        self.server.propose_app(APP_NAME, {"op": "aggregator", "term": term, "node": self.id,
                                           "public_key": der}, committed)

    def _check(self) -> None:
        """The leader's periodic look at its round deadline and its rotation clock."""
        self.timer = None
        if not self._leading(self.term or None):
            return
        raft = self.server.node.raft
        if self.transfer_target is not None and raft.lead_transferee == NO_NODE:
            log.warning("leadership transfer to %s did not complete; skipping it next time",
                        self.transfer_target)
            self.skip_past, self.transfer_target = self.transfer_target, None
        self._maybe_aggregate()
        self._maybe_rotate()
        self.timer = asyncio.get_running_loop().call_later(CHECK_INTERVAL_S, self._check)

    def _maybe_rotate(self) -> None:
        if not self.active or self.aggregating or self.transfer_target is not None:
            return
        now = asyncio.get_running_loop().time()
        elapsed = now - self.leading_since
        if elapsed < self.settings.rotate_after_s:
            return
        # Prefer a round boundary: updates sent to us would have to be sent again.
        if self.buffer is not None and len(self.buffer) + len(self.buffer.claimed) > 0 \
                and elapsed < self.settings.rotate_after_s + self.settings.round_timeout_s:
            return
        raft = self.server.node.raft
        if not leadership_may_move(raft):
            return  # wait for the transfer or membership change in flight
        target = next_voter(self.id, raft.voters, self.skip_past)
        if target is None:
            return
        try:
            self.server.transfer_leader(target)
        except ProposalDropped as exc:
            log.info("not rotating to %s: %s", target, exc)
            return
        self.transfer_target = target
        log.info("rotating: handing leadership to %s after %.1fs as aggregator (term %d)",
                 target, elapsed, self.term)

    # -- rounds ----------------------------------------------------------------------------
    def _on_state_change(self, op: str) -> None:
        """Called as each command applies (on every node, on the event loop)."""
        if self.active and self.state.model is not None \
                and self.open_round != self.state.round + 1:
            self._new_round()
            if op == "round":
                # Not from inside the apply: the Ready being handled must not change under it.
                asyncio.get_running_loop().call_soon(self._maybe_rotate)
        self._wake_watchers()

    def _new_round(self) -> None:
        """Open round ``state.round + 1`` once a worker decoded its reference model (the
        global model, up to 8 MiB: too much work for the event loop)."""
        loop = asyncio.get_running_loop()
        model = self.state.model
        self.aggregating = False
        self.buffer = None
        self.round_started = loop.time()
        self.round_started_ms = int(time.time() * 1000)  # informational, in the round record
        if model is None:
            self.open_round, self.opening = 0, None
            return
        self.open_round = self.state.round + 1
        self.opening = loop.run_in_executor(self.executor, decode_params, model)
        self.opening.add_done_callback(self._round_opened)

    def _round_opened(self, future: asyncio.Future[Params]) -> None:
        if future is not self.opening:
            return  # a later round opened, or we stopped aggregating, meanwhile
        self.opening = None
        try:
            reference = future.result()
        except ParamsError as exc:
            log.error("cannot open round %d: the global model does not decode: %s",
                      self.open_round, exc)
            return
        self.buffer = RoundBuffer(self.open_round, reference)

    def _maybe_aggregate(self) -> None:
        buffer = self.buffer
        if not self.active or self.aggregating or buffer is None or not len(buffer):
            return
        if self.server.node.raft.lead_transferee != NO_NODE:
            return  # proposals are refused during a transfer
        loop = asyncio.get_running_loop()
        timed_out = loop.time() - self.round_started >= self.settings.round_timeout_s
        if len(buffer) < self.settings.min_updates and not timed_out:
            return
        self.aggregating = True
        term, started_ms = self.term, self.round_started_ms
        future = loop.run_in_executor(self.executor, _average, buffer.ordered())
        future.add_done_callback(lambda f: self._averaged(f, buffer, term, started_ms))

    def _averaged(self, future: asyncio.Future[_Average], buffer: RoundBuffer, term: int,
                  started_ms: int) -> None:
        if buffer is not self.buffer or not self._leading(term):
            return
        if future.exception() is not None:
            log.error("averaging round %d failed: %s", buffer.round, future.exception())
            self.aggregating = False
            return
        avg = future.result()
        command = {"op": "round", "round": buffer.round, "term": term, "node": self.id,
                   "model": avg.model, "participants": avg.participants,
                   "examples": avg.examples, "evaluation": avg.evaluation,
                   "started_ms": started_ms}

        def committed(response: dict[str, Any]) -> None:
            if response.get("type") == "result":
                log.info("round %d committed: %d updates, %d examples", buffer.round,
                         len(avg.participants), avg.examples)
                return
            log.warning("round %d not committed: %s", buffer.round,
                        response.get("message") or response.get("type"))
            if buffer is self.buffer:
                self.aggregating = False  # still our round: average again at the next check

        self.server.propose_app(APP_NAME, command, committed)

    # -- requests --------------------------------------------------------------------------
    def _redirected(self, reply: Reply) -> bool:
        """Answer a redirect unless we lead: reads and writes alike go to the aggregator."""
        raft = self.server.node.raft
        if raft.role is StateRole.LEADER:
            return False
        reply(redirect(raft.leader_id or None))
        return True

    def _status(self, recent: int) -> dict[str, Any]:
        raft = self.server.node.raft
        leading = raft.role is StateRole.LEADER
        buffer = self.buffer if self.active else None
        return result(
            **self.state.status(recent),
            node=self.id,
            leader=raft.leader_id or None,
            term=raft.current_term,
            stale=not leading,
            accepting=self.active and not self.aggregating,
            updates=len(buffer) if buffer is not None else None,
            min_updates=self.settings.min_updates,
            round_timeout_s=self.settings.round_timeout_s,
            rotate_after_s=self.settings.rotate_after_s,
        )

    def _status_request(self, body: dict[str, Any], reply: Reply) -> None:
        wait = _field(body, "wait_s", float, optional=True)
        recent = _field(body, "recent", int, optional=True)
        if recent is None:
            recent = DEFAULT_STATUS_ROUNDS
        elif not 0 <= recent <= MAX_STATUS_ROUNDS:
            raise BadBody(f"recent must be 0 to {MAX_STATUS_ROUNDS}")
        raft = self.server.node.raft
        if raft.role is not StateRole.LEADER:
            if raft.leader_id:
                reply(redirect(raft.leader_id))
            else:
                reply(self._status(recent))  # no leader: our own view, marked stale
            return
        if wait is None or wait <= 0:
            reply(self._status(recent))
            return
        watcher = _Watcher(_field(body, "round", int), _field(body, "term", int, optional=True),
                           reply, recent)
        if self._changed(watcher):
            reply(self._status(recent))
            return
        watcher.timer = asyncio.get_running_loop().call_later(
            min(wait, MAX_WAIT_S), self._release, watcher)
        self.watchers.append(watcher)

    def _changed(self, watcher: _Watcher) -> bool:
        agg = self.state.aggregator
        return (self.state.round != watcher.round
                or (agg["term"] if agg is not None else None) != watcher.term)

    def _release(self, watcher: _Watcher) -> None:
        if watcher in self.watchers:
            self.watchers.remove(watcher)
            watcher.reply(self._status(watcher.recent))

    def _wake_watchers(self, *, force: bool = False) -> None:
        for watcher in [w for w in self.watchers if force or self._changed(w)]:
            if watcher.timer is not None:
                watcher.timer.cancel()
            self._release(watcher)

    def _register(self, body: dict[str, Any], reply: Reply) -> None:
        name = _participant(body)
        der = _field(body, "public_key", bytes)
        future = asyncio.get_running_loop().run_in_executor(self.executor, crypto.load_public,
                                                            der)
        future.add_done_callback(lambda f: self._key_checked(f, name, der, reply))

    def _key_checked(self, future: asyncio.Future[Any], name: str, der: bytes,
                     reply: Reply) -> None:
        try:
            future.result()
        except crypto.CryptoError as exc:
            reply(error(ErrorCode.BAD_REQUEST, f"fl_register: {exc}"))
            return
        if not self._redirected(reply):
            self.server.propose_app(APP_NAME, {"op": "register", "participant": name,
                                               "public_key": der}, reply)

    def _init(self, body: dict[str, Any], reply: Reply) -> None:
        try:
            spec = ModelSpec.from_dict(_field(body, "spec", dict))
        except (TypeError, ValueError) as exc:
            raise BadBody(str(exc)) from None
        if self._redirected(reply):
            return
        if self.state.spec == spec.to_dict():
            reply(result(round=self.state.round))
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self.executor, lambda: encode_params(initial_params(spec)))

        def built(f: asyncio.Future[bytes]) -> None:
            model = f.result()
            if len(model) > self.server.max_value_bytes:
                reply(error(ErrorCode.TOO_LARGE, f"a model of {len(model)} bytes does not fit "
                            "in one log entry; raise [raft] max_entry_bytes or shrink it"))
                return
            self.server.propose_app(APP_NAME, {"op": "init", "spec": spec.to_dict(),
                                               "model": model}, reply)

        future.add_done_callback(built)

    def _model(self, body: dict[str, Any], reply: Reply) -> None:
        name = _participant(body)
        if self._redirected(reply):
            return
        der = self.state.participants.get(name)
        if der is None:
            reply(refused("unregistered", f"{name} has not registered a public key"))
            return
        model, rnd, spec = self.state.model, self.state.round, self.state.spec
        if model is None:
            reply(refused("no_model", "no model yet: a participant sends fl_init first"))
            return

        def sealed() -> bytes:
            return crypto.seal(crypto.load_public(der), model, model_context(name, rnd))

        future = asyncio.get_running_loop().run_in_executor(self.executor, sealed)
        future.add_done_callback(lambda f: reply(result(round=rnd, spec=spec, sealed=f.result())))

    def _update(self, body: dict[str, Any], reply: Reply) -> None:
        name = _participant(body)
        rnd = _field(body, "round", int)
        key_id = _field(body, "key_id", str)
        sealed = _field(body, "sealed", bytes)
        self._offer(name, rnd, key_id, sealed, reply)

    def _offer(self, name: str, rnd: int, key_id: str, sealed: bytes, reply: Reply) -> None:
        """Take a well-formed update in, or refuse it with a reason."""
        if self._redirected(reply):
            return
        if not self.active or self.key is None:
            reply(refused("no_aggregator", "this leader has not committed its aggregator "
                          "record yet"))
            return
        if self.opening is not None:
            # The round opens as soon as its model is decoded: decide then, in arrival order.
            self.opening.add_done_callback(
                lambda _: self._offer(name, rnd, key_id, sealed, reply))
            return
        buffer = self.buffer
        if buffer is None:
            reply(refused("no_model", "no model yet"))
            return
        if self.server.node.raft.lead_transferee != NO_NODE:
            reply(refused("rotating", "leadership is moving to the next aggregator"))
            return
        if key_id != self.key_id:
            reply(refused("stale_key", f"sealed to key {key_id}; the aggregator's is "
                          f"{self.key_id}", key_id=self.key_id))
            return
        if rnd != buffer.round:
            reply(refused("wrong_round", f"this is round {buffer.round}", round=self.state.round))
            return
        if name not in self.state.participants:
            reply(refused("unregistered", f"{name} has not registered a public key"))
            return
        if self.aggregating:
            reply(refused("round_closed", f"round {rnd} is being averaged"))
            return
        if len(sealed) > MAX_SEALED_BYTES:
            reply(refused("too_large", f"update of {len(sealed)} bytes exceeds "
                          f"{MAX_SEALED_BYTES}"))
            return
        try:
            buffer.claim(name)
        except InvalidUpdate as exc:
            reply(refused(exc.reason, str(exc)))
            return
        key, term = self.key, self.term
        future = asyncio.get_running_loop().run_in_executor(
            self.executor, _open_update, key, sealed, name, rnd, buffer.reference)
        future.add_done_callback(lambda f: self._opened(f, buffer, term, name, reply))

    def _opened(self, future: asyncio.Future[Update], buffer: RoundBuffer, term: int,
                name: str, reply: Reply) -> None:
        if buffer is not self.buffer or not self._leading(term):
            reply(refused("not_aggregator", "the round or the aggregator changed meanwhile"))
            return
        exc = future.exception()
        if exc is not None:
            buffer.release(name)
            reason = exc.reason if isinstance(exc, InvalidUpdate) else "undecryptable"
            log.info("refused %s's update for round %d: %s", name, buffer.round, exc)
            reply(refused(reason, str(exc)))
            return
        if self.aggregating:
            buffer.release(name)
            reply(refused("round_closed", f"round {buffer.round} is being averaged"))
            return
        buffer.add(future.result())
        reply(result(round=buffer.round, updates=len(buffer),
                     min_updates=self.settings.min_updates))
        self._maybe_aggregate()


def _open_update(key: RSAPrivateKey, sealed: bytes, name: str, rnd: int,
                 reference: Params) -> Update:
    """Decrypt and validate one update (in a worker thread)."""
    plaintext = crypto.open_sealed(key, sealed, update_context(name, rnd))
    return decode_update(plaintext, participant=name, round=rnd, reference=reference)


def _fresh_key() -> tuple[RSAPrivateKey, bytes]:
    """A new key pair and its public DER (in a worker thread: generation takes ~0.6 s)."""
    key = crypto.generate_private_key()
    return key, crypto.public_der(key)


def _average(updates: list[Update]) -> _Average:
    """FedAvg of a round's updates and the sum of their evaluations (in a worker thread)."""
    evaluated = [u.evaluation for u in updates if u.evaluation is not None]
    evaluation = None
    if evaluated:
        evaluation = [updates[0].round - 1, sum(c for c, _ in evaluated),
                      sum(t for _, t in evaluated)]
    return _Average(encode_params(fedavg(updates)), sum(u.num_examples for u in updates),
                    [u.participant for u in updates], evaluation)


def leadership_may_move(raft: Raft) -> bool:
    """Whether a rotation may start now: no leadership transfer (ours or an operator's) and
    no membership change (proposed, not yet applied here) is in flight."""
    return raft.lead_transferee == NO_NODE and raft.pending_conf_index <= raft.log.applied_index


def next_voter(me: str, voters: tuple[str, ...] | list[str], skip_past: str | None) -> str | None:
    """The voter after ``me`` in sorted order, cyclically (after ``skip_past`` if it failed)."""
    ordered = sorted(voters)
    if me not in ordered or len(ordered) < 2:
        return None
    i = ordered.index(me)
    others = ordered[i + 1:] + ordered[:i]
    start = others.index(skip_past) + 1 if skip_past in others else 0
    return others[start % len(others)]

"""Membership changes in the simulation: an operator who grows, shrinks and reshapes the cluster.

Theory of operation. ``Operator`` plays the human with ``raftctl``: now and then (``rate`` per
tick, one procedure at a time, as an operator follows a runbook) it starts one of the
procedures the README documents, each a list of steps run in order:

- ``add`` / ``add-learner``: start a blank node under a new id (its config lists the initial
  voters, as the README's example does, not itself, so it waits to be reached), then
  ``add-node`` it (auto-promoted once caught up, or pinned as a learner);
- ``promote``: ``promote`` a learner by hand (it may race the automatic promotion);
- ``remove``: ``remove-node`` a voter or learner other than the leader, then stop it or leave it
  running (a removed node that keeps running must not disrupt anyone);
- ``remove-leader``: ``remove-node`` the leader itself, which hands leadership over;
- ``replace``: add a new node, wait (bounded) for its automatic promotion, promote it by hand
  if it did not happen, then remove an old voter (possibly the leader);
- ``rejoin``: the README's recovery of a node under the same id: remove it, stop it, wipe its
  data dir, start it blank (same config file), add it again. Not while that would make two
  initial voters blank at once (``Simulator.may_blank``): they could bootstrap a new cluster.

A change step behaves like ``raftctl``: it sends the request to the node it believes leads
(first any running node), follows redirects, retries the retryable answers
(``conf_change_in_progress`` is expected: an automatic promotion may be in flight) and its
own timeouts (the node may have died with the request), and gives up after ``MAX_ATTEMPTS``,
abandoning the rest of the procedure. ``bad_request`` is the server refusing a change that does
not apply; it counts as done when the cluster already has the shape asked for (an earlier
attempt committed but its answer was lost, or the learner was promoted automatically).

What an operator must not do is not done: the operator reads the configuration from the
committed log (``raftctl status``), never removes voters below ``min_voters``, wipes only a
node that is no longer a member, never removes anyone while a member that lost its disk is
still catching up (the remaining voters could then be a majority without data), and never
starts a second procedure while one runs. Everything
is drawn from the operator's own stream, so the run stays a function of the seed.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from raftd.core import Config, ConfState
from raftd.core.confchange import ConfChange, ConfChangeType
from tests.sim.checker import Violation, members

if TYPE_CHECKING:
    from tests.sim.simulator import Simulator

PROCEDURES = ("add", "add-learner", "promote", "remove", "remove-leader", "replace", "rejoin")
MAX_NODE_IDS = 9
"""n1..n9: node ids keep one length, so the datagram header (and the batch size) stays put."""
MAX_ATTEMPTS = 25
AWAIT_PROMOTION_TICKS = 400
DEFAULT_PROMOTE_LAG = Config(id="-").promote_lag_entries


@dataclass(frozen=True, slots=True)
class MembershipOptions:
    """The membership part of a scenario; the default is a seed without membership changes."""

    procedures: tuple[str, ...] = ()
    rate: float = 0.0
    """Per tick, the chance that an idle operator starts a procedure."""
    spares: int = 0
    """Node ids beyond the initial ones that may join (n{nodes+1}...)."""
    keep_removed: float = 0.0
    """Chance that a removed node is left running rather than stopped."""
    promote_lag_entries: int = DEFAULT_PROMOTE_LAG
    """``[raft] promote_lag_entries``: 0 promotes a learner only when fully caught up."""
    min_voters: int = 1


NO_MEMBERSHIP = MembershipOptions()


def draw_membership(rng: random.Random, nodes: int) -> MembershipOptions:
    """Membership changes are on in about two seeds of three, with their own mix of procedures."""
    if rng.random() < 0.35:
        return NO_MEMBERSHIP
    procedures = tuple(p for p in PROCEDURES if rng.random() < 0.6) or (rng.choice(PROCEDURES),)
    return MembershipOptions(
        procedures=procedures,
        rate=rng.choice((0.003, 0.008, 0.02)),
        spares=rng.randint(1, MAX_NODE_IDS - nodes) if nodes < 5 else rng.randint(1, 4),
        keep_removed=rng.random(),
        promote_lag_entries=rng.choice((0, 10, DEFAULT_PROMOTE_LAG)),
        min_voters=min(nodes, rng.choice((1, 2, 3))),
    )


@dataclass(frozen=True, slots=True)
class ChangeToken:
    """The token of an operator's membership request."""

    number: int


@dataclass(frozen=True, slots=True)
class Start:
    """Start the node's process (blank if its data dir is)."""

    node: str


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the node's process for good (until a later step starts it again)."""

    node: str


@dataclass(frozen=True, slots=True)
class Wipe:
    """Empty the stopped node's data dir; refused (the procedure ends) while it is a member."""

    node: str


@dataclass(frozen=True, slots=True)
class Change:
    cc: ConfChange
    to: str | None = None
    """The node to ask first (the leader, to remove it); otherwise any running node."""


@dataclass(frozen=True, slots=True)
class AwaitVoter:
    node: str
    ticks: int


Step = Start | Stop | Wipe | Change | AwaitVoter


@dataclass(slots=True)
class Attempt:
    """The change step in progress: which request is out, where, until when."""

    token: ChangeToken | None = None
    node: str | None = None
    deadline: int = 0
    send_at: int = 0
    attempts: int = 0
    hint: str | None = None


class Operator:
    def __init__(
        self,
        sim: Simulator,
        options: MembershipOptions,
        rng: random.Random,
        trace: Callable[[str], None] | None,
    ) -> None:
        self.options = options
        self._sim = sim
        self._rng = rng
        self._trace = trace
        self.job: deque[Step] = deque()
        self.procedure = ""
        self._attempt = Attempt()
        self._await_until = 0
        self._requests = 0
        self.started: dict[str, int] = {}
        """Procedures started, by name."""
        self.completed = 0
        self.abandoned = 0
        self.abandoned_removals: set[str] = set()
        """Voters whose remove-node was sent and then given up on: the entry may sit in a log
        and commit much later, so for disk loss it counts as a removal in progress."""
        self.abandoned_promotions: set[str] = set()
        """Learners whose promote was sent and then given up on (the same way)."""
        self.answers: dict[str, int] = {}
        """Answers to change requests, by kind (``ok``, ``redirect`` or the error code)."""

    # -- one tick ----------------------------------------------------------------------------
    def tick(self, now: int) -> None:
        if not self.job:
            rate = self.options.rate
            if not rate or self._rng.random() >= rate or not self._plan():
                return
        while self.job and self._run_step(self.job[0], now):
            self.job.popleft()
            if not self.job:
                self.completed += 1
                self._emit(f"operator: {self.procedure} done")

    def _run_step(self, step: Step, now: int) -> bool:
        """Advance ``step``; True once it is done."""
        sim = self._sim
        if isinstance(step, Start):
            self._emit(f"operator: start {step.node}")
            sim.start_member(step.node)
            return True
        if isinstance(step, Stop):
            self._emit(f"operator: stop {step.node}")
            sim.retire(step.node)
            return True
        if isinstance(step, Wipe):
            if step.node in members(sim.checker.config):
                self._abandon(f"{step.node} is still a member: its data dir stays")
                return False
            if not sim.may_blank(sim.nodes[step.node]):
                self._abandon(f"{step.node} would be a second blank initial voter")
                return False
            sim.wipe(sim.nodes[step.node])
            return True
        if isinstance(step, AwaitVoter):
            if not self._await_until:
                self._await_until = now + step.ticks
            if step.node in sim.checker.config.voters or now >= self._await_until:
                self._await_until = 0
                return True
            return False
        return self._run_change(step, now)

    def _run_change(self, step: Change, now: int) -> bool:
        attempt = self._attempt
        if attempt.token is not None:
            if now < attempt.deadline:
                return False
            self._emit(f"operator: no answer from {attempt.node}")
            attempt.token = None
            attempt.hint = None
            attempt.send_at = now
        if now < attempt.send_at:
            return False
        if step.cc.type is ConfChangeType.REMOVE and self._sim.recovering_member():
            attempt.send_at = now + 10  # wait until the lost disk is caught up again
            return False
        if attempt.attempts >= MAX_ATTEMPTS:
            self._abandon(f"{_describe(step.cc)} not done after {MAX_ATTEMPTS} attempts")
            return False
        sim = self._sim
        target = step.to if attempt.attempts == 0 and step.to is not None else attempt.hint
        if target is None or not sim.is_up(target):
            up = [n for n in sim.nodes_ids if sim.is_up(n)]
            if not up:
                attempt.send_at = now + 1
                return False
            target = self._rng.choice(up)
        self._requests += 1
        attempt.attempts += 1
        attempt.token = ChangeToken(self._requests)
        attempt.node = target
        attempt.deadline = now + sim.options.request_timeout_ticks + 20
        self._emit(f"operator -> {target}: {_describe(step.cc)} (attempt {attempt.attempts})")
        sim.submit_conf_change(target, attempt.token, step.cc)
        return False

    def removing_a_voter(self) -> bool:
        """Whether a remove-node of a voter was sent and may still commit."""
        voters = self._sim.checker.config.voters
        return (self._sent(ConfChangeType.REMOVE) in voters
                or any(node in voters for node in self.abandoned_removals))

    def promoting(self, node: str) -> bool:
        """Whether a promote of ``node`` was sent and may still commit."""
        return self._sent(ConfChangeType.PROMOTE) == node or node in self.abandoned_promotions

    def _sent(self, kind: ConfChangeType) -> str | None:
        """The node of the change of ``kind`` being sent (at least once), if the job is at one."""
        step = self.job[0] if self.job else None
        if isinstance(step, Change) and step.cc.type is kind and self._attempt.attempts > 0:
            return step.cc.node_id
        return None

    # -- answers -----------------------------------------------------------------------------
    def on_response(self, token: ChangeToken, response: dict[str, Any]) -> None:
        attempt = self._attempt
        if token != attempt.token or not self.job:
            return  # the answer to an attempt the operator already gave up on
        step = self.job[0]
        assert isinstance(step, Change)
        now = self._sim.now
        kind = response["type"]
        code = "ok" if kind == "result" else kind if kind == "redirect" else response["code"]
        self.answers[code] = self.answers.get(code, 0) + 1
        self._emit(f"{attempt.node} -> operator: {_describe(step.cc)}: {code}"
                   + (f" {response['leader']}" if kind == "redirect" else ""))
        attempt.token = None
        if kind == "result":
            if response.get("success") is not True:
                raise Violation(f"{_describe(step.cc)} answered {response}")
            self._step_done()
        elif kind == "redirect":
            attempt.hint = response["leader"]
            attempt.send_at = now + (1 if attempt.hint else self._rng.randint(5, 20))
        elif code == "bad_request":
            if _holds(step.cc, self._sim.checker.config):
                self._step_done()
            else:
                self._abandon(f"the cluster refused {_describe(step.cc)}: {response['message']}")
        elif response["retryable"]:
            attempt.hint = attempt.node if code == "conf_change_in_progress" else None
            attempt.send_at = now + self._rng.randint(5, 30)
        else:
            raise Violation(f"{_describe(step.cc)} answered {response}")

    def _step_done(self) -> None:
        """The answer arrives inside the node's turn: the next step waits for the next tick
        (stopping that very node now would pull its process out from under the turn)."""
        self._attempt = Attempt(hint=self._attempt.node)  # the next change goes there first
        self.job.popleft()
        if not self.job:
            self.completed += 1
            self._emit(f"operator: {self.procedure} done")

    def _abandon(self, why: str) -> None:
        self.abandoned += 1
        removal = self._sent(ConfChangeType.REMOVE)
        if removal is not None:
            self.abandoned_removals.add(removal)
        promotion = self._sent(ConfChangeType.PROMOTE)
        if promotion is not None:
            self.abandoned_promotions.add(promotion)
        self._emit(f"operator: {self.procedure} abandoned: {why}")
        self.job.clear()
        self._attempt = Attempt()
        self._await_until = 0

    # -- planning ----------------------------------------------------------------------------
    def _plan(self) -> bool:
        """Start a procedure that makes sense for the cluster's current shape."""
        sim = self._sim
        rng = self._rng
        opts = self.options
        conf = sim.checker.config
        leader = sim.leader()
        leader_id = leader.node.raft.id if leader is not None else None
        voters, learners = conf.voters, conf.learners
        removable_voter = len(voters) > opts.min_voters
        spare = next((n for n in sim.spare_ids if n not in sim.nodes), None)
        name = rng.choice(opts.procedures)
        job: list[Step]
        if name in ("add", "add-learner"):
            if spare is None:
                return False
            job = [Start(spare), Change(_add(spare, auto=name == "add"))]
        elif name == "promote":
            if not learners:
                return False
            job = [Change(ConfChange(type=ConfChangeType.PROMOTE, node_id=rng.choice(learners)))]
        elif name == "remove":
            candidates = [m for m in members(conf) if m != leader_id
                          and (m in learners or removable_voter)]
            if not candidates:
                return False
            node = rng.choice(candidates)
            job = [Change(_remove(node)), *self._maybe_stop(node)]
        elif name == "remove-leader":
            if leader_id is None or leader_id not in voters or not removable_voter:
                return False
            job = [Change(_remove(leader_id), to=leader_id), *self._maybe_stop(leader_id)]
        elif name == "replace":
            if spare is None:
                return False
            old = rng.choice(voters)
            job = [Start(spare), Change(_add(spare, auto=True)),
                   AwaitVoter(spare, AWAIT_PROMOTION_TICKS),
                   Change(ConfChange(type=ConfChangeType.PROMOTE, node_id=spare)),
                   Change(_remove(old), to=old if old == leader_id else None),
                   *self._maybe_stop(old)]
        else:  # rejoin
            candidates = [m for m in members(conf) if m != leader_id
                          and (m in learners or removable_voter)
                          and sim.may_blank(sim.nodes[m])]
            if not candidates:
                return False
            node = rng.choice(candidates)
            job = [Change(_remove(node)), Stop(node), Wipe(node), Start(node),
                   Change(_add(node, auto=rng.random() < 0.8))]
        self.start(name, job)
        return True

    def start(self, name: str, job: list[Step]) -> None:
        """Begin procedure ``name`` (a scenario test hands its own steps here)."""
        if self.job:
            raise RuntimeError(f"{self.procedure} is still running")
        self.procedure = name
        self.started[name] = self.started.get(name, 0) + 1
        self._emit(f"operator: {name}: " + "; ".join(_describe_step(s) for s in job))
        self.job.extend(job)

    def _maybe_stop(self, node: str) -> list[Step]:
        return [] if self._rng.random() < self.options.keep_removed else [Stop(node)]

    def _emit(self, line: str) -> None:
        if self._trace is not None:
            self._trace(line)


def _add(node: str, *, auto: bool) -> ConfChange:
    return ConfChange(type=ConfChangeType.ADD_LEARNER, node_id=node, auto_promote=auto)


def _remove(node: str) -> ConfChange:
    return ConfChange(type=ConfChangeType.REMOVE, node_id=node)


def _holds(cc: ConfChange, conf: ConfState) -> bool:
    """Whether the committed configuration already has the shape ``cc`` asks for."""
    if cc.type is ConfChangeType.ADD_LEARNER:
        return cc.node_id in members(conf)
    if cc.type is ConfChangeType.PROMOTE:
        return cc.node_id in conf.voters
    return cc.node_id not in members(conf)


def _describe(cc: ConfChange) -> str:
    if cc.type is ConfChangeType.ADD_LEARNER:
        return f"add-node {cc.node_id}" + ("" if cc.auto_promote else " --learner")
    return f"{'promote' if cc.type is ConfChangeType.PROMOTE else 'remove-node'} {cc.node_id}"


def _describe_step(step: Step) -> str:
    if isinstance(step, Change):
        return _describe(step.cc)
    if isinstance(step, AwaitVoter):
        return f"await {step.node} a voter"
    return f"{type(step).__name__.lower()} {step.node}"

"""RawNode: the one class the runtime touches (etcd-io/raft's RawNode, without goroutines).

The runtime loop is::

    feed inputs: tick() / step(msg) / propose(data) / read_index(ctx)
    while node.has_ready():
        rd = node.ready()
        persist rd.hard_state (durably); send rd.messages; write rd.entries
        fsync if rd.must_sync; send rd.after_persist
        apply rd.committed_entries; serve rd.read_states
        node.advance(rd)

``advance`` steps our own after-persist messages back into the core: that is how a leader's
own acknowledgement (and a candidate's own vote) counts only once it is durable.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftd.core.confchange import ConfChange
from raftd.core.config import Config
from raftd.core.errors import InvariantError
from raftd.core.messages import Message
from raftd.core.raft import Raft
from raftd.core.ready import Ready
from raftd.core.state import ConfState, HardState, SoftState
from raftd.core.storage import Storage
from raftd.core.types import Index, NodeId, StateRole, Term


@dataclass(frozen=True, slots=True)
class Status:
    id: NodeId
    role: StateRole
    term: Term
    voted_for: NodeId
    leader_id: NodeId
    commit_index: Index
    applied_index: Index
    last_index: Index
    last_term: Term
    first_index: Index
    voters: tuple[NodeId, ...]
    learners: tuple[NodeId, ...]
    catching_up: bool
    probing: bool
    lead_transferee: NodeId
    match_index: dict[NodeId, Index]


class RawNode:
    def __init__(self, config: Config, storage: Storage) -> None:
        self.raft = Raft(config, storage)
        hard_state, _ = storage.initial_state()
        self._prev_hard: HardState | None = hard_state
        self._prev_soft: SoftState = self.raft.soft_state()
        self._self_msgs: list[Message] = []
        self._in_flight = False

    # -- inputs ----------------------------------------------------------------------------
    def tick(self) -> None:
        self.raft.tick()

    def step(self, msg: Message) -> None:
        if msg.src == self.raft.id:
            return  # our own messages only come back through advance()
        self.raft.step(msg)

    def campaign(self) -> None:
        self.raft.campaign(pre_vote=self.raft.cfg.pre_vote)

    def propose(self, data: bytes) -> Index:
        return self.raft.propose(data)

    def read_index(self, context: int) -> None:
        self.raft.read_index(context)

    def transfer_leader(self, to: NodeId) -> None:
        self.raft.transfer_leader(to)

    def propose_conf_change(self, cc: ConfChange) -> Index:
        return self.raft.propose_conf_change(cc)

    def apply_conf_change(self, cc: ConfChange, index: Index) -> ConfState:
        return self.raft.apply_conf_change(cc, index)

    def report_snapshot(self, peer: NodeId, *, ok: bool) -> None:
        self.raft.report_snapshot(peer, ok=ok)

    # -- outputs ---------------------------------------------------------------------------
    def _hard_state_changed(self) -> HardState | None:
        if self.raft.probing:
            return None  # nothing is decided yet; a blank dir stays blank
        hs = self.raft.hard_state()
        return hs if hs != self._prev_hard else None

    def has_ready(self) -> bool:
        r = self.raft
        r.flush()
        return bool(
            r.msgs
            or r.msgs_after_persist
            or r.log.unstable
            or r.log.pending_snapshot is not None
            or r.read_states
            or r.dropped_reads
            or r.log.commit_index > r.log.applied_index
            or r.soft_state() != self._prev_soft
            or self._hard_state_changed() is not None
        )

    def ready(self) -> Ready:
        if self._in_flight:
            raise InvariantError("ready() called again before advance()")
        r = self.raft
        r.flush()
        soft = r.soft_state()
        hard = self._hard_state_changed()
        entries = tuple(r.log.unstable)
        after = [m for m in r.msgs_after_persist if m.dst != r.id]
        self._self_msgs = [m for m in r.msgs_after_persist if m.dst == r.id]
        rd = Ready(
            soft_state=soft if soft != self._prev_soft else None,
            hard_state=hard,
            snapshot=r.log.pending_snapshot,
            entries=entries,
            messages=tuple(r.msgs),
            after_persist=tuple(after),
            committed_entries=tuple(r.log.next_committed_entries(r.cfg.max_apply_bytes)),
            read_states=tuple(r.read_states),
            dropped_reads=tuple(r.dropped_reads),
            must_sync=bool(entries) or hard is not None or r.log.pending_snapshot is not None,
        )
        self._prev_soft = soft
        r.msgs = []
        r.msgs_after_persist = []
        r.read_states = []
        r.dropped_reads = []
        self._in_flight = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The runtime has done everything ``rd`` asked for."""
        self._in_flight = False
        r = self.raft
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            r.log.stable_snapshot_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            r.log.applied_to(rd.committed_entries[-1].index)
            r.on_applied()
        self_msgs, self._self_msgs = self._self_msgs, []
        for m in self_msgs:
            r.step(m)

    def status(self) -> Status:
        r = self.raft
        return Status(
            id=r.id,
            role=r.role,
            term=r.current_term,
            voted_for=r.voted_for,
            leader_id=r.leader_id,
            commit_index=r.log.commit_index,
            applied_index=r.log.applied_index,
            last_index=r.log.last_index(),
            last_term=r.log.last_term(),
            first_index=r.log.first_index(),
            voters=r.voters,
            learners=r.learners,
            catching_up=r.catching_up,
            probing=r.probing,
            lead_transferee=r.lead_transferee,
            match_index={v: pr.match_index for v, pr in r.progress.items()},
        )

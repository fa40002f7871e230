"""Raft: the protocol state machine of one node (Raft paper §5, thesis §3, §6.4, §9.6).

Theory of operation. ``Raft`` reacts to three inputs: ``tick()`` (time passed), ``step(msg)``
(a peer message, or one of our own delayed messages) and the leader-side requests
``propose()``/``read_index()``. It never performs I/O; it queues:

- ``msgs``: messages the runtime may send at once;
- ``msgs_after_persist``: messages that vouch for durable state (vote grants, append
  acknowledgements, the leader's acknowledgement of its own entries); the runtime sends them only
  after the fsync covering that state (thesis §3.8). Self-addressed ones are stepped back by
  ``RawNode.advance()``, which is how a leader counts itself toward commit only after its fsync
  while it ships the same entries to followers in parallel (thesis §10.2.1);
- ``read_states`` / ``dropped_reads``: linearizable reads that became safe, or must be retried.

Step first normalises on the message term (a higher term demotes us, a lower one is answered or
ignored), then dispatches on role. Only the ``become_*`` methods change the role.

Safety rules worth naming: a leader commits only an entry of its current term by counting
replicas (§5.4.2, Figure 8); PreVote (thesis §9.6) asks for votes in ``term + 1`` without
changing anyone's term; CheckQuorum makes a leader that heard from no majority within an
election timeout step down, and lets followers that heard from a leader within that time ignore
(pre-)vote requests (the leader lease of thesis §4.2.3), which is what stops a partitioned node
from disrupting the cluster when it returns.
"""

from __future__ import annotations

from raftd.core.bootstrap import ProbeOutcome, Prober
from raftd.core.confchange import ConfChange, ConfChangeType, InvalidConfChange, apply_change
from raftd.core.config import Config
from raftd.core.errors import (
    ConfChangeInProgress,
    InvariantError,
    ProposalDropped,
    TransferInProgress,
)
from raftd.core.log import RaftLog
from raftd.core.messages import (
    Message,
    MsgApp,
    MsgAppResp,
    MsgCommitHint,
    MsgHeartbeat,
    MsgHeartbeatResp,
    MsgPreVote,
    MsgPreVoteResp,
    MsgProbe,
    MsgProbeResp,
    MsgReadIndex,
    MsgReadIndexResp,
    MsgSnap,
    MsgTimeoutNow,
    MsgVote,
    MsgVoteResp,
)
from raftd.core.progress import Progress, ProgressState
from raftd.core.quorum import VoteResult, committed_index, majority, vote_result
from raftd.core.read_only import ReadOnly, ReadRequest, ReadRound
from raftd.core.state import ConfState, Entry, EntryType, HardState, ReadState, SoftState
from raftd.core.storage import Storage
from raftd.core.types import NO_NODE, Index, NodeId, StateRole, Term

STALLED_HEARTBEATS = 2
"""Heartbeat answers without progress before a REPLICATE follower is re-probed (lost tail)."""


class Raft:
    def __init__(self, config: Config, storage: Storage) -> None:
        config.validate()
        self.cfg = config
        self.id: NodeId = config.id
        self.log = RaftLog(storage)
        # The configuration entry applied last was committed: re-apply up to it before
        # acting under its configuration (the commit index itself is not durable). A log
        # shorter than that lost synced entries (fsync off): then trust nothing of it.
        if storage.conf_index() <= self.log.last_index():
            self.log.commit_to(storage.conf_index())
        self._conf_version_floor = storage.conf_index()
        """Our configuration (from confstate) is as of this index until we re-applied it."""
        hard_state, conf_state = storage.initial_state()
        self.voters: tuple[NodeId, ...] = ()
        self.learners: tuple[NodeId, ...] = ()
        self.auto_promote: tuple[NodeId, ...] = ()
        self.conf_index: Index = 0
        """Index of the entry (or snapshot) our configuration comes from, or a later one."""
        # A configuration installed with a snapshot may be newer than confstate's index.
        self._set_conf(conf_state, max(storage.conf_index(), self.log.first_index() - 1))
        self.pending_conf_index: Index = 0
        """Index of the last configuration entry proposed; no other until it is applied."""

        self.current_term: Term = 0
        self.voted_for: NodeId = NO_NODE
        self.catching_up = False
        self.leader_probe: tuple[Term, Index] = (0, 0)
        """(term, catch_up_index) of the last leader that answered our MsgProbe: catching up
        ends only with a commit index that far, in that term (``_maybe_finish_catching_up``)."""
        self.probe_wait = 0
        """Ticks before a catching-up follower probes its leader again."""
        self.prober: Prober | None = None
        if hard_state is not None:
            self.current_term = hard_state.current_term
            self.voted_for = hard_state.voted_for
            self.catching_up = hard_state.catching_up
        elif self.id not in self.voters:
            self.catching_up = True  # a node added later waits for the leader to reach it
        elif self.voters != (self.id,):
            self.prober = Prober(tuple(v for v in self.voters if v != self.id))

        self.role = StateRole.FOLLOWER
        self.leader_id: NodeId = NO_NODE
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self.read_states: list[ReadState] = []
        self.dropped_reads: list[int] = []
        self.progress: dict[NodeId, Progress] = {}
        self.votes: dict[NodeId, bool] = {}
        self.read_only = ReadOnly()
        self.reads_waiting_commit: list[ReadRequest] = []
        self.reads_to_start: list[ReadRequest] = []
        self.lead_transferee: NodeId = NO_NODE
        """The voter we are handing leadership to (thesis §3.10); NO_NODE when none."""
        self.campaign_after_apply: Index = 0
        """A TimeoutNow arrived before we applied up to the leader's commit: campaign then."""
        self.reported_applied: dict[NodeId, Index] = {}
        """The highest applied index each peer reported (heartbeat answers)."""

        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = 0
        self._reset_randomized_election_timeout()

    # -- read-only views -------------------------------------------------------------------
    @property
    def probing(self) -> bool:
        return self.prober is not None

    def hard_state(self) -> HardState:
        return HardState(
            current_term=self.current_term,
            voted_for=self.voted_for,
            catching_up=self.catching_up,
        )

    def soft_state(self) -> SoftState:
        return SoftState(leader_id=self.leader_id, role=self.role)

    def conf_state(self) -> ConfState:
        return ConfState(
            voters=self.voters, learners=self.learners, auto_promote=self.auto_promote
        )

    def _set_conf(self, conf: ConfState, index: Index) -> None:
        self.conf_index = index
        self.voters = tuple(sorted(conf.voters))
        self.learners = tuple(sorted(conf.learners))
        self.auto_promote = tuple(sorted(conf.auto_promote))
        self.members = tuple(sorted(self.voters + self.learners))

    def conf_version(self) -> Index:
        """The log index our configuration is as of: all entries to it applied."""
        return max(self.log.applied_index, self._conf_version_floor)

    def promotable(self) -> bool:
        return self.id in self.voters and not self.catching_up and not self.probing

    # -- transitions (the only writers of role) --------------------------------------------
    def become_follower(self, term: Term, leader: NodeId) -> None:
        self._reset(term)
        self.role = StateRole.FOLLOWER
        self.leader_id = leader

    def become_pre_candidate(self) -> None:
        if self.role is StateRole.LEADER:
            raise InvariantError("invalid transition [leader -> pre_candidate]")
        self.role = StateRole.PRE_CANDIDATE
        self.votes = {}
        self.leader_id = NO_NODE

    def become_candidate(self) -> None:
        if self.role is StateRole.LEADER:
            raise InvariantError("invalid transition [leader -> candidate]")
        self._reset(self.current_term + 1)
        self.voted_for = self.id
        self.role = StateRole.CANDIDATE

    def become_leader(self) -> None:
        if self.role is StateRole.FOLLOWER:
            raise InvariantError("invalid transition [follower -> leader]")
        self._reset(self.current_term)
        self.role = StateRole.LEADER
        self.leader_id = self.id
        last = self.log.last_index()
        for v in self.members:
            self.progress[v] = self._new_progress(v)
        self.progress[self.id].become_replicate()
        # Any configuration entry in our uncommitted tail must be applied before another.
        self.pending_conf_index = last
        # The no-op commits everything of earlier terms and unlocks ReadIndex (Raft §8).
        self._append([Entry(term=self.current_term, index=last + 1, type=EntryType.NORMAL)])

    def _reset(self, term: Term) -> None:
        if term != self.current_term:
            self.current_term = term
            self.voted_for = NO_NODE
        if self.role is StateRole.LEADER:
            self._drop_reads(self.read_only.pending_requests() + self.reads_to_start)
            self._drop_reads(self.reads_waiting_commit)
        self.read_only.reset()
        self.reads_to_start = []
        self.reads_waiting_commit = []
        self.leader_id = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_election_timeout()
        self.votes = {}
        self.progress = {}
        self.lead_transferee = NO_NODE
        self.campaign_after_apply = 0

    def _reset_randomized_election_timeout(self) -> None:
        lo, hi = self.cfg.election_ticks
        self.randomized_election_timeout = self.cfg.rng.randint(lo, hi)

    # -- time ------------------------------------------------------------------------------
    def tick(self) -> None:
        if self.role is StateRole.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        self.probe_wait = max(0, self.probe_wait - 1)
        if self.prober is not None:
            self.heartbeat_elapsed += 1
            if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
                self.heartbeat_elapsed = 0
                for peer in self.prober.others:
                    self._send(MsgProbe(term=0, src=self.id, dst=peer))
            return
        if self.election_elapsed < self.randomized_election_timeout:
            return
        self.election_elapsed = 0
        self.leader_id = NO_NODE  # none heard for an election timeout: know none (no lease)
        self._share_commit()
        self.campaign(pre_vote=self.cfg.pre_vote)

    def _share_commit(self) -> None:
        """No leader heard for an election timeout: tell the others what we know committed.

        The nodes that know a configuration change committed may be exactly the ones it
        removed (or learners), which never campaign; the voters it left may have lost their
        commit index in a restart and wait under the old configuration (simulator B7).
        """
        commit = self.log.commit_index
        if commit == 0 or commit < self.log.first_index() - 1:
            return
        hint_term = self.log.term(commit)
        for peer in self.members:
            if peer != self.id:
                self._send(MsgCommitHint(term=0, src=self.id, dst=peer,
                                         commit_index=commit, commit_term=hint_term))

    def _learn_commit(self, m: MsgCommitHint) -> None:
        if self.prober is not None or m.src not in self.members:
            return  # a blank node holds nothing; a stranger may be of another cluster
        if m.ask:
            # Another node's log ends at ``ask``, before our commit index: vouch for it.
            if self.log.first_index() - 1 <= m.ask <= self.log.commit_index:
                self._send(MsgCommitHint(term=0, src=self.id, dst=m.src, commit_index=m.ask,
                                         commit_term=self.log.term(m.ask)))
            return
        if self.role is StateRole.LEADER or m.commit_index <= self.log.commit_index:
            return  # a leader counts replicas
        last = self.log.last_index()
        if m.commit_index > last:
            if self.log.commit_index < last:
                self._send(MsgCommitHint(term=0, src=self.id, dst=m.src, commit_index=0,
                                         commit_term=0, ask=last))
        elif self.log.match_term(m.commit_index, m.commit_term):
            self.log.commit_to(m.commit_index)

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks[0]:
            self.election_elapsed = 0
            self.lead_transferee = NO_NODE  # a transfer not done in one election timeout aborts
            if self.cfg.check_quorum and not self._quorum_active():
                self.become_follower(self.current_term, NO_NODE)
                return
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat(context=self.read_only.last_round())
            self._maybe_promote_learner()
            self._hand_off()
        # Commit news no MsgApp carried since: under load the next MsgApp carries it anyway,
        # so it waits for a tick rather than costing a datagram (and a turn of the follower's)
        # per write.
        for peer, pr in self.progress.items():
            if pr.commit_sent < self.log.commit_index and peer != self.id:
                self._send_append(peer, send_if_empty=True)

    def _maybe_promote_learner(self) -> None:
        """Promote one caught-up, recently heard-from learner (etcd's learner-first joins)."""
        for learner in self.auto_promote:
            if not self._learner_ready(learner):
                continue
            try:
                self.propose_conf_change(ConfChange(type=ConfChangeType.PROMOTE, node_id=learner))
            except ProposalDropped:
                pass  # another change or a transfer is in flight: try at a later heartbeat
            return

    def _learner_ready(self, learner: NodeId) -> bool:
        """Whether ``learner`` can be promoted: recently heard from, close to our log, and able
        to vote at once (not catching up: it holds a committed entry of our term). Promoting
        one that cannot vote could leave the voters without a quorum (etcd refuses too)."""
        pr = self.progress.get(learner)
        if pr is None or not pr.recent_active or pr.catching_up:
            return False
        if pr.match_index < pr.added_at:
            return False  # what we know of it may be its old incarnation's (Progress.added_at)
        if pr.match_index + self.cfg.promote_lag_entries < self.log.last_index():
            return False
        known_commit = min(pr.match_index, self.log.commit_index)
        return known_commit >= self.log.first_index() and (
            self.log.term(known_commit) == self.current_term
        )

    def _quorum_active(self) -> bool:
        active = sum(1 for v in self.voters if v == self.id or self.progress[v].recent_active)
        for pr in self.progress.values():  # learners too: auto-promotion needs recent acks
            pr.recent_active = False
        return active >= majority(len(self.voters))

    # -- elections -------------------------------------------------------------------------
    def campaign(self, *, pre_vote: bool, transfer: bool = False) -> None:
        if not self.promotable() or self.role is StateRole.LEADER:
            return
        if self._unapplied_conf_change():
            return  # our voters may be about to change: count them once applied (etcd too)
        if pre_vote:
            self.become_pre_candidate()
            term = self.current_term + 1
            self._poll(self.id, granted=True)
            if self.role is not StateRole.PRE_CANDIDATE:
                return  # a single voter wins at once
        else:
            self.become_candidate()
            term = self.current_term
            # Our own vote counts only once voted_for is durable: step it back after persist.
            self.msgs_after_persist.append(
                MsgVoteResp(term=term, src=self.id, dst=self.id, reject=False)
            )
        last_index, last_term = self.log.last_index(), self.log.last_term()
        version = self.conf_version()
        for peer in self.voters:
            if peer == self.id:
                continue
            if pre_vote:
                self._send(
                    MsgPreVote(
                        term=term, src=self.id, dst=peer,
                        last_log_index=last_index, last_log_term=last_term,
                        conf_version=version,
                    )
                )
            else:
                self._send(
                    MsgVote(
                        term=term, src=self.id, dst=peer, last_log_index=last_index,
                        last_log_term=last_term, transfer=transfer, conf_version=version,
                    )
                )

    def _unapplied_conf_change(self) -> bool:
        lo, hi = self.log.applied_index + 1, self.log.commit_index + 1
        return lo < hi and any(
            e.type is EntryType.CONF_CHANGE for e in self.log.slice(lo, hi)
        )

    def _poll(self, voter: NodeId, *, granted: bool) -> None:
        self.votes.setdefault(voter, granted)
        result = vote_result(self.voters, self.votes)
        if result is VoteResult.WON:
            if self.role is StateRole.PRE_CANDIDATE:
                self.campaign(pre_vote=False)
            else:
                self.become_leader()
        elif result is VoteResult.LOST:
            self.become_follower(self.current_term, NO_NODE)

    def _handle_vote_request(self, m: MsgVote | MsgPreVote) -> None:
        pre = isinstance(m, MsgPreVote)
        can_vote = (
            self.voted_for == m.src
            or (self.voted_for == NO_NODE and self.leader_id == NO_NODE)
            or (pre and m.term > self.current_term)
        )
        grant = (
            can_vote
            and self.log.is_up_to_date(m.last_log_index, m.last_log_term)
            # Not promotable(): a learner whose promotion is committed but not yet applied here
            # must be able to vote (as in etcd); a candidate counts only its own voters. But a
            # node its own configuration leaves out votes only for a candidate whose
            # configuration is later than ours (so lists us again): a stale candidate still
            # counting a removed node could win a term another leader holds (simulator B8),
            # while one that added us back may need our vote (seed 19951).
            and not self.catching_up
            and not self.probing
            and (self.id in self.members or m.conf_version > self.conf_version())
        )
        if pre:
            term = m.term if grant else self.current_term
            self._send(MsgPreVoteResp(term=term, src=self.id, dst=m.src, reject=not grant))
            return
        if not grant:
            self._send(MsgVoteResp(term=self.current_term, src=self.id, dst=m.src, reject=True))
            return
        self.voted_for = m.src
        self.election_elapsed = 0
        self.msgs_after_persist.append(
            MsgVoteResp(term=self.current_term, src=self.id, dst=m.src, reject=False)
        )

    # -- message dispatch ------------------------------------------------------------------
    def step(self, m: Message) -> None:
        if isinstance(m, MsgProbe):
            # Only a node that lost data probes: what we think it holds or applied may be gone.
            self.reported_applied.pop(m.src, None)
            leader = self.role is StateRole.LEADER
            pr = self.progress.get(m.src) if leader else None
            if pr is not None:
                pr.forget_acks()
            self._send(
                MsgProbeResp(
                    term=self.current_term, src=self.id, dst=m.src,
                    blank=self.probing, last_index=self.log.last_index(),
                    leader=leader, catch_up_index=self.log.last_index() if leader else 0,
                )
            )
            return
        if isinstance(m, MsgProbeResp):
            if m.leader and m.term >= self.leader_probe[0]:
                self.leader_probe = (m.term, m.catch_up_index)
            if self.prober is not None:
                self._on_probe_resp(m)
            return
        if isinstance(m, MsgCommitHint):
            self._learn_commit(m)  # a fact about the log, whatever the sender's term
            return
        if isinstance(m, MsgHeartbeatResp) and m.applied_index > self.reported_applied.get(
                m.src, 0):
            self.reported_applied[m.src] = m.applied_index  # a fact too, whatever the term
        if self.prober is not None:
            if not isinstance(m, MsgApp | MsgHeartbeat | MsgSnap):
                return  # a blank node has nothing safe to say about votes
            self._finish_probing(ProbeOutcome.CATCH_UP, max(self.prober.max_term, m.term))

        if m.term > self.current_term:
            if isinstance(m, MsgVote | MsgPreVote):
                force = isinstance(m, MsgVote) and m.transfer
                in_lease = (
                    self.cfg.check_quorum
                    and self.leader_id != NO_NODE
                    and self.election_elapsed < self.cfg.lease_ticks
                )
                if in_lease and not force:
                    return
            if isinstance(m, MsgPreVote) or (isinstance(m, MsgPreVoteResp) and not m.reject):
                pass  # PreVote never changes terms
            elif isinstance(m, MsgApp | MsgHeartbeat | MsgSnap):
                self.become_follower(m.term, m.src)
            else:
                self.become_follower(m.term, NO_NODE)
        elif m.term < self.current_term:
            if isinstance(m, MsgApp | MsgHeartbeat | MsgSnap):
                # Tell a deposed leader about the new term so that it steps down.
                self._send(MsgHeartbeatResp(term=self.current_term, src=self.id, dst=m.src,
                                            applied_index=self.log.applied_index))
            elif isinstance(m, MsgPreVote):
                self._send(
                    MsgPreVoteResp(term=self.current_term, src=self.id, dst=m.src, reject=True)
                )
            return

        if isinstance(m, MsgVote | MsgPreVote):
            self._handle_vote_request(m)
        elif self.role is StateRole.LEADER:
            self._step_leader(m)
        elif self.role is StateRole.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _step_leader(self, m: Message) -> None:
        if isinstance(m, MsgAppResp):
            self._on_append_response(m)
        elif isinstance(m, MsgHeartbeatResp):
            self._on_heartbeat_response(m)
        elif isinstance(m, MsgReadIndex):
            if m.src not in self.members:
                # Nobody replicates to it: it would never apply the read index (sim B10).
                self._refuse_read(m)
                return
            self._leader_read([ReadRequest(requester=m.src, context=m.context)])

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, MsgApp):
            self.election_elapsed = 0
            self.leader_id = m.src
            self._handle_append(m)
        elif isinstance(m, MsgSnap):
            self.election_elapsed = 0
            self.leader_id = m.src
            self._handle_snapshot(m)
        elif isinstance(m, MsgHeartbeat):
            self.election_elapsed = 0
            self.leader_id = m.src
            if m.leader_commit > self.log.last_index():
                # The leader believes we hold entries we do not (our data was lost): say so.
                self._send(MsgProbe(term=0, src=self.id, dst=m.src))
            elif (self.catching_up and self.leader_probe[0] != self.current_term
                    and self.probe_wait == 0):
                # Catching up needs this leader's answer (a restart mid-catch-up lost it).
                self._send(MsgProbe(term=0, src=self.id, dst=m.src))
                self.probe_wait = self.cfg.election_ticks[0]
            self.log.commit_to(min(m.leader_commit, self.log.last_index()))
            self._maybe_finish_catching_up()
            self._send(
                MsgHeartbeatResp(term=self.current_term, src=self.id, dst=m.src,
                                 context=m.context, catching_up=self.catching_up,
                                 applied_index=self.log.applied_index)
            )
        elif isinstance(m, MsgReadIndexResp):
            if m.index > 0:
                self.read_states.append(ReadState(index=m.index, context=m.context))
            else:
                self.dropped_reads.append(m.context)
        elif isinstance(m, MsgReadIndex):
            self._refuse_read(m)
        elif isinstance(m, MsgTimeoutNow):
            self.log.commit_to(min(m.leader_commit, self.log.last_index()))
            if self.log.applied_index >= self.log.commit_index:
                # Skip PreVote: the leader asked us; its followers must not wait out a lease.
                self.campaign(pre_vote=False, transfer=True)
            else:
                self.campaign_after_apply = self.log.commit_index

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, MsgApp | MsgHeartbeat | MsgSnap):
            self.become_follower(m.term, m.src)
            self._step_follower(m)
        elif isinstance(m, MsgPreVoteResp) and self.role is StateRole.PRE_CANDIDATE:
            self._poll(m.src, granted=not m.reject)
        elif isinstance(m, MsgVoteResp) and self.role is StateRole.CANDIDATE:
            self._poll(m.src, granted=not m.reject)
        elif isinstance(m, MsgReadIndex):
            self._refuse_read(m)

    # -- bootstrap of a blank node (see raftd.core.bootstrap) -------------------------------
    def _on_probe_resp(self, m: MsgProbeResp) -> None:
        assert self.prober is not None
        outcome = self.prober.record(m)
        if outcome is not ProbeOutcome.WAIT:
            self._finish_probing(outcome, self.prober.max_term)

    def _finish_probing(self, outcome: ProbeOutcome, term: Term) -> None:
        self.prober = None
        self.current_term = term
        if outcome is ProbeOutcome.CATCH_UP:
            self.catching_up = True
            self.voted_for = NO_NODE
        else:
            self.voted_for = self.id if term > 0 else NO_NODE
        self.become_follower(term, NO_NODE)

    def _maybe_finish_catching_up(self) -> None:
        """Vote again once we hold all that is committed, including what our former self's lost
        acks helped (or, one still on the way, may yet help) commit: entries of our leader's
        term up to its last index when it forgot those acks (answering our probe). A commit
        point of the current term alone is not enough: a snapshot of that term may end
        before them (seed 65706)."""
        if not self.catching_up:
            return  # the common case: called on every append
        commit = self.log.commit_index
        probe_term, catch_up_index = self.leader_probe
        if (commit > 0 and self.log.term(commit) == self.current_term
                and probe_term == self.current_term and commit >= catch_up_index):
            self.catching_up = False
            self.voted_for = self.leader_id

    # -- replication: follower side --------------------------------------------------------
    def _handle_append(self, m: MsgApp) -> None:
        if m.prev_log_index < self.log.commit_index:
            self._after_persist(MsgAppResp(
                term=self.current_term, src=self.id, dst=m.src, index=self.log.commit_index
            ))
            return
        conflict = self.log.find_conflict(m.entries)
        if conflict and conflict <= self.log.commit_index:
            return  # only a faulty peer rewrites committed entries: ignore, never apply it
        last_new = self.log.maybe_append(
            m.prev_log_index, m.prev_log_term, m.leader_commit, m.entries
        )
        if last_new is not None and m.notice and not m.entries:
            self._maybe_finish_catching_up()
            return  # the leader knows we match: an answer would only cost both of us a turn
        if last_new is not None:
            self._after_persist(
                MsgAppResp(term=self.current_term, src=self.id, dst=m.src, index=last_new)
            )
            self._maybe_finish_catching_up()
            return
        hint = min(m.prev_log_index, self.log.last_index())
        hint, hint_term = self.log.find_conflict_by_term(hint, m.prev_log_term)
        self._send(
            MsgAppResp(
                term=self.current_term, src=self.id, dst=m.src, index=m.prev_log_index,
                reject=True, reject_hint=hint, log_term=hint_term,
            )
        )

    def _handle_snapshot(self, m: MsgSnap) -> None:
        meta = m.snapshot.meta
        if meta.index <= self.log.commit_index:
            index = self.log.commit_index
        elif self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)  # we hold it already: just fast-forward
            index = meta.index
        else:
            self.log.restore(m.snapshot)
            self._set_conf(meta.conf_state, meta.index)
            index = meta.index
        self._after_persist(
            MsgAppResp(term=self.current_term, src=self.id, dst=m.src, index=index)
        )
        self._maybe_finish_catching_up()

    # -- replication: leader side ----------------------------------------------------------
    def propose(self, data: bytes) -> Index:
        """Append a client entry; returns its index. Raises ProposalDropped if not leader."""
        if self.role is not StateRole.LEADER:
            raise ProposalDropped("not the leader")
        if self.lead_transferee != NO_NODE:
            raise TransferInProgress(f"leadership is moving to {self.lead_transferee}")
        index = self.log.last_index() + 1
        self._append([Entry(term=self.current_term, index=index, data=data)])
        return index

    def propose_conf_change(self, cc: ConfChange) -> Index:
        """Append a configuration entry; see ``raftd.core.confchange`` for the rules."""
        if self.role is not StateRole.LEADER:
            raise ProposalDropped("not the leader")
        if self.lead_transferee != NO_NODE:
            raise TransferInProgress(f"leadership is moving to {self.lead_transferee}")
        if not self._committed_in_current_term():
            raise ConfChangeInProgress("the new leader has not committed an entry of its term yet")
        if self.id not in self.voters:
            raise TransferInProgress("this node removed itself; it is handing leadership over")
        if self.pending_conf_index > self.log.applied_index:
            raise ConfChangeInProgress(
                f"the change at index {self.pending_conf_index} is not applied yet"
            )
        if not self.majority_applied(self.conf_index):
            # Until then "not a member" would tell a retried remove-node that the node may be
            # stopped and wiped, while the voters that know it was removed may be too few to
            # elect without it (seed 2303); and the next change must start from a settled one.
            raise ConfChangeInProgress(
                f"the change at index {self.conf_index} is not applied by a majority yet"
            )
        apply_change(self.conf_state(), cc)  # raises InvalidConfChange before anything changes
        if cc.type is ConfChangeType.PROMOTE and not self._learner_ready(cc.node_id):
            raise ConfChangeInProgress(f"{cc.node_id} has not caught up yet; retry later")
        index = self.log.last_index() + 1
        self._append([Entry(term=self.current_term, index=index, type=EntryType.CONF_CHANGE,
                            data=cc.encode())])
        self.pending_conf_index = index
        return index

    def apply_conf_change(self, cc: ConfChange, index: Index) -> ConfState:
        """The runtime applies the committed configuration entry at ``index`` (the same on
        every node)."""
        try:
            conf = apply_change(self.conf_state(), cc)
        except InvalidConfChange:
            return self.conf_state()  # e.g. a promotion proposed twice across leaders: a no-op
        voters = self.voters
        self._set_conf(conf, index)
        if self.role in (StateRole.PRE_CANDIDATE, StateRole.CANDIDATE) and voters != self.voters:
            # The votes were asked of other voters: start again under the new ones, if we
            # are one (a commit hint can make a candidate apply its own removal: seed 2446).
            self.become_follower(self.current_term, NO_NODE)
        if self.role is StateRole.LEADER:
            for node in self.members:
                if node not in self.progress:
                    self.progress[node] = self._new_progress(node)
            for node in [n for n in self.progress if n not in self.members]:
                if node != self.id:
                    self._send_last_news(node)
                del self.progress[node]
            if self.lead_transferee not in self.voters:
                self.lead_transferee = NO_NODE
            if self.id not in self.voters:
                self._hand_off()
            elif self.log.maybe_commit(
                committed_index(self.voters, self._match()), self.current_term
            ):
                self._on_commit_advanced()
        return conf

    def _new_progress(self, node: NodeId) -> Progress:
        last = self.log.last_index()
        pr = Progress(last + 1, self.cfg.max_inflight)
        if node in self.learners:
            pr.added_at = last  # our configuration lists it, so its (re-)adding is <= last
        return pr

    def majority_applied(self, index: Index) -> bool:
        """Whether a majority of our voters applied ``index`` (we, or as they reported). After
        a removal at ``index``, its configuration then elects and commits without the removed
        node even if the others never learn the commit: the operator may stop it."""
        applied = sum(
            1 for v in self.voters
            if (self.log.applied_index if v == self.id else self.reported_applied.get(v, 0))
            >= index
        )
        return applied >= majority(len(self.voters))

    def most_caught_up_voter(self) -> NodeId:
        """The other voter with the highest ``match_index`` (a leader's view); NO_NODE if none.

        The natural target of a leadership transfer: it needs the fewest entries to take over.
        """
        others = [v for v in self.voters if v != self.id and v in self.progress]
        return max(others, key=lambda v: (self.progress[v].match_index, v), default=NO_NODE)

    def _hand_off(self) -> None:
        """We removed ourselves: lead on (writes commit on the new voters' acks alone) until a
        majority of the new configuration applied the removal, then let a caught-up remaining
        voter, told our commit index by TimeoutNow, take over (no proposals during the
        transfer); its higher term makes us follow.

        Stepping down at once could strand the others under the old configuration (two
        voters: the survivor would need our vote). Handing over once ONE voter applied the
        removal is not enough either (simulator B11, seed 40356): that voter lost its disk,
        and the one left with data never learnt the removal was committed, so it still
        counted us. Retried at every heartbeat until someone else leads."""
        if self.role is not StateRole.LEADER or self.id in self.voters:
            return
        if not self.majority_applied(self.conf_index):
            return  # our heartbeats carry the commit index; their answers say what was applied
        if self.lead_transferee == NO_NODE:
            best = self.most_caught_up_voter()
            if best != NO_NODE:
                self.transfer_leader(best)

    def _send_timeout_now(self, to: NodeId) -> None:
        self._send(MsgTimeoutNow(term=self.current_term, src=self.id, dst=to,
                                 leader_commit=self.log.commit_index))

    def on_applied(self) -> None:
        """The runtime applied more entries: a pending TimeoutNow may campaign now."""
        target = self.campaign_after_apply
        if target and self.log.applied_index >= target:
            self.campaign_after_apply = 0
            self.campaign(pre_vote=False, transfer=True)
            if self.role is StateRole.FOLLOWER and self._unapplied_conf_change():
                self.campaign_after_apply = self.log.commit_index  # try again once applied

    def transfer_leader(self, to: NodeId) -> None:
        """Hand leadership to voter ``to`` once its log matches ours (thesis §3.10).

        Proposals are refused meanwhile so that the target can catch up; the transfer aborts
        after one election timeout and this leader carries on.
        """
        if self.role is not StateRole.LEADER:
            raise ProposalDropped("not the leader")
        if to == self.id or to not in self.voters:
            raise ProposalDropped(f"{to} is not another voter")
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0
        if self.progress[to].match_index == self.log.last_index():
            self._send_timeout_now(to)

    def _append(self, entries: list[Entry]) -> None:
        last = self.log.append(entries)
        self._after_persist(
            MsgAppResp(term=self.current_term, src=self.id, dst=self.id, index=last)
        )

    def _on_append_response(self, m: MsgAppResp) -> None:
        pr = self.progress.get(m.src)
        if pr is None or m.index > self.log.last_index():
            return  # an ack of entries we never sent is from a faulty peer
        pr.recent_active = True
        if m.reject:
            hint = m.reject_hint
            if m.log_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            pr.maybe_decrease_to(m.index, hint)
            return
        if not pr.maybe_update(m.index):
            return
        if pr.state is ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        elif pr.state is ProgressState.PROBE or pr.match_index >= pr.pending_snapshot:
            pr.pending_snapshot = 0
            pr.become_replicate()
        if self.log.maybe_commit(committed_index(self.voters, self._match()), self.current_term):
            self._on_commit_advanced()
        # After the commit: this ack may be what commits our last entry (e.g. our own removal),
        # and the target must know that before it counts its voters (seed 14218).
        if m.src == self.lead_transferee and pr.match_index == self.log.last_index():
            self._send_timeout_now(m.src)

    def _match(self) -> dict[NodeId, Index]:
        return {v: pr.match_index for v, pr in self.progress.items()}

    def _on_commit_advanced(self) -> None:
        if self.reads_waiting_commit and self._committed_in_current_term():
            self.reads_to_start.extend(self.reads_waiting_commit)
            self.reads_waiting_commit = []

    def _on_heartbeat_response(self, m: MsgHeartbeatResp) -> None:
        pr = self.progress.get(m.src)
        if pr is None:
            return
        pr.recent_active = True
        pr.probe_sent = False
        # Only an answer that applied past added_at is surely this incarnation's.
        pr.catching_up = m.catching_up or m.applied_index < pr.added_at
        last = self.log.last_index()
        if pr.state is ProgressState.PROBE and pr.match_index < last < pr.next_index:
            pr.next_index = last  # nothing left to send, yet no ack: probe with our last entry
        if pr.state is ProgressState.REPLICATE and pr.match_index < last:
            pr.stalled_heartbeats += 1
            if pr.stalled_heartbeats >= STALLED_HEARTBEATS:
                pr.become_probe()  # the tail of the window was lost on the way
        if m.context:
            self._release_reads(self.read_only.recv_ack(m.src, m.context, self.voters))

    def flush(self) -> None:
        """Send what the last inputs made due: new entries and read rounds (commit news
        alone waits for the next tick: `_tick_leader`).

        Called once per Ready, so all proposals and acks of one runtime turn leave as one
        MsgApp (or one window of them) per follower and one heartbeat round for all reads.
        """
        if self.role is not StateRole.LEADER:
            return
        for peer in self.members:
            if peer != self.id:
                self._send_append(peer, send_if_empty=False)
        if self.reads_to_start:
            requests, self.reads_to_start = self.reads_to_start, []
            # Alone, we are the quorum. Not so a leader that removed itself: its one voter
            # may already lead a later term (seed 28654 served a stale read that way).
            if self.voters == (self.id,):
                self._release_reads([ReadRound(index=self.log.commit_index, requests=requests)])
            else:
                number = self.read_only.add(self.log.commit_index, requests, self.id)
                self._broadcast_heartbeat(context=number)

    def _send_append(self, peer: NodeId, *, send_if_empty: bool) -> None:
        pr = self.progress[peer]
        last = self.log.last_index()
        if pr.next_index > last and not send_if_empty:
            return  # nothing new (flush asks per peer several times a turn: keep it cheap)
        while not pr.paused():
            if pr.next_index < self.log.first_index():
                self._send_snapshot(peer, pr)
                return
            entries = self.log.entries(pr.next_index, self.cfg.max_msg_bytes)
            if not entries and not send_if_empty:
                return
            prev = pr.next_index - 1
            self._send(
                MsgApp(
                    term=self.current_term, src=self.id, dst=peer,
                    prev_log_index=prev, prev_log_term=self.log.term(prev),
                    entries=tuple(entries), leader_commit=self.log.commit_index,
                    notice=not entries and pr.state is ProgressState.REPLICATE
                    and prev == pr.match_index,
                )
            )
            pr.sent(prev + len(entries), len(entries))
            pr.commit_sent = self.log.commit_index
            send_if_empty = False
            if pr.state is ProgressState.PROBE or pr.next_index > last:
                return

    def _send_last_news(self, node: NodeId) -> None:
        """Send a node we just removed what it lacks up to our commit index, and that index:
        nobody replicates to it any more, and only so does it learn it was removed (and send
        clients on). Best effort: a removed node that missed it still cannot disturb anyone."""
        prev = self.progress[node].match_index
        if prev < self.log.first_index() - 1:
            return  # it needs a snapshot; not worth one any more
        entries = self.log.slice(prev + 1, self.log.commit_index + 1, self.cfg.max_msg_bytes)
        self._send(
            MsgApp(
                term=self.current_term, src=self.id, dst=node,
                prev_log_index=prev, prev_log_term=self.log.term(prev),
                entries=tuple(entries), leader_commit=self.log.commit_index,
            )
        )

    def _send_snapshot(self, peer: NodeId, pr: Progress) -> None:
        snapshot = self.log.storage.snapshot()
        if snapshot.meta.index == 0:
            raise InvariantError(f"{peer} needs compacted entries but there is no snapshot")
        self._send(MsgSnap(term=self.current_term, src=self.id, dst=peer, snapshot=snapshot))
        pr.become_snapshot(snapshot.meta.index)

    def report_snapshot(self, peer: NodeId, *, ok: bool) -> None:
        """The runtime tells whether a MsgSnap reached ``peer`` whole."""
        pr = self.progress.get(peer) if self.role is StateRole.LEADER else None
        if pr is None or pr.state is not ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = ok  # on success wait for the follower's ack before sending more

    def _broadcast_heartbeat(self, *, context: int) -> None:
        for peer in self.members:
            if peer == self.id:
                continue
            pr = self.progress[peer]
            self._send(
                MsgHeartbeat(
                    term=self.current_term, src=self.id, dst=peer,
                    leader_commit=min(pr.match_index, self.log.commit_index), context=context,
                )
            )

    # -- linearizable reads (thesis §6.4) ---------------------------------------------------
    def read_index(self, context: int) -> None:
        """Ask for a read index; the answer comes as a ReadState (or a dropped context)."""
        if self.role is StateRole.LEADER:
            self._leader_read([ReadRequest(requester=self.id, context=context)])
        elif self.leader_id != NO_NODE:
            self._send(
                MsgReadIndex(
                    term=self.current_term, src=self.id, dst=self.leader_id, context=context
                )
            )
        else:
            raise ProposalDropped("no leader")

    def _leader_read(self, requests: list[ReadRequest]) -> None:
        if self._committed_in_current_term():
            self.reads_to_start.extend(requests)
        else:
            self.reads_waiting_commit.extend(requests)

    def _committed_in_current_term(self) -> bool:
        return self.log.term(self.log.commit_index) == self.current_term

    def _release_reads(self, rounds: list[ReadRound]) -> None:
        for rnd in rounds:
            for req in rnd.requests:
                if req.requester == self.id:
                    self.read_states.append(ReadState(index=rnd.index, context=req.context))
                else:
                    self._send(
                        MsgReadIndexResp(
                            term=self.current_term, src=self.id, dst=req.requester,
                            index=rnd.index, context=req.context,
                        )
                    )
                    pr = self.progress.get(req.requester)
                    if pr is not None and pr.commit_sent < rnd.index:
                        # It applies up to the index before it reads: tell it the commit now,
                        # not at the next tick.
                        self._send_append(req.requester, send_if_empty=True)

    def _drop_reads(self, requests: list[ReadRequest]) -> None:
        for req in requests:
            if req.requester == self.id:
                self.dropped_reads.append(req.context)
            else:
                self._send(
                    MsgReadIndexResp(
                        term=self.current_term, src=self.id, dst=req.requester,
                        index=0, context=req.context,
                    )
                )

    def _refuse_read(self, m: MsgReadIndex) -> None:
        self._drop_reads([ReadRequest(requester=m.src, context=m.context)])

    # -- outbox ----------------------------------------------------------------------------
    def _send(self, m: Message) -> None:
        self.msgs.append(m)

    def _after_persist(self, m: Message) -> None:
        self.msgs_after_persist.append(m)

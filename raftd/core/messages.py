"""Peer messages: one frozen, slotted, keyword-only dataclass per kind.

Names follow etcd-io/raft (``MsgApp``, ``MsgVote``...) and fields follow the Raft paper
(``prev_log_index``, ``leader_commit``...). ``TAGS`` maps each class to its wire tag; tags are
append-only. NB: when adding a message kind, update ``TAGS`` and ``IS_RESPONSE``.
"""

from __future__ import annotations

from dataclasses import dataclass

from raftd.core.state import Entry, Snapshot
from raftd.core.types import Index, NodeId, Term


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    term: Term
    src: NodeId
    dst: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgApp(Message):
    """AppendEntries (Raft §5.3); with no entries it still carries ``leader_commit``."""

    prev_log_index: Index
    prev_log_term: Term
    entries: tuple[Entry, ...]
    leader_commit: Index
    notice: bool = False
    """Only commit news for a follower known to match at ``prev_log_index``: answered only if
    refused (heartbeats keep telling the leader who is alive)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgAppResp(Message):
    """Reply to MsgApp. On success ``index`` is the last index now matching the leader.

    On reject, ``index`` echoes the rejected ``prev_log_index`` and ``reject_hint`` /
    ``log_term`` point at the follower's best guess of a matching prefix (fast backtracking:
    the largest index <= hint whose term is <= ``log_term``).
    """

    index: Index
    reject: bool = False
    reject_hint: Index = 0
    log_term: Term = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgVote(Message):
    """RequestVote (Raft §5.2); ``transfer`` marks a campaign started by TimeoutNow.

    ``conf_version``: the log index the candidate's configuration is as of (it applied that
    far). A node that its own configuration leaves out votes only for a candidate with a
    later configuration, one that lists it again (``Raft._handle_vote_request``)."""

    last_log_index: Index
    last_log_term: Term
    transfer: bool = False
    conf_version: Index = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgVoteResp(Message):
    reject: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgPreVote(Message):
    """PreVote (thesis §9.6): ``term`` is the term the sender *would* campaign in;
    ``conf_version`` as for MsgVote."""

    last_log_index: Index
    last_log_term: Term
    conf_version: Index = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgPreVoteResp(Message):
    reject: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgHeartbeat(Message):
    """Leader liveness and commit propagation; ``context`` > 0 tags a ReadIndex round."""

    leader_commit: Index
    context: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgHeartbeatResp(Message):
    """``catching_up``: the sender may not vote yet (core.bootstrap); a leader never promotes
    such a learner, or a voter set could need a vote that cannot be cast. ``applied_index``:
    the sender's (its configuration is durable that far), which tells a re-added node's
    answers from its old incarnation's, and a removed leader when it may say it is gone."""

    context: int = 0
    catching_up: bool = False
    applied_index: Index = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgReadIndex(Message):
    """A follower asks the leader for a read index (thesis §6.4); ``context`` is its own id."""

    context: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgReadIndexResp(Message):
    """``index`` is 0 when the leader could not serve the read (then the follower retries)."""

    index: Index
    context: int


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgSnap(Message):
    """InstallSnapshot (Raft §7): the follower's log is replaced by ``snapshot``.

    Larger than a datagram in general: the transport fragments it (``raftd.wire.fragments``).
    """

    snapshot: Snapshot


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgTimeoutNow(Message):
    """Leadership transfer: the receiver campaigns at once, skipping PreVote (thesis §3.10).

    ``leader_commit``: the receiver's log matches the leader's to its end, so it may commit
    this far; it campaigns once it has applied that far (its configuration then matches the
    leader's: after removing itself, a leader of two voters hands over to the remaining one,
    which must know it is now alone).
    """

    leader_commit: Index = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgProbe(Message):
    """A node with an empty data dir asks a member whether the cluster has progressed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgProbeResp(Message):
    """``blank``: the sender is itself still probing; ``last_index``: its log length.

    ``leader``: the sender leads ``term``. Probed, it forgot what it knew of the prober's log
    (acks the prober's former self sent may be lost with its data), and ``catch_up_index`` is
    its last index at that moment: any ack of the former self it may still count (one still
    on the way) is for an entry up to there, so a catching-up prober must have committed that
    far before it may vote (``raftd.core.bootstrap``)."""

    blank: bool
    last_index: Index
    leader: bool = False
    catch_up_index: Index = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class MsgCommitHint(Message):
    """A node that heard no leader for an election timeout tells the others what it knows is
    committed. The receiver commits that far only if its entry at ``commit_index`` has
    ``commit_term`` (then, by Log Matching, its log holds the committed prefix). Without it, a
    voter that lost its commit index in a restart can wait forever under an old
    configuration while the only nodes that know the change committed were removed by it."""

    commit_index: Index
    commit_term: Term
    ask: Index = 0
    """A receiver whose log ends before ``commit_index`` asks back: "is ``ask`` (my last
    index) committed? then tell me its term" (a node whose log ends there can check that)."""


TAGS: dict[type[Message], str] = {
    MsgApp: "app",
    MsgAppResp: "app_resp",
    MsgVote: "vote",
    MsgVoteResp: "vote_resp",
    MsgPreVote: "prevote",
    MsgPreVoteResp: "prevote_resp",
    MsgHeartbeat: "heartbeat",
    MsgHeartbeatResp: "heartbeat_resp",
    MsgReadIndex: "read_index",
    MsgReadIndexResp: "read_index_resp",
    MsgTimeoutNow: "timeout_now",
    MsgProbe: "probe",
    MsgProbeResp: "probe_resp",
    MsgCommitHint: "commit_hint",
    MsgSnap: "snap",
}

IS_RESPONSE: frozenset[type[Message]] = frozenset(
    {MsgAppResp, MsgVoteResp, MsgPreVoteResp, MsgHeartbeatResp, MsgReadIndexResp, MsgProbeResp}
)

"""Values the core hands to and takes from the runtime: entries, hard state, snapshots.

All are frozen, slotted dataclasses: the runtime may keep references to them (for example in a
WAL write queue) without fear that the core mutates them later.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from raftd.core.types import NO_NODE, Index, NodeId, StateRole, Term


class EntryType(enum.IntEnum):
    """Wire and WAL tag of an entry; append-only (never renumber)."""

    NORMAL = 0
    """Application data; empty ``data`` is the leader's no-op (Raft §8)."""
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    term: Term
    index: Index
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


ENTRY_OVERHEAD_BYTES = 25
"""Encoded size of an entry beyond its data at worst (msgpack: array header 1, term and index
9 each as uint64, type 1, bin32 header 5); used to cut batches to a datagram, which an entry
of a long-lived cluster (terms past 2**16, indexes past 2**32) must not overflow."""


def entry_size(entry: Entry) -> int:
    return len(entry.data) + ENTRY_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class HardState:
    """What Raft needs durable before it speaks (Raft Figure 2 "persistent state").

    ``catching_up`` marks a node that lost (or never had) its data and joined a cluster that had
    already progressed: it must not vote or campaign until a leader has brought its log up to a
    commit point of that leader's term (see ``raftd.core.bootstrap``).

    NB: ``commit_index`` is deliberately absent; it is volatile and recovered from the leader.
    """

    current_term: Term = 0
    voted_for: NodeId = NO_NODE
    catching_up: bool = False


@dataclass(frozen=True, slots=True)
class ConfState:
    """The configuration: voters, and learners (replicated to, never counted in a quorum)."""

    voters: tuple[NodeId, ...] = ()
    learners: tuple[NodeId, ...] = ()
    auto_promote: tuple[NodeId, ...] = ()
    """Learners the leader promotes by itself once they have caught up."""


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: Index = 0
    term: Term = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile, informational: who leads and what role this node plays."""

    leader_id: NodeId
    role: StateRole


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read request (``context``) that is linearizable once ``applied_index >= index``."""

    index: Index
    context: int

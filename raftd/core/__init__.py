"""Sans-IO Raft: inputs are method calls, outputs are one ``Ready`` value. No I/O, no clock."""

from raftd.core.confchange import ConfChange, ConfChangeType, InvalidConfChange
from raftd.core.config import Config
from raftd.core.errors import (
    Compacted,
    ConfChangeInProgress,
    ConfigError,
    CorruptLog,
    InvariantError,
    ProposalDropped,
    RaftError,
    StorageError,
    TransferInProgress,
    Unavailable,
)
from raftd.core.messages import IS_RESPONSE, TAGS, Message
from raftd.core.rawnode import RawNode, Status
from raftd.core.ready import Ready
from raftd.core.state import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    ReadState,
    Snapshot,
    SnapshotMeta,
    SoftState,
)
from raftd.core.storage import MemoryStorage, Storage
from raftd.core.types import NO_NODE, Index, NodeId, StateRole, Term

__all__ = [
    "ConfChange", "ConfChangeInProgress", "ConfChangeType", "InvalidConfChange",
    "Compacted", "Config", "ConfigError", "ConfState", "CorruptLog", "Entry", "EntryType",
    "HardState", "Index", "InvariantError", "IS_RESPONSE", "MemoryStorage", "Message", "NO_NODE",
    "NodeId", "ProposalDropped", "RaftError", "RawNode", "ReadState", "Ready", "Snapshot",
    "SnapshotMeta", "SoftState", "StateRole", "Status", "Storage", "StorageError", "TAGS",
    "Term", "TransferInProgress", "Unavailable",
]

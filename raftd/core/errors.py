"""Typed errors: API misuse (RaftError), storage conditions (StorageError)."""


class RaftError(Exception):
    """The caller misused the core API."""


class ProposalDropped(RaftError):
    """A proposal was refused: not the leader, or a leadership transfer is in flight."""


class TransferInProgress(ProposalDropped):
    """A leadership transfer is in flight; the client should retry (at the new leader)."""


class ConfChangeInProgress(ProposalDropped):
    """Another configuration change is not applied yet (one change at a time)."""


class InvariantError(RaftError):
    """An internal invariant broke; the node must stop rather than continue wrongly."""


class ConfigError(RaftError):
    """A core Config value is out of range."""


class StorageError(Exception):
    """Base of the read-side storage conditions the core understands."""


class Compacted(StorageError):
    """The requested index lies below the first index still in the log."""


class Unavailable(StorageError):
    """The requested index lies above the last index of the log."""


class CorruptLog(StorageError):
    """A record before the tail of the log failed its checksum; never silently dropped."""

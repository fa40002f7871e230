"""Ready: everything the runtime must do after feeding the core, in the order it must do it."""

from __future__ import annotations

from dataclasses import dataclass

from raftd.core.messages import Message
from raftd.core.state import Entry, HardState, ReadState, Snapshot, SoftState


@dataclass(frozen=True, slots=True, kw_only=True)
class Ready:
    soft_state: SoftState | None
    """Leader or role changed since the last Ready; informational only."""
    hard_state: HardState | None
    """Persist (atomically) BEFORE sending ``after_persist``."""
    snapshot: Snapshot | None
    """Install (durably, into storage and the state machine) BEFORE entries and applying."""
    entries: tuple[Entry, ...]
    """Append to the log BEFORE sending ``after_persist``; entries[0] may truncate a suffix."""
    messages: tuple[Message, ...]
    """Send now; they do not depend on this Ready's persistence (thesis §10.2.1)."""
    after_persist: tuple[Message, ...]
    """Send only AFTER hard_state and entries are durable (fsync'd when must_sync)."""
    committed_entries: tuple[Entry, ...]
    """Apply in order AFTER persisting; they may include this Ready's own entries."""
    read_states: tuple[ReadState, ...]
    """Serve each read once applied_index >= its index."""
    dropped_reads: tuple[int, ...]
    """Read contexts that cannot be served here (leadership lost): answer them retryable."""
    must_sync: bool
    """Whether entries or hard state need an fsync before ``after_persist`` goes out."""

"""The read side of the log that the core consults synchronously (etcd's ``Storage``).

Writes are the runtime's job (``raftd.storage.disk.DiskStorage`` in production). The core only
asks questions; every answer must already include entries the runtime appended before the last
``advance()``.
"""

from __future__ import annotations

from typing import Protocol

from raftd.core.errors import Compacted, Unavailable
from raftd.core.state import ConfState, Entry, HardState, Snapshot, entry_size
from raftd.core.types import Index, Term


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState | None, ConfState]:
        """The persisted hard state (None for a blank data dir) and configuration."""

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        """Entries in [lo, hi); at least one if lo < hi, then as many as fit ``max_bytes``.

        Raises Compacted if lo < first_index(), Unavailable if hi > last_index() + 1.
        """

    def term(self, index: Index) -> Term:
        """Term of the entry at ``index``; valid for first_index()-1 .. last_index()."""

    def first_index(self) -> Index: ...

    def last_index(self) -> Index: ...

    def snapshot(self) -> Snapshot: ...

    def conf_index(self) -> Index:
        """Index of the configuration entry applied last (0: none recorded).

        It was applied, so it is committed: a restarted node knows its commit index is at
        least this, and re-applies up to it before it acts under that configuration."""


class MemoryStorage:
    """Reference Storage kept in a list; also the write API DiskStorage mirrors.

    Invariant: ``self._entries[0]`` is a dummy entry at the snapshot index and term, so
    ``term(first_index() - 1)`` always answers.
    """

    def __init__(self, conf_state: ConfState | None = None) -> None:
        self._hard_state: HardState | None = None
        self._conf_state = conf_state or ConfState()
        self._conf_index: Index = 0
        self._snapshot = Snapshot()
        self._entries: list[Entry] = [Entry(term=0, index=0)]

    # -- read side -------------------------------------------------------------------------
    def initial_state(self) -> tuple[HardState | None, ConfState]:
        return self._hard_state, self._conf_state

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        offset = self._entries[0].index
        if lo <= offset:
            raise Compacted(lo)
        if hi > self.last_index() + 1:
            raise Unavailable(hi)
        out = self._entries[lo - offset : hi - offset]
        if max_bytes is None:
            return out
        return limit_size(out, max_bytes)

    def term(self, index: Index) -> Term:
        offset = self._entries[0].index
        if index < offset:
            raise Compacted(index)
        if index - offset >= len(self._entries):
            raise Unavailable(index)
        return self._entries[index - offset].term

    def first_index(self) -> Index:
        return self._entries[0].index + 1

    def last_index(self) -> Index:
        return self._entries[0].index + len(self._entries) - 1

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def conf_index(self) -> Index:
        return self._conf_index

    # -- write side (the runtime's) ----------------------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def set_conf_state(self, conf: ConfState, index: Index) -> None:
        """Record that the configuration entry at ``index`` was applied."""
        self._conf_state = conf
        self._conf_index = index

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader."""
        self._snapshot = snapshot
        self._conf_state = snapshot.meta.conf_state
        self._conf_index = 0
        self._entries = [Entry(term=snapshot.meta.term, index=snapshot.meta.index)]

    def create_snapshot(self, snapshot: Snapshot) -> None:
        """Record a snapshot of our own state machine (the log is compacted separately)."""
        if snapshot.meta.index > self.last_index():
            raise Unavailable(snapshot.meta.index)
        self._snapshot = snapshot

    def compact(self, index: Index) -> None:
        """Drop entries before ``index``; ``term(index)`` stays answerable."""
        offset = self._entries[0].index
        if index <= offset:
            return
        if index > self.last_index():
            raise Unavailable(index)
        del self._entries[: index - offset]
        head = self._entries[0]
        self._entries[0] = Entry(term=head.term, index=head.index)

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append, first truncating any suffix that conflicts (starts at entries[0].index)."""
        if not entries:
            return
        offset = self._entries[0].index
        first = entries[0].index
        if first <= offset:
            raise Compacted(first)
        if first > self.last_index() + 1:
            raise Unavailable(first)
        del self._entries[first - offset :]
        self._entries.extend(entries)


def limit_size(entries: list[Entry], max_bytes: int) -> list[Entry]:
    """The longest prefix within ``max_bytes``, but never fewer than one entry."""
    total = 0
    for i, e in enumerate(entries):
        total += entry_size(e)
        if total > max_bytes and i > 0:
            return entries[:i]
    return entries

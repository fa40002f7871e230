"""RaftLog: the durable log (``Storage``) plus the unstable tail not yet handed to the runtime.

Entries appended by the core live in ``unstable`` until the runtime has written them and called
``RawNode.advance()``; only then do they move into storage's view. An unstable tail may start
below storage's last index: that is a conflicting suffix the runtime must truncate (Raft §5.3).

A snapshot received from the leader (``restore``) likewise waits in ``pending_snapshot`` until
the runtime installed it; meanwhile it *is* the log's base, whatever storage still holds.

Invariants: ``applied_index <= commit_index <= last_index()``;
``unstable_offset == storage.last_index() + 1`` unless the unstable tail overwrites a suffix
or a pending snapshot replaces the whole log.
"""

from __future__ import annotations

from raftd.core.errors import Compacted, InvariantError, Unavailable
from raftd.core.state import Entry, Snapshot
from raftd.core.storage import Storage, limit_size
from raftd.core.types import Index, Term


class RaftLog:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.unstable: list[Entry] = []
        self.pending_snapshot: Snapshot | None = None
        self.unstable_offset: Index = storage.last_index() + 1
        # A snapshot may sit above the first retained entry (a trailing window of entries is
        # kept for slow followers); the state machine starts from the snapshot.
        base = max(storage.first_index() - 1, storage.snapshot().meta.index)
        self.commit_index: Index = base
        self.applied_index: Index = base

    # -- queries ---------------------------------------------------------------------------
    def first_index(self) -> Index:
        if self.pending_snapshot is not None:
            return self.pending_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> Index:
        if self.unstable:
            return self.unstable[-1].index
        if self.pending_snapshot is not None:
            return self.pending_snapshot.meta.index
        return self.storage.last_index()

    def last_term(self) -> Term:
        return self.term(self.last_index())

    def term(self, index: Index) -> Term:
        """Term at ``index``; 0 beyond the end. Raises Compacted below the first index."""
        snap = self.pending_snapshot
        if snap is not None and index <= snap.meta.index:
            if index < snap.meta.index:
                raise Compacted(index)
            return snap.meta.term
        if self.unstable and index >= self.unstable_offset:
            pos = index - self.unstable_offset
            return self.unstable[pos].term if pos < len(self.unstable) else 0
        if index > self.storage.last_index() or snap is not None:
            return 0
        return self.storage.term(index)

    def match_term(self, index: Index, term: Term) -> bool:
        try:
            return self.term(index) == term
        except (Compacted, Unavailable):
            return False

    def is_up_to_date(self, last_index: Index, last_term: Term) -> bool:
        """Whether a candidate's log is at least as up to date as ours (Raft §5.4.1)."""
        our_term = self.last_term()
        return last_term > our_term or (last_term == our_term and last_index >= self.last_index())

    def entries(self, lo: Index, max_bytes: int | None = None) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_bytes)

    def slice(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        """Entries in [lo, hi), at most ``max_bytes`` of them (but at least one)."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise Compacted(lo)
        out: list[Entry] = []
        if lo < self.unstable_offset:
            stored_hi = min(hi, self.unstable_offset)
            out = self.storage.entries(lo, stored_hi, max_bytes)
            if len(out) < stored_hi - lo:
                return out
        if hi > self.unstable_offset:
            start = max(lo, self.unstable_offset) - self.unstable_offset
            out = out + self.unstable[start : hi - self.unstable_offset]
        if max_bytes is not None:
            out = limit_size(out, max_bytes)
        return out

    def next_committed_entries(self, max_bytes: int) -> list[Entry]:
        if self.applied_index >= self.commit_index:
            return []
        return self.slice(self.applied_index + 1, self.commit_index + 1, max_bytes)

    def find_conflict(self, entries: tuple[Entry, ...]) -> Index:
        """Index of the first entry whose term differs from ours (0 when all match)."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def find_conflict_by_term(self, index: Index, term: Term) -> tuple[Index, Term]:
        """The largest index <= ``index`` whose term is <= ``term``, and that term.

        Used on both sides of fast backtracking: the follower builds its reject hint with it and
        the leader uses it to skip a whole term of mismatching entries per round trip.
        """
        while index > 0:
            try:
                t = self.term(index)
            except Compacted:
                return index, 0
            if t <= term:
                return index, t
            index -= 1
        return 0, 0

    # -- updates ---------------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> Index:
        """Append after truncating any suffix from ``entries[0].index`` on."""
        if not entries:
            return self.last_index()
        first = entries[0].index
        if first <= self.commit_index:
            raise InvariantError(f"append at {first} would overwrite committed {self.commit_index}")
        if first == self.last_index() + 1:
            if not self.unstable:
                self.unstable_offset = first
            self.unstable.extend(entries)
        elif first >= self.unstable_offset:
            del self.unstable[first - self.unstable_offset :]
            self.unstable.extend(entries)
        else:
            # The new tail replaces entries the runtime already stored: restart unstable there.
            self.unstable = list(entries)
            self.unstable_offset = first
        return self.last_index()

    def maybe_append(
        self, prev_index: Index, prev_term: Term, leader_commit: Index, entries: tuple[Entry, ...]
    ) -> Index | None:
        """AppendEntries receiver (Raft §5.3). Returns the last new index, or None on mismatch."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.commit_index:
                raise InvariantError(f"conflict at {conflict} <= commit {self.commit_index}")
            self.append(list(entries[conflict - prev_index - 1 :]))
        self.commit_to(min(leader_commit, last_new))
        return last_new

    def commit_to(self, index: Index) -> None:
        if index > self.commit_index:
            if index > self.last_index():
                raise InvariantError(f"commit {index} beyond last index {self.last_index()}")
            self.commit_index = index

    def maybe_commit(self, index: Index, term: Term) -> bool:
        """Commit ``index`` only if it holds an entry of ``term`` (Raft §5.4.2, Figure 8)."""
        if index > self.commit_index and self.match_term(index, term):
            self.commit_to(index)
            return True
        return False

    def applied_to(self, index: Index) -> None:
        if index > self.commit_index or index < self.applied_index:
            raise InvariantError(
                f"applied {index} outside [{self.applied_index}, {self.commit_index}]"
            )
        self.applied_index = index

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log by ``snapshot`` (InstallSnapshot, Raft §7).

        ``applied_index`` moves with it: the runtime installs the snapshot into the state
        machine before it applies any committed entry of the same Ready.
        """
        self.pending_snapshot = snapshot
        self.unstable = []
        self.unstable_offset = snapshot.meta.index + 1
        self.commit_index = snapshot.meta.index
        self.applied_index = snapshot.meta.index

    def stable_snapshot_to(self, index: Index) -> None:
        if self.pending_snapshot is not None and self.pending_snapshot.meta.index == index:
            self.pending_snapshot = None

    def stable_to(self, index: Index, term: Term) -> None:
        """The runtime persisted entries up to ``index``: drop them from the unstable tail."""
        if not self.unstable or index < self.unstable_offset:
            return
        pos = index - self.unstable_offset
        if pos >= len(self.unstable) or self.unstable[pos].term != term:
            return  # overwritten since it was handed out; it stays unstable
        del self.unstable[: pos + 1]
        self.unstable_offset = index + 1


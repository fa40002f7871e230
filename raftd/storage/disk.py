"""DiskStorage: the core's ``Storage`` over a WAL and a hard-state file in one data dir.

Theory of operation: the whole log lives in memory in a ``MemoryStorage`` (the reference
implementation, so the read side has exactly its semantics and exceptions) and on disk in the
WAL. Opening replays the WAL into memory; afterwards every write goes to the WAL first and to
memory only once the WAL accepted it, so memory never holds what the disk refused.

Durability contract for the runtime (DESIGN.md "Ready" loop):

- ``append`` hands entries to the OS (one write per batch) without fsync;
- ``sync`` makes every appended entry durable with one fsync (group commit); with
  ``fsync=False`` it does nothing and entries are as durable as the OS makes them;
- ``set_hard_state`` is durable when it returns.

Layout of the data dir: ``LOCK`` (an exclusive lock held while open, so two daemons never share
a dir), ``hardstate`` (see ``raftd.storage.hardstate``) and ``*.wal`` segments
(see ``raftd.storage.wal``).

NB: until snapshots exist the log must start at index 1; a WAL whose first entry is later
(i.e. compacted without a snapshot) is refused as ``CorruptLog``.
"""

from __future__ import annotations

import os.path
from raftd.core.errors import Compacted, CorruptLog, Unavailable
from raftd.core.state import ConfState, Entry, HardState, Snapshot
from raftd.core.storage import MemoryStorage
from raftd.core.types import Index, Term
from raftd.storage import hardstate
from raftd.storage.files import DataDirError, FileLock, FileSystem
from raftd.storage.wal import DEFAULT_SEGMENT_BYTES, WAL

LOCK_NAME = "LOCK"
_PROBE_NAME = "write-probe.tmp"


class DiskStorage:
    def __init__(
        self,
        fs: FileSystem,
        data_dir: str,
        *,
        conf_state: ConfState,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ) -> None:
        self._fs = fs
        self._fsync = fsync
        self._lock = _open_data_dir(fs, data_dir)
        try:
            self._dir = data_dir
            self._hard_state = hardstate.load(fs, data_dir)
            self._wal, entries = WAL.open(fs, data_dir, segment_bytes=segment_bytes)
        except BaseException:
            self._lock.release()
            raise
        self._mem = MemoryStorage(conf_state)
        if entries:
            if entries[0].index != 1:
                self.close()
                raise CorruptLog(f"{data_dir}: the log starts at index {entries[0].index}, not 1")
            self._mem.append(entries)
        if self._hard_state is not None:
            self._mem.set_hard_state(self._hard_state)
        elif entries:
            # Entries but no hard state: the node crashed between its first append and its
            # first hard-state save. It is not blank, and it has not voted yet.
            self._mem.set_hard_state(HardState())

    # -- read side (core.storage.Storage) ----------------------------------------------------
    def initial_state(self) -> tuple[HardState | None, ConfState]:
        """The hard state (None when the data dir is blank) and the configured voters."""
        return self._mem.initial_state()

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        return self._mem.entries(lo, hi, max_bytes)

    def term(self, index: Index) -> Term:
        return self._mem.term(index)

    def first_index(self) -> Index:
        return self._mem.first_index()

    def last_index(self) -> Index:
        return self._mem.last_index()

    def snapshot(self) -> Snapshot:
        return self._mem.snapshot()

    # -- write side (the runtime's) ----------------------------------------------------------
    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Write ``entries`` to the WAL (not yet fsync'd), replacing any conflicting suffix."""
        if not entries:
            return
        first = entries[0].index
        # Checked before the WAL write so a refused append leaves disk and memory unchanged.
        if first < self._mem.first_index():
            raise Compacted(first)
        if first > self._mem.last_index() + 1:
            raise Unavailable(first)
        self._wal.append(entries)
        self._mem.append(entries)

    def set_hard_state(self, hs: HardState) -> None:
        """Persist ``hs`` atomically; durable on return. Unchanged state is not rewritten."""
        if hs == self._hard_state:
            return
        hardstate.save(self._fs, self._dir, hs)
        self._hard_state = hs
        self._mem.set_hard_state(hs)

    def sync(self) -> None:
        """Make every appended entry durable (one fsync), unless running with fsync=False."""
        if self._fsync:
            self._wal.sync()

    def close(self) -> None:
        """Release the data dir. Does not sync: call ``sync`` first for durability."""
        self._wal.close()
        self._lock.release()


def _open_data_dir(fs: FileSystem, data_dir: str) -> FileLock:
    """Create the data dir if missing, lock it and check that it is writable.

    Raises DataDirError naming the path when any of these fails.
    """
    try:
        if not fs.exists(data_dir):
            fs.makedirs(data_dir)
            # Make the new dir's own name durable, or a crash could lose the whole node state.
            fs.fsync_dir(os.path.dirname(os.path.normpath(data_dir)) or ".")
        lock = fs.lock(os.path.join(data_dir, LOCK_NAME))
    except OSError as e:
        raise DataDirError(f"data dir {data_dir} is not usable: {e.strerror or e}") from e
    try:
        # A writable LOCK file in a read-only dir passes the lock; refuse now, not at the
        # first vote.
        probe = os.path.join(data_dir, _PROBE_NAME)
        fs.create(probe).close()
        fs.remove(probe)
    except OSError as e:
        lock.release()
        raise DataDirError(f"data dir {data_dir} is not usable: {e.strerror or e}") from e
    return lock

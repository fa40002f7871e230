"""DiskStorage: the core's ``Storage`` over a WAL, a hard-state file and snapshot files.

Theory of operation: the log lives in memory in a ``MemoryStorage`` (the reference
implementation, so the read side has exactly its semantics and exceptions) and on disk in the
WAL. Opening replays the WAL into memory; afterwards every write goes to the WAL first and to
memory only once the WAL accepted it, so memory never holds what the disk refused. The latest
snapshot is tracked here, its data read from its file only when asked for (``snapshot()``) and
then cached.

Durability contract for the runtime (DESIGN.md "Ready" loop):

- ``append`` hands entries to the OS (one write per batch) without fsync;
- ``sync`` makes every appended entry durable with one fsync (group commit); with
  ``fsync=False`` it does nothing and entries are as durable as the OS makes them;
- ``set_hard_state`` and ``apply_snapshot`` are durable when they return, and snapshot files
  are always fsync'd (both are rare), whatever ``fsync`` says.

Snapshots. ``record_snapshot`` adopts a snapshot of our own state machine (written by
``raftd.storage.snapshots.write``, typically in a worker thread) and compacts the log behind
it, keeping some trailing entries. ``apply_snapshot`` installs a leader's snapshot: it writes
the file, then a WAL restart record "the log restarts after (index, term)", then resets the log.

A full disk. WAL segments are preallocated whole and the next one ahead of time (see
``raftd.storage.wal``), so a full disk is found while the current segment still has room: the
storage enters the *no-space* condition (``no_space()``) and keeps taking appends inside that
segment. The runtime then refuses client writes (``no_space``), hands leadership away, drops
replicated entries that ``can_append`` says do not fit, and calls ``retry_space()`` on a timer
until the disk has room again. ``can_append`` keeps ``reserve_bytes`` of the segment for what
the runtime must still write: a new leader's empty entry, membership changes, the restart
record of a snapshot install. ``append`` and ``apply_snapshot`` raise ``NoSpace`` (an
``OSError``) having changed nothing, in memory or on disk. The hard-state file is replaced by
a small new file, which may need one block: on a completely full disk that save fails (with
``NoSpace``) and the node must stop, as Raft cannot go on without persisting its term and vote.

Recovery: the newest valid snapshot (S, T), then the replayed WAL, whose log is contiguous from
its first record. If that log holds the entry at S with term T, it is kept whole, entries at or
below S included (Log Matching, Raft §5.3: it then agrees with the snapshot); its oldest entry
becomes the base whose term answers ``term(first_index() - 1)``. Otherwise the log restarts
right after S: entries only up to S are covered by the snapshot, and a log whose entry at S
differs is an old log that a snapshot install replaced before its restart record was durable
(the snapshot file is the commit point of an install). In that case recovery writes the
restart record itself, or entries appended later would replay after the discarded log. A log
starting after S + 1, or a restart record past S, leaves a gap the snapshot cannot fill:
``CorruptLog`` names the WAL file and byte offset. So a crash at any step of
``record_snapshot`` or ``apply_snapshot`` comes back in the old state or the new one.

NB: after a restart the log may reach further back than it did before (whole WAL segments are
dropped, not entries), never less far: compaction keeps the record of the entry at the
compaction index on disk, so every answer given before the restart is given after it.

Layout of the data dir: ``LOCK`` (an exclusive lock held while open, so two daemons never share
a dir), ``NODE`` (whose dir it is, see ``raftd.storage.owner``), ``hardstate`` (see
``raftd.storage.hardstate``), ``*.wal`` segments (see ``raftd.storage.wal``) and
``snap-*.snap`` files (see ``raftd.storage.snapshots``).
"""

from __future__ import annotations

import logging
import os.path
from array import array
from collections.abc import Sequence
from concurrent.futures import Executor

import msgpack

from raftd.core.errors import Compacted, CorruptLog, InvariantError, Unavailable
from raftd.core.state import (
    ConfState,
    Entry,
    HardState,
    Snapshot,
    SnapshotMeta,
    entry_size,
)
from raftd.core.storage import MemoryStorage
from raftd.core.types import Index, Term
from raftd.storage import hardstate, snapshots
from raftd.storage.files import DataDirError, FileLock, FileSystem
from raftd.storage.snapshots import SnapshotFile
from raftd.storage.wal import DEFAULT_SEGMENT_BYTES, WAL, Restart, encode_records

logger = logging.getLogger(__name__)

LOCK_NAME = "LOCK"
_PROBE_NAME = "write-probe.tmp"
_NO_SNAPSHOT = SnapshotMeta()
"""What ``snapshot_meta`` answers before the first snapshot (asked every runtime turn)."""
NO_SPACE_RESERVE_BYTES = 64 << 10
"""Bytes of the current segment ``can_append`` keeps, in the no-space condition, for the
runtime's own small entries (capped at an eighth of a segment)."""


class DiskStorage:
    def __init__(
        self,
        fs: FileSystem,
        data_dir: str,
        *,
        conf_state: ConfState,
        fsync: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        background: Executor | None = None,
    ) -> None:
        """``background``: where the WAL makes its next segment (see ``raftd.storage.wal``)."""
        self._fs = fs
        self._fsync = fsync
        self._dir = data_dir
        self._configured = conf_state
        self.reserve_bytes = min(NO_SPACE_RESERVE_BYTES, segment_bytes // 8)
        """What ``can_append`` keeps free in the no-space condition (see the module doc)."""
        self._packer = msgpack.Packer()
        self._lock = open_data_dir(fs, data_dir)
        try:
            self._hard_state = hardstate.load(fs, data_dir)
            self._hard_state_file = hardstate.HardStateFile(fs, data_dir)
            self._applied_conf = hardstate.load_conf(fs, data_dir)
            snapshots.discard_temporary(fs, data_dir)
            self._snap_file = snapshots.load_latest(fs, data_dir)
            self._wal, entries = WAL.open(fs, data_dir, segment_bytes=segment_bytes,
                                          background=background)
            try:
                base, entries, discarded = _recover_log(
                    self._snap_file, self._wal.replayed_restart, entries, self._wal.replayed_origin
                )
                if discarded:
                    # Say so in the WAL (as an interrupted install would have), or entries
                    # appended from now on would replay after the discarded log. Idempotent,
                    # should this crash too.
                    self._wal.append_restart(base.index, base.term)
                    self._wal.sync()
            except BaseException:
                self._wal.close()
                raise
        except BaseException:
            self._lock.release()
            raise
        self._snap_cache: Snapshot | None = None
        """The latest snapshot with its data, once read; None until then."""
        self._mem = MemoryStorage(conf_state)
        if base.index > 0:
            # MemoryStorage starts a log only after a snapshot: hand it one holding just the
            # base. Its snapshot is never read (``snapshot()`` answers from the file).
            self._mem.apply_snapshot(Snapshot(SnapshotMeta(base.index, base.term, conf_state)))
        self._mem.append(entries)
        self._sizes = array("q", [0])
        """Running total of ``entry_size`` from the log's base: ``_sizes[i]`` covers entries up
        to index ``first_index() - 1 + i``, so a difference of two answers log_bytes_since."""
        self._count_bytes(entries)
        if self._hard_state is not None:
            self._mem.set_hard_state(self._hard_state)
        elif entries or self._snap_file is not None:
            # Entries or a snapshot but no hard state: the node crashed before its first
            # hard-state save. It is not blank, and it has not voted yet.
            self._mem.set_hard_state(HardState())

    # -- read side (core.storage.Storage) ----------------------------------------------------
    def initial_state(self) -> tuple[HardState | None, ConfState]:
        """The hard state (None when the data dir is blank) and the configuration: the one
        applied last (``set_conf_state``) or the latest snapshot's, whichever is newer, else
        the configured voters."""
        hs, _ = self._mem.initial_state()
        snap_index = self._snap_file.meta.index if self._snap_file is not None else 0
        if self._applied_conf is not None and self._applied_conf[1] > snap_index:
            return hs, self._applied_conf[0]
        if self._snap_file is not None:
            return hs, self._snap_file.meta.conf_state
        return hs, self._configured

    def conf_index(self) -> Index:
        """Log index of the configuration entry applied last (0: none recorded; it may lie
        below the snapshot)."""
        return self._applied_conf[1] if self._applied_conf is not None else 0

    def set_conf_state(self, conf: ConfState, index: Index) -> None:
        """Record that the configuration entry at ``index`` was applied; durable on return."""
        hardstate.save_conf(self._fs, self._dir, conf, index)
        self._applied_conf = (conf, index)

    def entries(self, lo: Index, hi: Index, max_bytes: int | None = None) -> list[Entry]:
        return self._mem.entries(lo, hi, max_bytes)

    def term(self, index: Index) -> Term:
        return self._mem.term(index)

    def first_index(self) -> Index:
        return self._mem.first_index()

    def last_index(self) -> Index:
        return self._mem.last_index()

    def snapshot(self) -> Snapshot:
        """The latest snapshot with its data (read from its file on first use), or
        ``Snapshot()`` when there is none. Raises CorruptSnapshot if the file rotted since."""
        if self._snap_file is None:
            return Snapshot()
        if self._snap_cache is None:
            data = snapshots.read_data(self._fs, self._snap_file.path)
            self._snap_cache = Snapshot(self._snap_file.meta, data)
        return self._snap_cache

    def snapshot_meta(self) -> SnapshotMeta:
        """The latest snapshot's metadata, without reading its data."""
        return self._snap_file.meta if self._snap_file is not None else _NO_SNAPSHOT

    # -- size figures (the snapshot policy's) ------------------------------------------------
    def snapshot_size(self) -> int:
        """Bytes of the latest snapshot file; 0 when there is none."""
        return self._snap_file.size if self._snap_file is not None else 0

    def log_bytes_since(self, index: Index) -> int:
        """Approximate encoded bytes of the entries after ``index`` (from the first one held)."""
        offset = self._mem.first_index() - 1
        pos = min(max(index, offset), self._mem.last_index()) - offset
        return self._sizes[-1] - self._sizes[pos]

    # -- write side (the runtime's) ----------------------------------------------------------
    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Write ``entries`` to the WAL (not yet fsync'd), replacing any conflicting suffix.

        Raises NoSpace, having changed nothing, when the disk has no room for them.
        """
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
        self._count_bytes(entries)

    def set_hard_state(self, hs: HardState) -> None:
        """Persist ``hs`` atomically; durable on return. Unchanged state is not rewritten."""
        if hs == self._hard_state:
            return
        self._hard_state_file.save(hs)
        self._hard_state = hs
        self._mem.set_hard_state(hs)

    def sync(self) -> None:
        """Make every appended entry durable (one fsync), unless running with fsync=False."""
        if self._fsync:
            self._wal.sync()

    # -- disk space (see the module doc) -------------------------------------------------------
    def no_space(self) -> bool:
        """Whether the disk is full: the next WAL segment could not be preallocated. Appends
        still fit in what is left of the current one, as ``can_append`` tells."""
        return self._wal.no_space

    def can_append(self, entries: Sequence[Entry]) -> bool:
        """Whether ``append(entries)`` should be attempted: always outside the no-space
        condition; inside it, only when the entries fit in the current segment with
        ``reserve_bytes`` to spare. Cheap outside the condition (nothing is encoded)."""
        if not self._wal.no_space or not entries:
            return True
        size = len(encode_records(entries, self._packer))
        return size + self.reserve_bytes <= self._wal.room()

    def retry_space(self) -> bool:
        """In the no-space condition, try again to preallocate the next WAL segment (one
        allocation attempt); whether the condition is (now) clear. Costs nothing outside it:
        call it on a timer, about once a second."""
        return self._wal.retry_space()

    def record_snapshot(
        self, meta: SnapshotMeta, file: SnapshotFile, *, trailing_entries: int
    ) -> None:
        """Adopt ``file``, a durable snapshot of our own state machine at ``meta``, as the
        latest snapshot, then compact the log to keep ``trailing_entries`` entries up to
        ``meta.index`` (so a follower slightly behind still gets entries, not a snapshot).

        Call on the event loop once ``snapshots.write`` returned ``file``. A snapshot no newer
        than the latest (a leader's snapshot was installed meanwhile) is ignored.
        """
        latest = self._snap_file.meta.index if self._snap_file is not None else 0
        if meta.index <= latest:
            logger.info("%s: ignored, not newer than the snapshot at index %d", file.path, latest)
            return
        if meta.index > self._mem.last_index():
            raise Unavailable(meta.index)
        if self._mem.term(meta.index) != meta.term:
            raise InvariantError(
                f"snapshot at index {meta.index} has term {meta.term}, "
                f"the log has {self._mem.term(meta.index)}"
            )
        self._snap_file, self._snap_cache = file, None
        self._compact(meta.index - trailing_entries)
        snapshots.prune(self._fs, self._dir)

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        """Replace the whole log by a snapshot received from the leader; durable on return.

        Order matters for crash safety: the snapshot file first (from then on, recovery
        restarts the log after it unless the old log agrees with it), then the restart record,
        which makes replay discard the old log even once new entries follow it. Both need
        disk space: the WAL's room for the restart record is made first, then the file is
        written, so NoSpace from either leaves the storage as it was.
        """
        meta = snapshot.meta
        latest = self._snap_file.meta.index if self._snap_file is not None else 0
        if meta.index <= latest:
            raise InvariantError(
                f"installing a snapshot at index {meta.index}, not newer than ours at {latest}"
            )
        self._wal.make_room_for_restart(meta.index, meta.term)
        file = snapshots.write(self._fs, self._dir, meta, (snapshot.data,))
        self._wal.append_restart(meta.index, meta.term)
        self._wal.sync()
        self._snap_file, self._snap_cache = file, snapshot
        self._mem.apply_snapshot(Snapshot(meta))  # the data stays in our cache, not twice
        self._sizes = array("q", [0])
        self._wal.drop_before(meta.index + 1)
        snapshots.prune(self._fs, self._dir)

    def close(self) -> None:
        """Release the data dir. Does not sync: call ``sync`` first for durability."""
        self._wal.close()
        self._lock.release()

    # -- internals -----------------------------------------------------------------------------
    def _count_bytes(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Account for ``entries``, just appended (replacing any suffix from the first)."""
        if not entries:
            return
        del self._sizes[entries[0].index - self._mem.first_index() + 1 :]
        total = self._sizes[-1]
        for e in entries:
            total += entry_size(e)
            self._sizes.append(total)

    def _compact(self, index: Index) -> None:
        """Drop entries before ``index`` from memory and whole WAL segments from disk."""
        offset = self._mem.first_index() - 1
        if index <= offset:
            return
        self._mem.compact(index)
        del self._sizes[: index - offset]
        # Only below ``index``: its own record stays, so after a restart its term still answers
        # term(first_index() - 1) as it does now.
        self._wal.drop_before(index)


def _recover_log(
    snap_file: SnapshotFile | None,
    restart: Restart | None,
    entries: list[Entry],
    origin: str | None,
) -> tuple[Entry, list[Entry], bool]:
    """Combine the snapshot and the replayed WAL into the log's base and entries, and whether
    the WAL's log was discarded (it does not lead up to the snapshot).

    The base is an entry whose term answers ``term(first_index() - 1)``; see the module doc.
    """
    snap = snap_file.meta if snap_file is not None else SnapshotMeta()
    snap_base = Entry(term=snap.term, index=snap.index)
    if snap_file is not None:
        covered = f"the newest valid snapshot ends at index {snap.index} ({snap_file.path})"
    else:
        covered = "there is no valid snapshot"
    if restart is not None:
        if restart.index > snap.index:
            raise CorruptLog(
                f"{origin}: the log restarts after index {restart.index} but {covered}"
            )
        base = Entry(term=restart.term, index=restart.index)
    elif not entries:
        return snap_base, [], False
    elif entries[0].index > snap.index + 1:
        raise CorruptLog(
            f"{origin}: the log starts at index {entries[0].index} but {covered}: "
            f"entries are missing"
        )
    elif entries[0].index == snap.index + 1:
        base = snap_base  # the log continues right after the snapshot
    else:
        # Nothing on disk tells the term before the oldest entry: that entry becomes the base.
        base, entries = entries[0], entries[1:]
    last = base.index + len(entries)
    if last < snap.index:
        return snap_base, [], True  # all covered by the snapshot
    if base.index == snap.index:
        term_at_snap = base.term
    else:
        term_at_snap = entries[snap.index - base.index - 1].term
    if term_at_snap == snap.term:
        return base, entries, False
    if restart is not None and restart.index == snap.index:
        # Written right after this very snapshot: disagreeing is damage, not a lost race.
        raise CorruptLog(
            f"{origin}: the log restarts after index {restart.index} term {restart.term}, "
            f"but {covered} with term {snap.term}"
        )
    logger.warning(
        "%s: the log disagrees with the snapshot at index %d term %d (an interrupted snapshot "
        "install); it restarts after the snapshot", origin, snap.index, snap.term,
    )
    return snap_base, [], True


def open_data_dir(fs: FileSystem, data_dir: str) -> FileLock:
    """Create the data dir if missing, lock it and check that it can be read and written.

    Raises DataDirError naming the path, with the step that failed as its ``problem``.
    """
    step = "cannot be created"
    try:
        if not fs.exists(data_dir):
            fs.makedirs(data_dir)
            # Make the new dir's own name durable, or a crash could lose the whole node state.
            fs.fsync_dir(os.path.dirname(os.path.normpath(data_dir)) or ".")
        step = "is not writable"
        lock = fs.lock(os.path.join(data_dir, LOCK_NAME))
    except OSError as e:
        raise DataDirError(f"data dir {data_dir} is not usable: {e.strerror or e}", step, e) from e
    try:
        step = "cannot be read"
        fs.listdir(data_dir)
        # A writable LOCK file in a read-only dir passes the lock; refuse now, not at the
        # first vote.
        step = "is not writable"
        probe = os.path.join(data_dir, _PROBE_NAME)
        fs.create(probe).close()
        fs.remove(probe)
    except OSError as e:
        lock.release()
        raise DataDirError(f"data dir {data_dir} is not usable: {e.strerror or e}", step, e) from e
    return lock

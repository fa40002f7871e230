"""Segmented, append-only write-ahead log of Raft entries.

Theory of operation. The log is a directory of segment files named
``<seq 16 hex>-<first index 16 hex>.wal``, so that sorting names sorts segments. Each segment
starts with an 8-byte header (``MAGIC`` + u16 format version) followed by records::

    [u32 length][u32 crc32(payload)][payload = msgpack [term, index, type, data]]

(little-endian). Nothing is ever rewritten in place: replacing a conflicting suffix (Raft §5.3)
is just appending the new entries, and replay applies the rule "an entry at index i discards
every entry >= i read before it". A batch goes out as one ``write()``; ``sync()`` is one fsync
for all batches since the last one (group commit).

A *restart record* (type ``RESTART_TYPE``, never an ``EntryType``) says "the log restarts after
(index, term)": replay discards every entry read before it, and the next entry must be
index + 1. A follower writes one after installing a leader's snapshot (``append_restart``), so
its old log, which may conflict with the snapshot, never comes back. ``WAL.open`` reports the
last one it replayed as ``replayed_restart``.

Format versions: 1 holds entries only; 2 added restart records; 3 (written now) preallocates
segments, so the bytes after the last record are zeros up to the end of the file. Older
segments are still read, with their own rules (no zero tail), but never appended to: the next
write goes to a new segment, so an older build refuses a data dir it would misread with a
clear "version 3" error.

Preallocation and a full disk. Every segment is allocated whole (``segment_bytes``,
``FileHandle.allocate``: reserved and zero-filled) before it receives a record, so appends
inside it never need new disk space nor any metadata change (an fdatasync flushes data only),
and a full disk shows up when a segment is created, not in the middle of a record. The
next segment is made ahead of time as a *spare* (``SPARE_NAME``: allocated, header written and
fsync'd) once the current one is half full (or, synchronously, at open when there is no
current segment to write to), and becomes the next segment by a rename when the current one
cannot take a batch. Writing 64 MiB of zeros takes tens of milliseconds, so with a
``background`` executor the spare is made there (it touches nothing but the spare's file) and
adopted on the caller's thread once done; a rollover that finds it unfinished waits for it.
When the spare cannot be allocated (ENOSPC), its partial file is removed and the WAL enters
the *no-space* condition (``no_space``, logged once): appends go on inside the current
segment, ``retry_space`` tries the allocation again (the runtime calls it on a timer), and an
append that would need the missing segment raises ``NoSpace`` before writing anything. A batch
larger than a whole segment gets a fresh segment grown to fit it (the same rules on failure).
Should a write still hit ENOSPC (a file system that does not really reserve space), the bytes
it left are zeroed again before ``NoSpace`` is raised, so no partial record remains.

Rollover: the old segment is fsync'd before the next one is renamed into place and its
directory entry made durable, even when the caller never syncs (fsync = false); the spare's
header was fsync'd before the rename. Hence only the *last* segment can lose or tear data in a
crash, which is what recovery assumes.

Recovery (``WAL.open``) removes a leftover spare and replays every segment in order. In a
version 3 segment, a zero length field followed by nothing but zeros is the preallocated tail:
the end of that segment's log. A record that is incomplete or fails its CRC is a torn tail
when it lies in the last segment and no valid record follows it: it is erased (zeroed in a
version 3 segment, so the file stays preallocated; truncated away in older ones) and a warning
logged. Anywhere else it is corruption of data that was once durable, and ``CorruptLog``
names the file and byte offset; the node must not start. The replayed log need not start at
index 1 (``drop_before`` removes compacted segments); it is contiguous from its first record
on, or ``CorruptLog`` names the record that leaves a gap.

Failure: after a failed write or fsync the file is in an unknown state, so the WAL refuses
every later call with the same error. A failed fsync in particular must never be retried
(see ``raftd.storage.files``); recovery on restart repairs the tail. ``NoSpace`` is the
exception: it is raised only once the files are back in a known state.
"""

from __future__ import annotations

import contextlib
import logging
import os.path
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, wait
from dataclasses import dataclass

import msgpack

from raftd.core.errors import CorruptLog
from raftd.core.state import Entry, EntryType
from raftd.core.types import Index, Term
from raftd.storage.files import (
    FileHandle,
    FileSystem,
    NoSpace,
    UnsupportedVersion,
    is_no_space,
    write_new_file,
)

logger = logging.getLogger(__name__)

MAGIC = b"RFTWAL"
VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
PREALLOCATED_SINCE = 3
"""First format version whose segments are preallocated (a zero-filled tail ends the log)."""
DEFAULT_SEGMENT_BYTES = 64 << 20
SPARE_NAME = "next-segment.spare"
"""The preallocated next segment, until a rollover renames it (never matches a segment name)."""
RESTART_TYPE = 0xFF
"""Record type of a restart record; outside the (append-only, small) ``EntryType`` range."""

_HEADER = struct.Struct("<6sH")
_RECORD = struct.Struct("<II")
_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")
_ZEROS = bytes(1 << 20)
"""Compared against, a chunk at a time, to find where a zero-filled tail begins."""
_NONZERO_RUN = re.compile(rb"[^\x00]+")


def segment_name(seq: int, first_index: Index) -> str:
    return f"{seq:016x}-{first_index:016x}.wal"


def encode_records(entries: Sequence[Entry], pack: msgpack.Packer) -> bytes:
    """All records of a batch in one buffer, ready for a single write()."""
    parts: list[bytes] = []
    for e in entries:
        payload = pack.pack([e.term, e.index, e.type, e.data])
        parts.append(_RECORD.pack(len(payload), zlib.crc32(payload)))
        parts.append(payload)
    return b"".join(parts)


def encode_restart(index: Index, term: Term, pack: msgpack.Packer) -> bytes:
    """The restart record "the log restarts after (index, term)"."""
    payload: bytes = pack.pack([term, index, RESTART_TYPE, b""])
    return _RECORD.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass(frozen=True, slots=True)
class Restart:
    """A replayed restart record: the log restarts after ``index``, whose term is ``term``."""

    index: Index
    term: Term


@dataclass(slots=True)
class _Segment:
    path: str
    seq: int
    version: int
    min_index: Index | None
    """Lowest entry index written to this segment, 0 once it holds a restart record; None while
    it holds no record.

    NB: replay discards, from earlier segments, every entry >= any index written here (and all
    of them after a restart record), so every surviving entry of an earlier segment lies below
    this value (``drop_before`` relies on it).
    """
    end: int
    """Offset where the records end: the next write goes there."""
    size: int
    """Bytes allocated to the file; a write must end within them."""


@dataclass(slots=True)
class _Replay:
    """The log as replayed so far."""

    entries: list[Entry]
    restart: Restart | None = None
    """The last restart record, when one was read; ``entries`` follow it."""
    origin: str | None = None
    """Where the log's first record (entry or restart) lies, for error messages."""


class WAL:
    """Use ``WAL.open``; the constructor takes an already recovered state.

    ``replayed_restart`` and ``replayed_origin`` describe what ``open`` replayed (the last
    restart record, and "<segment> at byte offset <n>" of the log's first record); later
    writes do not change them.
    """

    def __init__(
        self, fs: FileSystem, dir: str, segments: list[_Segment], segment_bytes: int,
        replay: _Replay | None = None, background: Executor | None = None,
    ) -> None:
        self._fs = fs
        self._dir = dir
        self._segment_bytes = segment_bytes
        self._segments = segments
        # A segment of an older format is never appended to: the next write rolls.
        current = bool(segments) and segments[-1].version == VERSION
        self._handle: FileHandle | None = (
            fs.open_at(segments[-1].path, segments[-1].end) if current else None
        )
        self.replayed_restart = replay.restart if replay is not None else None
        self.replayed_origin = replay.origin if replay is not None else None
        self._packer = msgpack.Packer()
        self._dirty = False  # written since the last fsync
        self._failure: Exception | None = None
        self._spare = False
        """Whether the spare (the next segment, preallocated) exists."""
        self._background = background
        self._spare_job: Future[None] | None = None
        """The spare being made on ``background``, until adopted."""
        self._no_space = False

    @classmethod
    def open(
        cls, fs: FileSystem, dir: str, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        background: Executor | None = None,
    ) -> tuple[WAL, list[Entry]]:
        """Recover the log in ``dir`` (which must exist): the WAL and its surviving entries.

        Also prepares the spare when the next write may soon need it; a full disk then sets
        the no-space condition rather than failing the open.
        """
        spare = os.path.join(dir, SPARE_NAME)
        if fs.exists(spare):
            # Its allocation may not have finished; not made durable, should it come back.
            logger.info("%s: removing the preallocated next segment of the last run", spare)
            fs.remove(spare)
        names = [n for n in fs.listdir(dir) if _SEGMENT_NAME.match(n)]
        segments: list[_Segment] = []
        replay = _Replay([])
        for i, name in enumerate(names):
            path = os.path.join(dir, name)
            seq = int(name[:16], 16)
            is_last = i == len(names) - 1
            segment = _replay_segment(fs, path, seq, is_last, replay)
            if segment is not None:
                segments.append(segment)
        wal = cls(fs, dir, segments, segment_bytes, replay, background)
        try:
            wal._prepare_spare()
        except BaseException:
            wal.close()
            raise
        return wal, replay.entries

    # -- writing -------------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Write ``entries`` with one write and no fsync.

        A first index <= the last index replaces the suffix from there (replay applies it).
        Raises NoSpace, having written nothing, when the batch needs a segment the disk has
        no room for.
        """
        if not entries:
            return
        self._check_usable()
        first = entries[0].index
        self._write(encode_records(entries, self._packer), first)
        segment = self._segments[-1]
        segment.min_index = first if segment.min_index is None else min(segment.min_index, first)

    def append_restart(self, index: Index, term: Term) -> None:
        """Write a restart record: the log restarts after ``(index, term)`` (no fsync).

        Replay discards every entry written before it; the next append must start at
        ``index + 1``. Raises NoSpace like ``append``.
        """
        self._check_usable()
        self._write(encode_restart(index, term, self._packer), index + 1)
        # Every earlier segment is now garbage: let drop_before remove them whatever its bound.
        self._segments[-1].min_index = 0

    def make_room_for_restart(self, index: Index, term: Term) -> None:
        """Make sure ``append_restart(index, term)`` will need no new disk space (rolling to the
        next segment now if need be); raises NoSpace, having changed nothing, otherwise."""
        self._check_usable()
        self._make_room(len(encode_restart(index, term, self._packer)), index + 1)

    def sync(self) -> None:
        """fsync everything appended so far (no-op when nothing was)."""
        self._check_usable()
        if self._dirty and self._handle is not None:
            with self._failure_is_final():
                self._handle.fsync()
            self._dirty = False

    def drop_before(self, index: Index) -> None:
        """Remove whole segments holding only entries below ``index`` or entries that a later
        restart record discards (never the last segment)."""
        self._check_usable()
        while len(self._segments) > 1:
            later = [s.min_index for s in self._segments[1:] if s.min_index is not None]
            if not later or min(later) > index:
                return
            # Oldest first, each removal durable before the next: a crash can never leave a
            # hole in the middle of the log, which replay would refuse as corruption.
            with self._failure_is_final():
                self._fs.remove(self._segments[0].path)
                self._fs.fsync_dir(self._dir)
            del self._segments[0]

    def close(self) -> None:
        """Close the current segment; unsynced writes stay with the OS (not fsync'd here)."""
        if self._spare_job is not None:
            wait([self._spare_job])  # open() removes a spare it may have left half made
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    # -- disk space ----------------------------------------------------------------------------
    @property
    def no_space(self) -> bool:
        """Whether the next segment could not be preallocated (the disk is full); appends then
        only fit in what is left of the current segment (``room``). A spare being made on
        ``background`` counts as soon as it is done, so that the runtime, which asks before
        it appends, learns of a full disk before an append needs the missing segment."""
        self._adopt_spare()
        return self._no_space

    def room(self) -> int:
        """Bytes of records the current segment can still take without new disk space."""
        if self._handle is None:
            return 0
        segment = self._segments[-1]
        return segment.size - segment.end

    def retry_space(self) -> bool:
        """In the no-space condition, try to preallocate the next segment again; whether the
        condition is (now) clear. Costs nothing outside the condition."""
        self._adopt_spare()
        if not self._no_space:
            return True
        self._check_usable()
        self._start_spare()
        return not self._no_space

    # -- internals -----------------------------------------------------------------------------
    def _write(self, buf: bytes, first_index: Index) -> None:
        """Write ``buf`` at the end of the log, first making room for it; then prepare the
        spare if the current segment is half full."""
        self._make_room(len(buf), first_index)
        handle = self._handle
        assert handle is not None
        segment = self._segments[-1]
        with self._failure_is_final():
            try:
                handle.write(buf)
            except OSError as e:
                if not is_no_space(e):
                    raise
                self._erase_partial(segment, handle.tell())
                raise NoSpace(segment.path, "writing a WAL record") from e
            segment.end += len(buf)
            self._dirty = True
            self._prepare_spare()

    def _make_room(self, size: int, first_index: Index) -> None:
        """Make sure ``size`` bytes fit in the current segment's allocation: roll to the next
        segment (or grow a fresh one) as needed. NoSpace leaves the log as it was."""
        if self._handle is not None and size <= self.room():
            return
        with self._failure_is_final():
            if self._handle is None or self._segments[-1].end > _HEADER.size:
                self._roll(first_index)
            segment = self._segments[-1]
            if segment.end + size > segment.size:
                # A batch larger than a whole segment: grow this fresh one to fit it.
                assert self._handle is not None
                try:
                    self._handle.allocate(segment.end + size)
                except OSError as e:
                    if not is_no_space(e):
                        raise
                    self._enter_no_space()
                    raise NoSpace(segment.path, f"growing a WAL segment to {segment.end + size}"
                                  " bytes for one large batch") from e
                segment.size = segment.end + size

    def _roll(self, first_index: Index) -> None:
        """Close the current segment (fsync'd) and rename the spare into place after it."""
        self._adopt_spare(wait_for_it=True)
        if not self._spare:
            if self._no_space:
                raise NoSpace(os.path.join(self._dir, SPARE_NAME),
                              "the WAL's current segment is full and the next one could not "
                              "be preallocated")
            self._create_spare()
        if self._handle is not None:
            self._handle.fsync()
            self._handle.close()
            self._handle = None
            self._dirty = False
        seq = self._segments[-1].seq + 1 if self._segments else 1
        path = os.path.join(self._dir, segment_name(seq, first_index))
        self._fs.rename(os.path.join(self._dir, SPARE_NAME), path)
        self._fs.fsync_dir(self._dir)
        self._spare = False
        self._segments.append(
            _Segment(path, seq, VERSION, None, end=_HEADER.size, size=self._segment_bytes)
        )
        self._handle = self._fs.open_at(path, _HEADER.size)

    def _prepare_spare(self) -> None:
        """Start the spare once the current segment is half full (or there is none); a full
        disk only sets the no-space condition."""
        self._adopt_spare()
        if self._spare or self._no_space:
            return
        if self._handle is None:
            # The first append needs it at once: made now (at open, before the node serves),
            # or that append would block the event loop on tens of MiB of zeros, long enough
            # for a new leader waiting on our ack to give up under CheckQuorum.
            with contextlib.suppress(NoSpace):
                self._create_spare()
            return
        segment = self._segments[-1]
        if segment.end - _HEADER.size < (segment.size - _HEADER.size) // 2:
            return
        self._start_spare()

    def _start_spare(self) -> None:
        """Make the spare: on ``background`` if there is one, else now (NoSpace suppressed)."""
        if self._spare_job is not None:
            return
        if self._background is not None:
            self._spare_job = self._background.submit(self._write_spare)
            return
        with contextlib.suppress(NoSpace):
            self._create_spare()

    def _adopt_spare(self, *, wait_for_it: bool = False) -> None:
        """Take in the outcome of the spare made on ``background``, if it is done (or wait)."""
        job = self._spare_job
        if job is None or not (wait_for_it or job.done()):
            return
        self._spare_job = None
        try:
            with self._failure_is_final():
                job.result()
        except NoSpace:
            self._enter_no_space()
        else:
            self._spare_made()

    def _create_spare(self) -> None:
        """Make the spare now. On ENOSPC enter the no-space condition and raise NoSpace."""
        try:
            self._write_spare()
        except NoSpace:
            self._enter_no_space()
            raise
        self._spare_made()

    def _write_spare(self) -> None:
        """Preallocate the next segment under ``SPARE_NAME``, its header durable; on ENOSPC
        remove what was made and raise NoSpace. Touches nothing but that file, so it may run
        on ``background``."""
        # Its name is not made durable: open removes a leftover spare anyway.
        write_new_file(self._fs, os.path.join(self._dir, SPARE_NAME),
                       _HEADER.pack(MAGIC, VERSION),
                       f"preallocating the next WAL segment ({self._segment_bytes} bytes)",
                       allocate=self._segment_bytes)

    def _spare_made(self) -> None:
        self._spare = True
        if self._no_space:
            self._no_space = False
            logger.warning("%s: disk space is available again; the WAL takes writes",
                           os.path.join(self._dir, SPARE_NAME))

    def _enter_no_space(self) -> None:
        if not self._no_space:
            self._no_space = True
            logger.warning(
                "%s: no space left on device for the next WAL segment (%d bytes); %d bytes left "
                "in the current one; retrying periodically", self._dir, self._segment_bytes,
                self.room(),
            )

    def _erase_partial(self, segment: _Segment, reached: int) -> None:
        """Zero what a failed write left after the records (they were zeros before it), and
        point the handle back at the end of the records."""
        assert self._handle is not None
        self._handle.close()
        self._handle = None
        if reached > segment.end:
            eraser = self._fs.open_at(segment.path, segment.end)
            try:
                eraser.write(bytes(reached - segment.end))
            finally:
                eraser.close()
        self._handle = self._fs.open_at(segment.path, segment.end)

    @contextlib.contextmanager
    def _failure_is_final(self) -> Iterator[None]:
        """A failed write or fsync leaves the files in an unknown state: refuse all later calls.
        NoSpace is raised only once the files are back in a known state: it is not final."""
        try:
            yield
        except NoSpace:
            raise
        except Exception as e:
            self._failure = e
            raise

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise self._failure


def _replay_segment(
    fs: FileSystem, path: str, seq: int, is_last: bool, replay: _Replay
) -> _Segment | None:
    """Replay the segment's records into ``replay``; repair a torn tail.

    Returns None when the segment was a torn, record-less last segment and has been removed.
    """
    size = fs.size(path)
    if size < _HEADER.size and is_last:
        # A crash while creating the segment, before its header was durable.
        logger.warning("%s: removing segment with a torn header (%d bytes)", path, size)
        fs.remove(path)
        fs.fsync_dir(os.path.dirname(path) or ".")
        return None
    data = fs.read_range(path, 0, fs.content_size(path))  # the rest reads as zeros
    version = _check_header(data, path)
    segment = _Segment(path, seq, version, None, end=_HEADER.size, size=size)
    end = _replay_records(data, path, is_last, replay, segment)
    segment.end = end
    if version >= PREALLOCATED_SINCE:
        garbage_end = _nonzero_end(data, end)
        if garbage_end > end:
            logger.warning("%s: erasing torn tail at byte offset %d (%d bytes)",
                           path, end, garbage_end - end)
            handle = fs.open_at(path, end)
            try:
                handle.write(bytes(garbage_end - end))
                handle.fsync()
            finally:
                handle.close()
    elif end < size:
        dropped = size - end
        logger.warning("%s: truncating torn tail at byte offset %d (%d bytes)", path, end, dropped)
        fs.truncate(path, end)
        handle = fs.open_append(path)
        handle.fsync()
        handle.close()
        segment.size = end
    return segment


def _check_header(data: bytes, path: str) -> int:
    """The segment's format version, once its header is known good."""
    if len(data) < _HEADER.size:
        raise CorruptLog(f"{path}: segment header truncated ({len(data)} bytes)")
    magic, version = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptLog(f"{path}: not a WAL segment (bad magic {magic!r} at byte offset 0)")
    if version not in READABLE_VERSIONS:
        readable = ", ".join(map(str, READABLE_VERSIONS))
        raise UnsupportedVersion(
            f"{path}: WAL format version {version} is not supported (this build reads {readable})"
        )
    return int(version)


def _replay_records(
    data: bytes, path: str, is_last: bool, replay: _Replay, segment: _Segment
) -> int:
    """Replay records into ``replay``; return the offset where valid data ends."""
    view = memoryview(data)
    preallocated = segment.version >= PREALLOCATED_SINCE
    off = _HEADER.size
    while off < len(data):
        payload = _record_at(view, off)
        if payload is None:
            if preallocated and _nonzero_end(data, off) == off:
                return off  # the preallocated, zero-filled tail: the end of this segment's log
            if is_last and not _valid_record_after(data, view, off + 1):
                return off
            raise CorruptLog(f"{path}: corrupt record at byte offset {off} (bad length or CRC)")
        record = _decode(payload, path, off)
        if isinstance(record, Restart):
            replay.entries.clear()
            replay.restart = record
            replay.origin = f"{path} at byte offset {off}"
            segment.min_index = 0
        else:
            _merge(replay, record, path, off)
            if segment.min_index is None or record.index < segment.min_index:
                segment.min_index = record.index
        off += _RECORD.size + len(payload)
    return off


def valid_end(data: bytes) -> int:
    """Where the valid records of a segment's bytes end: its logical size, since segments are
    preallocated (the rest is zeros, or a torn tail). For tools that measure log growth."""
    view = memoryview(data)
    off = _HEADER.size
    while (payload := _record_at(view, off)) is not None:
        off += _RECORD.size + len(payload)
    return off


def _record_at(view: memoryview, off: int) -> memoryview | None:
    """The payload of the record at ``off`` if it is complete and its CRC matches."""
    if off + _RECORD.size > len(view):
        return None
    length, crc = _RECORD.unpack_from(view, off)
    start = off + _RECORD.size
    # A zero length is never written (a payload is at least a msgpack array header); refusing it
    # keeps zero-filled garbage (length 0, crc 0 = crc32(b"")) from passing as valid records.
    if length == 0 or start + length > len(view):
        return None
    payload = view[start : start + length]
    return payload if zlib.crc32(payload) == crc else None


def _nonzero_end(data: bytes, start: int) -> int:
    """The offset just past the last non-zero byte at or after ``start`` (``start`` when every
    byte from there on is zero). Scans from the end a chunk at a time, comparing at C speed."""
    end = len(data)
    while end > start:
        lo = max(start, end - len(_ZEROS))
        chunk = data[lo:end]
        if chunk != _ZEROS[: end - lo]:
            return lo + len(chunk.rstrip(b"\0"))
        end = lo
    return start


def _valid_record_after(data: bytes, view: memoryview, start: int) -> bool:
    """Whether any byte offset >= ``start`` holds a complete record with a matching CRC.

    A record's length field is not zero, so only offsets up to 3 bytes before a non-zero byte
    can hold one: runs of zeros (a preallocated tail) are skipped at C speed.
    """
    limit = len(view) - _RECORD.size  # a record needs its header and at least one byte
    checked = start
    for run in _NONZERO_RUN.finditer(data, start):
        lo, hi = max(checked, run.start() - 3), min(run.end(), limit)
        if any(_record_at(view, off) is not None for off in range(lo, hi)):
            return True
        checked = max(checked, hi)
        if checked >= limit:
            break
    return False


def _decode(payload: memoryview, path: str, off: int) -> Entry | Restart:
    try:
        term, index, etype, data = msgpack.unpackb(payload)
        if not (type(term) is int and type(index) is int and type(data) is bytes):
            raise ValueError(f"unexpected field types {[type(term), type(index), type(data)]}")
        if etype == RESTART_TYPE:
            return Restart(index=index, term=term)
        return Entry(term=term, index=index, type=EntryType(etype), data=data)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise CorruptLog(f"{path}: undecodable record at byte offset {off}: {e}") from e


def _merge(replay: _Replay, entry: Entry, path: str, off: int) -> None:
    """Append ``entry``, first discarding every replayed entry with an index >= its own."""
    entries, restart = replay.entries, replay.restart
    if restart is not None and entry.index <= restart.index:
        raise CorruptLog(
            f"{path}: entry {entry.index} at byte offset {off} precedes the log restart "
            f"after index {restart.index}"
        )
    if entries:
        base = entries[0].index
        if entry.index > base + len(entries):
            raise CorruptLog(
                f"{path}: entry {entry.index} at byte offset {off} leaves a gap after "
                f"entry {entries[-1].index}"
            )
        del entries[max(0, entry.index - base) :]
    elif restart is not None and entry.index > restart.index + 1:
        raise CorruptLog(
            f"{path}: entry {entry.index} at byte offset {off} leaves a gap after "
            f"the log restart after index {restart.index}"
        )
    if not entries and restart is None:
        replay.origin = f"{path} at byte offset {off}"
    entries.append(entry)

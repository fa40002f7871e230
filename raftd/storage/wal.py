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
last one it replayed as ``replayed_restart``. Format version 2 introduced it; version 1
segments (entries only) are still read, but never appended to, so an older build refuses a
data dir holding restart records with a clear "version 2" error instead of misreading them.

Rollover: when the current segment has reached ``segment_bytes``, the next batch opens a new
segment. The old one is fsync'd first and the new one is created with its header fsync'd and
its directory entry made durable, even when the caller never syncs (fsync = false). Hence
only the *last* segment can lose or tear data in a crash, which is what recovery assumes.

Recovery (``WAL.open``) replays every segment in order. A record that is incomplete or fails
its CRC is a torn tail when it lies in the last segment and no valid record follows it: the
file is truncated there and a warning logged. Anywhere else it is corruption of data that
was once durable, and ``CorruptLog`` names the file and byte offset; the node must not start.
The replayed log need not start at index 1 (``drop_before`` removes compacted segments); it is
contiguous from its first record on, or ``CorruptLog`` names the record that leaves a gap.

Failure: after a failed write or fsync the file is in an unknown state, so the WAL refuses
every later call with the same error. A failed fsync in particular must never be retried
(see ``raftd.storage.files``); recovery on restart repairs the tail.
"""

from __future__ import annotations

import contextlib
import logging
import os.path
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import msgpack

from raftd.core.errors import CorruptLog
from raftd.core.state import Entry, EntryType
from raftd.core.types import Index, Term
from raftd.storage.files import FileHandle, FileSystem, UnsupportedVersion

logger = logging.getLogger(__name__)

MAGIC = b"RFTWAL"
VERSION = 2
READABLE_VERSIONS = (1, 2)
DEFAULT_SEGMENT_BYTES = 64 << 20
RESTART_TYPE = 0xFF
"""Record type of a restart record; outside the (append-only, small) ``EntryType`` range."""

_HEADER = struct.Struct("<6sH")
_RECORD = struct.Struct("<II")
_SEGMENT_NAME = re.compile(r"^([0-9a-f]{16})-([0-9a-f]{16})\.wal$")


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
        replay: _Replay | None = None,
    ) -> None:
        self._fs = fs
        self._dir = dir
        self._segment_bytes = segment_bytes
        self._segments = segments
        # A segment of an older format is never appended to: the next write rolls.
        current = bool(segments) and segments[-1].version == VERSION
        self._handle: FileHandle | None = fs.open_append(segments[-1].path) if current else None
        self.replayed_restart = replay.restart if replay is not None else None
        self.replayed_origin = replay.origin if replay is not None else None
        self._packer = msgpack.Packer()
        self._dirty = False  # written since the last fsync
        self._failure: Exception | None = None

    @classmethod
    def open(
        cls, fs: FileSystem, dir: str, *, segment_bytes: int = DEFAULT_SEGMENT_BYTES
    ) -> tuple[WAL, list[Entry]]:
        """Recover the log in ``dir`` (which must exist): the WAL and its surviving entries."""
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
        return cls(fs, dir, segments, segment_bytes, replay), replay.entries

    # -- writing -------------------------------------------------------------------------------
    def append(self, entries: Sequence[Entry]) -> None:
        """Write ``entries`` with one write and no fsync.

        A first index <= the last index replaces the suffix from there (replay applies it).
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
        ``index + 1``.
        """
        self._check_usable()
        self._write(encode_restart(index, term, self._packer), index + 1)
        # Every earlier segment is now garbage: let drop_before remove them whatever its bound.
        self._segments[-1].min_index = 0

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
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    # -- internals -----------------------------------------------------------------------------
    def _write(self, buf: bytes, first_index: Index) -> None:
        """Write ``buf`` to the current segment, first rolling to a new one when it is full."""
        with self._failure_is_final():
            handle = self._handle
            if handle is None or handle.tell() >= self._segment_bytes:
                handle = self._roll(first_index)
            handle.write(buf)
        self._dirty = True

    def _roll(self, first_index: Index) -> FileHandle:
        if self._handle is not None:
            self._handle.fsync()
            self._handle.close()
            self._handle = None
            self._dirty = False
        seq = self._segments[-1].seq + 1 if self._segments else 1
        path = os.path.join(self._dir, segment_name(seq, first_index))
        handle = self._fs.create(path)
        handle.write(_HEADER.pack(MAGIC, VERSION))
        handle.fsync()
        self._fs.fsync_dir(self._dir)
        self._segments.append(_Segment(path, seq, VERSION, None))
        self._handle = handle
        return handle

    @contextlib.contextmanager
    def _failure_is_final(self) -> Iterator[None]:
        """A failed write or fsync leaves the files in an unknown state: refuse all later calls."""
        try:
            yield
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
    data = fs.read(path)
    if len(data) < _HEADER.size and is_last:
        # A crash while creating the segment, before its header was durable.
        logger.warning("%s: removing segment with a torn header (%d bytes)", path, len(data))
        fs.remove(path)
        fs.fsync_dir(os.path.dirname(path) or ".")
        return None
    segment = _Segment(path, seq, _check_header(data, path), None)
    end = _replay_records(data, path, is_last, replay, segment)
    if end < len(data):
        dropped = len(data) - end
        logger.warning("%s: truncating torn tail at byte offset %d (%d bytes)", path, end, dropped)
        fs.truncate(path, end)
        handle = fs.open_append(path)
        handle.fsync()
        handle.close()
    return segment


def _check_header(data: bytes, path: str) -> int:
    """The segment's format version, once its header is known good."""
    if len(data) < _HEADER.size:
        raise CorruptLog(f"{path}: segment header truncated ({len(data)} bytes)")
    magic, version = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptLog(f"{path}: not a WAL segment (bad magic {magic!r} at byte offset 0)")
    if version not in READABLE_VERSIONS:
        readable = " and ".join(map(str, READABLE_VERSIONS))
        raise UnsupportedVersion(
            f"{path}: WAL format version {version} is not supported (this build reads {readable})"
        )
    return int(version)


def _replay_records(
    data: bytes, path: str, is_last: bool, replay: _Replay, segment: _Segment
) -> int:
    """Replay records into ``replay``; return the offset where valid data ends."""
    view = memoryview(data)
    off = _HEADER.size
    while off < len(data):
        payload = _record_at(view, off)
        if payload is None:
            if is_last and not _valid_record_after(view, off + 1):
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


def _valid_record_after(view: memoryview, start: int) -> bool:
    """Whether any byte offset >= ``start`` holds a complete record with a matching CRC."""
    return any(_record_at(view, off) is not None for off in range(start, len(view) - _RECORD.size))


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

"""Snapshot files: a state machine image as of a log index, written atomically, verified on load.

Theory of operation. A snapshot lives in the data dir as ``snap-<index 16 hex>-<term 16 hex>.snap``
so that sorting names sorts snapshots by index. ``write`` streams the state machine's chunks
into ``<name>.tmp``, fsyncs it, renames it over the final name and fsyncs the directory: a crash
leaves either no file under the final name or a complete, durable one, never a mix (the same
dance as ``raftd.storage.hardstate``). A leftover ``.tmp`` is only ever a write that did not
finish; ``discard_temporary`` removes them when the data dir is opened. ``write`` touches
nothing but its own two names, so it may run in a worker thread while the event loop goes on.

File layout (little-endian), format version 1::

    [6s "RFTSNP"][u16 version][u32 header length][header: msgpack map index, term, voters,
    learners][data ...][u64 data length][u32 crc32 of every byte before it]

NB: the data length trails the data rather than sitting in the header because the data arrives
as an iterator of unknown total length and the file is append-only: nothing before the data
can be patched once written. A reader locates the data from the header length and the file
size, and cross-checks the trailing length.

Loading (``load_latest``) tries files newest first and returns the first whose CRC verifies; a
corrupt one is logged and skipped (the caller decides whether the log still reaches back to
an older one). A file of an unknown format version is refused outright with
``UnsupportedVersion`` naming it: it is not corrupt, merely newer than this build.
"""

from __future__ import annotations

import contextlib
import logging
import os.path
import re
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import msgpack

from raftd.core.state import ConfState, SnapshotMeta
from raftd.core.types import Index, Term
from raftd.storage.files import FileSystem, NoSpace, UnsupportedVersion, is_no_space

logger = logging.getLogger(__name__)

MAGIC = b"RFTSNP"
VERSION = 1
TEMP_SUFFIX = ".tmp"
READ_CHUNK_BYTES = 1 << 20
"""Verification reads the data in pieces of this size, so it never holds a whole file."""

_PREFIX = struct.Struct("<6sHI")  # magic, version, header length
_TRAILER = struct.Struct("<QI")  # data length, crc32
_LENGTH = struct.Struct("<Q")
_NAME = re.compile(r"^snap-([0-9a-f]{16})-([0-9a-f]{16})\.snap$")


class CorruptSnapshot(Exception):
    """A snapshot file failed its checks (structure or CRC); it must not be used."""


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A complete, durable snapshot file."""

    path: str
    meta: SnapshotMeta
    size: int
    """Bytes of the whole file."""


def snapshot_name(index: Index, term: Term) -> str:
    return f"snap-{index:016x}-{term:016x}.snap"


def write(
    fs: FileSystem, data_dir: str, meta: SnapshotMeta, chunks: Iterable[bytes]
) -> SnapshotFile:
    """Write a snapshot durably, streaming ``chunks`` (never joined in memory) into the file.

    Safe in a worker thread: it reads no shared state and writes only this snapshot's names.
    Raises FsyncError (fatal), NoSpace (an OSError: the disk is full) or another OSError; a
    failed write leaves no file behind.
    """
    path = os.path.join(data_dir, snapshot_name(meta.index, meta.term))
    tmp = path + TEMP_SUFFIX
    header = _encode_header(meta)
    head = _PREFIX.pack(MAGIC, VERSION, len(header)) + header
    try:
        handle = fs.create(tmp)
    except OSError as e:
        if is_no_space(e):
            raise NoSpace(tmp, "creating a snapshot file") from e
        raise
    try:
        handle.write(head)
        crc = zlib.crc32(head)
        data_len = 0
        for chunk in chunks:
            handle.write(chunk)
            crc = zlib.crc32(chunk, crc)
            data_len += len(chunk)
        length = _LENGTH.pack(data_len)
        handle.write(length + struct.pack("<I", zlib.crc32(length, crc)))
        handle.fsync()
    except Exception as e:
        handle.close()
        # Best effort: a crash leaves the temp file to ``discard_temporary`` instead.
        with contextlib.suppress(OSError):
            fs.remove(tmp)
        if is_no_space(e):
            raise NoSpace(tmp, "writing a snapshot") from e
        raise
    handle.close()
    fs.rename(tmp, path)
    fs.fsync_dir(data_dir)
    return SnapshotFile(path, meta, len(head) + data_len + _TRAILER.size)


def load_latest(fs: FileSystem, data_dir: str) -> SnapshotFile | None:
    """The newest snapshot file whose CRC verifies, or None when there is none.

    Corrupt files are logged and skipped; UnsupportedVersion is raised for an unknown format.
    """
    for name in reversed(_snapshot_names(fs, data_dir)):
        path = os.path.join(data_dir, name)
        try:
            return _verified(fs, path)
        except CorruptSnapshot as e:
            logger.warning("%s; skipping it in favour of an older snapshot", e)
    return None


def read_data(fs: FileSystem, path: str) -> bytes:
    """The state machine data of the snapshot file ``path``, checked against its CRC again."""
    layout = _read_layout(fs, path)
    data = fs.read_range(path, layout.data_start, layout.data_len)
    crc = zlib.crc32(_LENGTH.pack(len(data)), zlib.crc32(data, layout.head_crc))
    if len(data) != layout.data_len or crc != layout.crc:
        raise CorruptSnapshot(f"{path}: snapshot checksum mismatch")
    return data


def prune(fs: FileSystem, data_dir: str, keep: int = 2) -> None:
    """Remove all snapshot files but the ``keep`` newest (an older one is a fallback should the
    newest rot). Temporary files are left alone: a worker may be writing one."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    old = _snapshot_names(fs, data_dir)[:-keep]
    for name in old:
        fs.remove(os.path.join(data_dir, name))
    if old:
        fs.fsync_dir(data_dir)


def discard_temporary(fs: FileSystem, data_dir: str) -> None:
    """Remove the temp files of snapshot writes a crash interrupted (only while none runs)."""
    for name in fs.listdir(data_dir):
        if name.endswith(TEMP_SUFFIX) and _NAME.match(name.removesuffix(TEMP_SUFFIX)):
            logger.info("%s: removing an unfinished snapshot", os.path.join(data_dir, name))
            # Not made durable: should the name come back after a power cut, it goes again.
            fs.remove(os.path.join(data_dir, name))


# -- internals ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Layout:
    meta: SnapshotMeta
    data_start: int
    data_len: int
    head_crc: int
    """crc32 of every byte before the data."""
    crc: int
    """The stored crc32."""


def _snapshot_names(fs: FileSystem, data_dir: str) -> list[str]:
    """Snapshot file names, oldest first (fixed-width hex sorts as numbers)."""
    return sorted(n for n in fs.listdir(data_dir) if _NAME.match(n))


def _encode_header(meta: SnapshotMeta) -> bytes:
    header: bytes = msgpack.packb(
        {
            "index": meta.index,
            "term": meta.term,
            "voters": list(meta.conf_state.voters),
            "learners": list(meta.conf_state.learners),
            "auto_promote": list(meta.conf_state.auto_promote),
        }
    )
    return header


def _decode_header(header: bytes, path: str) -> SnapshotMeta:
    try:
        fields = msgpack.unpackb(header)
        index, term = fields["index"], fields["term"]
        voters, learners = fields["voters"], fields["learners"]
        auto_promote = fields.get("auto_promote", [])
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
        raise CorruptSnapshot(f"{path}: undecodable snapshot header: {e!r}") from e
    if not (
        type(index) is int
        and type(term) is int
        and _strings(voters)
        and _strings(learners)
        and _strings(auto_promote)
    ):
        raise CorruptSnapshot(f"{path}: snapshot header has fields of the wrong type: {fields!r}")
    conf = ConfState(
        voters=tuple(voters), learners=tuple(learners), auto_promote=tuple(auto_promote)
    )
    return SnapshotMeta(index, term, conf)


def _strings(value: object) -> bool:
    return isinstance(value, list) and all(type(v) is str for v in value)


def _read_layout(fs: FileSystem, path: str) -> _Layout:
    """Check everything but the data's CRC: magic, version, lengths, header, name."""
    size = fs.size(path)
    prefix = fs.read_range(path, 0, _PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise CorruptSnapshot(f"{path}: truncated snapshot ({size} bytes)")
    magic, version, header_len = _PREFIX.unpack(prefix)
    if magic != MAGIC:
        raise CorruptSnapshot(f"{path}: not a snapshot file (bad magic {magic!r})")
    if version != VERSION:
        raise UnsupportedVersion(
            f"{path}: snapshot format version {version} is not supported "
            f"(this build reads {VERSION})"
        )
    data_start = _PREFIX.size + header_len
    data_len = size - data_start - _TRAILER.size
    if data_len < 0:
        raise CorruptSnapshot(f"{path}: truncated snapshot ({size} bytes)")
    header = fs.read_range(path, _PREFIX.size, header_len)
    stored_len, crc = _TRAILER.unpack(fs.read_range(path, size - _TRAILER.size, _TRAILER.size))
    if stored_len != data_len:
        raise CorruptSnapshot(
            f"{path}: snapshot records {stored_len} data bytes but holds {data_len}"
        )
    meta = _decode_header(header, path)
    if os.path.basename(path) != snapshot_name(meta.index, meta.term):
        # The name orders the files for load_latest and prune; it must not lie.
        raise CorruptSnapshot(
            f"{path}: snapshot header says index {meta.index} term {meta.term}, unlike its name"
        )
    return _Layout(meta, data_start, data_len, zlib.crc32(header, zlib.crc32(prefix)), crc)


def _verified(fs: FileSystem, path: str) -> SnapshotFile:
    layout = _read_layout(fs, path)
    crc = layout.head_crc
    end = layout.data_start + layout.data_len
    for offset in range(layout.data_start, end, READ_CHUNK_BYTES):
        crc = zlib.crc32(fs.read_range(path, offset, min(READ_CHUNK_BYTES, end - offset)), crc)
    if zlib.crc32(_LENGTH.pack(layout.data_len), crc) != layout.crc:
        raise CorruptSnapshot(f"{path}: snapshot checksum mismatch")
    return SnapshotFile(path, layout.meta, end + _TRAILER.size)

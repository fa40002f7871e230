"""The hard-state file: ``current_term``, ``voted_for`` and ``catching_up``, durable and atomic.

Theory of operation. The file holds two fixed-size *slots*, each ``[magic][u32 crc][u64 seq]
[u32 length][payload]`` zero-padded to ``SLOT_BYTES`` (a page each), the payload a msgpack
map carrying ``version``. ``HardStateFile.save`` overwrites the slot NOT holding the newest
state and makes it durable with one fdatasync: a vote costs one sync instead of the four of a
replace (temp file, fsync, rename, directory fsync), which is what elections wait for. This
departs from DESIGN.md's replace-per-save for that reason; the crash argument is the same
one-valid-copy-at-every-moment as a rename's. A crash tearing
that write leaves a slot whose CRC fails, so ``load`` falls back to the other slot: the state
before the unfinished save, which was never acknowledged. Raft must not answer a vote before
the vote is on disk (Raft Figure 2): ``save`` returns only after the sync.

The file itself is created (or upgraded from the version-1 format, ``[u32 crc][payload]``,
or from the first slotted files, whose two 512-byte slots shared a page) by an atomic
replace: ``hardstate.tmp`` written and fsync'd, renamed over ``hardstate``, the directory
fsync'd. The module-level ``save`` always does that (tools such as restore use it).

Saves are rare (a new term or a vote), so they are always fsync'd, even when the node runs
with ``fsync = false`` for its log.

The same atomic file format keeps the configuration applied last (``save_conf``/``load_conf``,
file ``confstate``): a configuration takes effect when its entry is applied, and a restarted
node must not fall back to an older one while it waits to learn the commit index again, or
two configurations apart it could be elected by a majority that no longer is one.

The new file may need a block of disk space: on a full disk ``save`` removes its temporary
file and raises ``NoSpace``, the live file untouched.
"""

from __future__ import annotations

import os.path
import struct
import zlib

import msgpack

from raftd.core.state import ConfState, HardState
from raftd.storage.files import FileSystem, UnsupportedVersion, replace_file

FILE_NAME = "hardstate"
CONF_FILE_NAME = "confstate"
VERSION = 1
"""Of the payload map (the same in both file formats)."""

SLOT_MAGIC = b"RHS2"
SLOT_BYTES = 4096
"""A page per slot: the device writes back the pages a save dirtied, and a torn write of one
page can then only damage the slot being written, never the other (the last durable state)."""
FIRST_SLOT_BYTES = 512
"""Slots of the first two-slot files (both in one page), still read; the next save replaces
such a file by one of page-sized slots."""
_SLOT_HEADER = struct.Struct("<4sIQI")  # magic, crc32(seq, length, payload), seq, length
_SLOT_SEQ = struct.Struct("<QI")

_CRC = struct.Struct("<I")


class CorruptHardState(Exception):
    """The hard-state file exists but cannot be trusted; the node must not start."""


def _payload(hs: HardState) -> bytes:
    payload: bytes = msgpack.packb(
        {
            "version": VERSION,
            "current_term": hs.current_term,
            "voted_for": hs.voted_for,
            "catching_up": hs.catching_up,
        }
    )
    return payload


def _slot(seq: int, payload: bytes) -> bytes:
    body = _SLOT_SEQ.pack(seq, len(payload)) + payload
    slot = _SLOT_HEADER.pack(SLOT_MAGIC, zlib.crc32(body), seq, len(payload)) + payload
    if len(slot) > SLOT_BYTES:
        raise ValueError(f"hard state of {len(slot)} bytes does not fit a {SLOT_BYTES}-byte slot")
    return slot.ljust(SLOT_BYTES, b"\0")


def save(fs: FileSystem, dir: str, hs: HardState) -> None:
    """Replace the hard-state file in ``dir`` by a fresh one; durable when this returns."""
    replace_file(fs, dir, FILE_NAME, _slot(1, _payload(hs)) + bytes(SLOT_BYTES),
             "saving the hard state")


class HardStateFile:
    """The hard state of one data dir, updated in place (one sync per save)."""

    def __init__(self, fs: FileSystem, dir: str) -> None:
        self._fs = fs
        self._dir = dir
        self._seq = _newest_slot_seq(fs, dir)
        """Sequence number of the newest valid slot; 0 when the file must be (re)created
        (missing, of the version-1 format, or of 512-byte slots). Slot ``(seq - 1) % 2``
        holds state ``seq``: the file is created with state 1 in slot 0."""

    def save(self, hs: HardState) -> None:
        if self._seq == 0:
            save(self._fs, self._dir, hs)
            self._seq = 1
            return
        # The slot not holding the newest state (seq): a torn write falls back to it.
        handle = self._fs.open_at(os.path.join(self._dir, FILE_NAME),
                                  (self._seq % 2) * SLOT_BYTES)
        try:
            handle.write(_slot(self._seq + 1, _payload(hs)))
            handle.fsync()
        finally:
            handle.close()
        self._seq += 1


def _newest_slot_seq(fs: FileSystem, dir: str) -> int:
    path = os.path.join(dir, FILE_NAME)
    if not fs.exists(path):
        return 0
    data = fs.read(path)
    slots = _valid_slots(data) if len(data) == 2 * SLOT_BYTES else []
    return max(seq for seq, _ in slots) if slots else 0


def _valid_slots(data: bytes) -> list[tuple[int, bytes]]:
    """(seq, payload) of each slot whose magic and CRC hold; [] for a version-1 file."""
    if len(data) not in (2 * SLOT_BYTES, 2 * FIRST_SLOT_BYTES):
        return []
    size = len(data) // 2
    slots = []
    for offset in (0, size):
        magic, crc, seq, length = _SLOT_HEADER.unpack_from(data, offset)
        start = offset + _SLOT_HEADER.size
        if magic != SLOT_MAGIC or start + length > offset + size:
            continue
        payload = data[start : start + length]
        if zlib.crc32(_SLOT_SEQ.pack(seq, length) + payload) == crc:
            slots.append((seq, payload))
    return slots


def save_conf(fs: FileSystem, dir: str, conf: ConfState, index: int) -> None:
    """Record ``conf`` as applied at log ``index``; durable when this returns."""
    payload = msgpack.packb(
        {
            "version": VERSION,
            "index": index,
            "voters": list(conf.voters),
            "learners": list(conf.learners),
            "auto_promote": list(conf.auto_promote),
        }
    )
    replace_file(fs, dir, CONF_FILE_NAME, _CRC.pack(zlib.crc32(payload)) + payload,
             "saving the configuration")


def load_conf(fs: FileSystem, dir: str) -> tuple[ConfState, int] | None:
    """The configuration applied last and its log index, or None when none was saved."""
    fields = _read(fs, dir, CONF_FILE_NAME, slotted=False)
    if fields is None:
        return None
    path = os.path.join(dir, CONF_FILE_NAME)
    try:
        index = fields["index"]
        lists = [fields[name] for name in ("voters", "learners", "auto_promote")]
    except KeyError as e:
        raise CorruptHardState(f"{path}: configuration lacks field {e}") from e
    if type(index) is not int or not all(
        type(ids) is list and all(type(i) is str for i in ids) for ids in lists
    ):
        raise CorruptHardState(f"{path}: configuration has fields of the wrong type: {fields!r}")
    voters, learners, auto = (tuple(ids) for ids in lists)
    return ConfState(voters=voters, learners=learners, auto_promote=auto), index


def _read(fs: FileSystem, dir: str, name: str, *, slotted: bool) -> dict[str, object] | None:
    """The fields of file ``name``: a ``[crc][payload]`` file, or (``slotted``: the hard
    state) a two-slot one, told apart by its length."""
    path = os.path.join(dir, name)
    if not fs.exists(path):
        return None
    data = fs.read(path)
    if slotted and len(data) in (2 * SLOT_BYTES, 2 * FIRST_SLOT_BYTES):
        slots = _valid_slots(data)
        if not slots:
            raise CorruptHardState(f"{path}: no slot passes its checksum; refusing to start")
        payload = max(slots)[1]
    elif len(data) < _CRC.size or _CRC.unpack_from(data)[0] != zlib.crc32(data[_CRC.size :]):
        raise CorruptHardState(f"{path}: checksum mismatch ({len(data)} bytes); refusing to start")
    else:
        payload = data[_CRC.size :]
    try:
        fields = msgpack.unpackb(payload)
        version = fields["version"]
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as e:
        raise CorruptHardState(f"{path}: undecodable {name}: {e!r}") from e
    if version != VERSION:
        raise UnsupportedVersion(
            f"{path}: {name} format version {version} is not supported "
            f"(this build reads {VERSION})"
        )
    return dict(fields)


def load(fs: FileSystem, dir: str) -> HardState | None:
    """The saved hard state, or None when none was ever saved in ``dir``."""
    fields = _read(fs, dir, FILE_NAME, slotted=True)
    if fields is None:
        return None
    path = os.path.join(dir, FILE_NAME)
    try:
        hs = HardState(
            current_term=fields["current_term"],
            voted_for=fields["voted_for"],
            catching_up=fields["catching_up"],
        )
    except KeyError as e:
        raise CorruptHardState(f"{path}: hard state lacks field {e}") from e
    types = (type(hs.current_term), type(hs.voted_for), type(hs.catching_up))
    if types != (int, str, bool):
        raise CorruptHardState(f"{path}: hard state has fields of the wrong type: {fields!r}")
    return hs

"""The hard-state file: ``current_term``, ``voted_for`` and ``catching_up``, replaced atomically.

Theory of operation: the file is ``[u32 crc32(payload)][payload]`` with the payload a msgpack
map carrying ``version``. A save never touches the live file: it writes ``hardstate.tmp``,
fsyncs it, renames it over ``hardstate`` and fsyncs the directory. A crash at any point leaves
either the old file or the new one under the name (rename is atomic and the new content is
durable before the rename can be), so a load after a crash sees one of the two, never a mix.
The final directory fsync makes the rename itself durable before ``save`` returns: Raft must
not answer a vote before the vote is on disk (Raft Figure 2).

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

import contextlib
import os.path
import struct
import zlib

import msgpack

from raftd.core.state import ConfState, HardState
from raftd.storage.files import FileSystem, NoSpace, UnsupportedVersion, is_no_space

FILE_NAME = "hardstate"
CONF_FILE_NAME = "confstate"
VERSION = 1

_CRC = struct.Struct("<I")


class CorruptHardState(Exception):
    """The hard-state file exists but cannot be trusted; the node must not start."""


def save(fs: FileSystem, dir: str, hs: HardState) -> None:
    """Replace the hard state in ``dir``; durable when this returns."""
    payload = msgpack.packb(
        {
            "version": VERSION,
            "current_term": hs.current_term,
            "voted_for": hs.voted_for,
            "catching_up": hs.catching_up,
        }
    )
    _replace(fs, dir, FILE_NAME, payload, "saving the hard state")


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
    _replace(fs, dir, CONF_FILE_NAME, payload, "saving the configuration")


def load_conf(fs: FileSystem, dir: str) -> tuple[ConfState, int] | None:
    """The configuration applied last and its log index, or None when none was saved."""
    fields = _read(fs, dir, CONF_FILE_NAME)
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


def _replace(fs: FileSystem, dir: str, name: str, payload: bytes, what: str) -> None:
    path = os.path.join(dir, name)
    tmp = path + ".tmp"
    try:
        handle = fs.create(tmp)
        try:
            handle.write(_CRC.pack(zlib.crc32(payload)) + payload)
            handle.fsync()
        finally:
            handle.close()
    except OSError as e:
        if not is_no_space(e):
            raise
        with contextlib.suppress(OSError):
            fs.remove(tmp)
        raise NoSpace(tmp, what) from e
    fs.rename(tmp, path)
    fs.fsync_dir(dir)


def _read(fs: FileSystem, dir: str, name: str) -> dict[str, object] | None:
    path = os.path.join(dir, name)
    if not fs.exists(path):
        return None
    data = fs.read(path)
    if len(data) < _CRC.size or _CRC.unpack_from(data)[0] != zlib.crc32(data[_CRC.size :]):
        raise CorruptHardState(f"{path}: checksum mismatch ({len(data)} bytes); refusing to start")
    try:
        fields = msgpack.unpackb(data[_CRC.size :])
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
    fields = _read(fs, dir, FILE_NAME)
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

"""The backup file format: one consistent snapshot of a cluster, portable to a new cluster.

``raftctl snapshot save FILE`` writes it and ``raftd restore FILE`` reads it; both go through
this module, so the format is defined once. A backup is one msgpack map::

    {"format": "rafty-backup", "version": 1,
     "index": int, "term": int,          # the last log entry the state includes
     "voters": [str], "learners": [str], # the configuration at that entry
     "data": bytes,                      # a DictStateMachine snapshot (Capture.chunks())
     "sha256": str}                      # hex digest, see ``_digest``

Why a separate format rather than a copy of a ``snap-*.snap`` file: a backup travels (to
another host, another cluster, object storage) and is read by people and scripts, so it is
self-describing (``format``), carries a strong checksum over *every* field (a CRC32 only
guards against disk rot), and holds nothing tied to one node's data dir.

Writing is atomic (temp file, fsync, rename, fsync of the directory): a crash leaves either the
previous file or the complete new one, never a torn backup under the final name. The rename
replaces a name, so it must only ever replace a regular file: a symlink is followed (its target
is replaced, the link stays) and a FIFO, device, socket or directory is refused (``target``).
The file is created with mode 0600: it holds all of the cluster's data.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from dataclasses import dataclass
from typing import Any, TypeGuard

import msgpack

from raftd.storage.files import OsFile, OsFileSystem

FORMAT = "rafty-backup"
VERSION = 1
TEMP_SUFFIX = ".tmp"


class BackupError(Exception):
    """The file is not a usable backup; the message names the file and says why, in one line."""


class BadTarget(Exception):
    """A backup cannot be saved there: the path exists and is not a regular file (one line)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Backup:
    """A snapshot of the whole replicated state as of log entry (``index``, ``term``)."""

    index: int
    term: int
    voters: tuple[str, ...]
    learners: tuple[str, ...]
    data: bytes
    """The state machine's snapshot, as ``DictStateMachine.restore`` reads it."""

    @property
    def sha256(self) -> str:
        return _digest(self.index, self.term, self.voters, self.learners, self.data)


def from_snapshot_response(response: dict[str, Any]) -> Backup:
    """The backup carried by a ``{"type": "snapshot"}`` answer; ValueError if malformed."""
    index, term = response.get("index"), response.get("term")
    voters, learners = response.get("voters"), response.get("learners")
    data = response.get("data")
    if type(index) is not int or type(term) is not int or index < 1 or term < 1:
        raise ValueError(f"snapshot at index {index!r} term {term!r} is not a valid position")
    if not _strings(voters) or not _strings(learners) or not voters:
        raise ValueError(f"snapshot configuration is malformed: voters {voters!r}")
    if type(data) is not bytes:
        raise ValueError("snapshot response lacks its data")
    return Backup(index=index, term=term, voters=tuple(voters), learners=tuple(learners),
                  data=data)


def encode(backup: Backup) -> bytes:
    packed: bytes = msgpack.packb(
        {
            "format": FORMAT,
            "version": VERSION,
            "index": backup.index,
            "term": backup.term,
            "voters": list(backup.voters),
            "learners": list(backup.learners),
            "data": backup.data,
            "sha256": backup.sha256,
        },
        use_bin_type=True,
    )
    return packed


def decode(raw: bytes, origin: str) -> Backup:
    """Parse and verify a backup; BackupError naming ``origin`` if anything is off."""
    try:
        fields = msgpack.unpackb(raw, raw=False, max_bin_len=len(raw), max_str_len=len(raw))
    except (ValueError, msgpack.UnpackException) as e:
        raise BackupError(f"{origin}: not a rafty backup (undecodable: {e})") from None
    if not isinstance(fields, dict) or fields.get("format") != FORMAT:
        raise BackupError(f"{origin}: not a rafty backup (no format {FORMAT!r})")
    version = fields.get("version")
    if version != VERSION:
        raise BackupError(
            f"{origin}: backup format version {version!r} is not supported "
            f"(this build reads {VERSION})"
        )
    try:
        backup = from_snapshot_response(fields)
    except ValueError as e:
        raise BackupError(f"{origin}: malformed backup: {e}") from None
    if fields.get("sha256") != backup.sha256:
        raise BackupError(f"{origin}: backup checksum mismatch (the file is corrupt or truncated)")
    return backup


def target(path: str) -> str:
    """The file a backup saved as ``path`` replaces: ``path`` with every symlink followed.

    Raises BadTarget if it exists and is not a regular file (renaming over a FIFO or a device
    node would destroy it), OSError if it cannot be looked at; writes nothing.
    """
    real = os.path.realpath(path)
    try:
        # stat(path), not stat(real): the kernel follows links that realpath cannot name
        # (/dev/stdout -> /proc/self/fd/1 -> "pipe:[...]").
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return real  # a new file (or a dangling link's target): created by ``save``
    if not stat.S_ISREG(mode):
        shown = f"'{path}'" if real == os.path.abspath(path) else f"'{path}' (-> '{real}')"
        raise BadTarget(f"{shown} is {_kind(mode)}, not a regular file")
    return real


def save(path: str, backup: Backup) -> int:
    """Write ``backup`` to ``target(path)`` atomically and durably, mode 0600; returns the
    file's size in bytes.

    Raises BadTarget (before writing anything) as ``target`` does, OSError (or FsyncError)
    when the write fails, leaving no temp file behind.
    """
    final = target(path)
    directory = os.path.dirname(final)
    payload = encode(backup)
    # mkstemp: mode 0600 (a umask only narrows it), and a fresh name (O_EXCL) that two concurrent
    # saves, or a symlink planted in a shared directory, cannot collide with.
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(final) + ".", suffix=TEMP_SUFFIX,
                               dir=directory)
    handle = OsFile(tmp, fd, 0)
    fs = OsFileSystem()
    try:
        try:
            handle.write(payload)
            handle.fsync()
        finally:
            handle.close()
        fs.rename(tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            fs.remove(tmp)
        raise
    fs.fsync_dir(directory)
    return len(payload)


def load(path: str) -> Backup:
    """Read and verify the backup at ``path``; BackupError (one line) if it is unusable."""
    try:
        raw = OsFileSystem().read(path)
    except OSError as e:
        raise BackupError(f"cannot read {path}: {e.strerror or e}") from None
    return decode(raw, path)


def _digest(
    index: int, term: int, voters: tuple[str, ...], learners: tuple[str, ...], data: bytes
) -> str:
    """sha256 over the metadata (msgpack of [format, version, index, term, voters, learners])
    followed by the data: a flipped bit anywhere, position and configuration included, shows."""
    meta = msgpack.packb([FORMAT, VERSION, index, term, list(voters), list(learners)])
    h = hashlib.sha256(meta)
    h.update(data)
    return h.hexdigest()


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def _strings(value: object) -> TypeGuard[list[str] | tuple[str, ...]]:
    return isinstance(value, (list, tuple)) and all(type(v) is str for v in value)

"""The file-system seam: storage code does all its I/O through a ``FileSystem``.

Theory of operation: the WAL, the hard-state file and the snapshot files need only a handful of
primitives (sequential write handles, preallocation, whole-file and ranged reads, truncate,
rename, remove, and the two kinds of fsync).
``OsFileSystem`` maps them onto ``os``; the simulator swaps in ``tests.sim.disk.SimFileSystem``,
an in-memory disk that models what survives a power loss (and, given a capacity, a full disk).
Nothing above this module imports ``os`` for I/O, so the production recovery code is exactly
the code the simulator crashes.

Durability rules every caller relies on (POSIX, and modelled by the simulator):

- data written to a file is durable only after ``FileHandle.fsync()``;
- creating, renaming or removing a name is durable only after ``fsync_dir()`` of its parent.

NB: an fsync failure is fatal. After a failed fsync the kernel may already have dropped the
dirty pages and marked them clean, so a retry can "succeed" without the data ever reaching the
disk (the 2018 PostgreSQL "fsyncgate"). Both implementations therefore raise ``FsyncError``,
which is deliberately not an ``OSError``: no handler written for ordinary I/O errors catches
it by accident, and the server logs it and exits non-zero.

A full disk is not fatal. Writes land at a handle's own offset (``pwrite``), so a file can be
preallocated (``FileHandle.allocate``: ``posix_fallocate``, then zeros written over it, so the
blocks are reserved and their extents already written) and then filled in place without ever
needing new space: the WAL allocates each segment whole before writing to it, which turns
ENOSPC into an error of segment creation rather than of an arbitrary append. Storage code
raises ``NoSpace`` (an ``OSError``, errno ENOSPC) once it has undone whatever a refused write
left behind, so a caller may carry on and retry later.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from typing import Protocol


class FsyncError(Exception):
    """fsync failed: the data may be lost and the node must stop, never retry."""

    def __init__(self, path: str, cause: OSError) -> None:
        super().__init__(f"fsync of {path} failed: {cause.strerror or cause} (fatal, not retried)")
        self.path = path


SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
"""Errors meaning "the disk (or the quota) is full": a later retry may succeed."""


class NoSpace(OSError):
    """The disk is full: the operation was refused and left nothing behind (retry later)."""

    def __init__(self, path: str, what: str) -> None:
        super().__init__(errno.ENOSPC, f"no space left on device: {what}", path)


def is_no_space(e: BaseException) -> bool:
    """Whether ``e`` is an OSError saying the disk or the quota is full."""
    return isinstance(e, OSError) and e.errno in SPACE_ERRNOS


LOCKED = "is locked"


class DataDirError(Exception):
    """The data dir cannot be used: not creatable, not writable, or locked by another daemon.

    ``problem`` names the step that failed ("cannot be created", "cannot be read", "is not
    writable" or ``LOCKED``) and ``cause`` the OSError behind it, if any.
    """

    def __init__(self, message: str, problem: str = "is not usable",
                 cause: OSError | None = None) -> None:
        super().__init__(message)
        self.problem = problem
        self.cause = cause


class UnsupportedVersion(Exception):
    """A storage file carries a format version this build does not understand."""


class FileHandle(Protocol):
    """An open file written sequentially from an offset (its end, unless opened with
    ``FileSystem.open_at``)."""

    def write(self, data: bytes) -> None:
        """Write all of ``data`` at the handle's offset and advance it (short writes are
        retried). After an error, ``tell`` says how far the write got."""

    def allocate(self, size: int) -> None:
        """Reserve disk space so the file spans at least ``size`` bytes; bytes past its old
        end read as zeros. Writes inside the reserved span never need new space, nor any
        change of file-system metadata, so their fdatasync flushes data only. Raises an
        OSError (ENOSPC) when the disk cannot hold them; the caller removes the file."""

    def fsync(self) -> None:
        """Make every write so far durable; raises FsyncError."""

    def tell(self) -> int:
        """The offset of the next write."""

    def close(self) -> None: ...


class FileLock(Protocol):
    def release(self) -> None: ...


class FileSystem(Protocol):
    def makedirs(self, path: str) -> None:
        """Create ``path`` and missing parents; no error if it exists."""

    def listdir(self, path: str) -> list[str]:
        """Names in the directory ``path``, sorted."""

    def exists(self, path: str) -> bool: ...

    def read(self, path: str) -> bytes:
        """The whole content of the file."""

    def size(self, path: str) -> int:
        """The file's length in bytes."""

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer only at the end of the file)."""

    def content_size(self, path: str) -> int:
        """Where the file's possibly non-zero bytes end: every byte from there to its size
        reads as zero. The real disk answers the size (only reading could tell more); the
        simulator answers where its written bytes end, so that reading a preallocated file
        does not make it produce megabytes of zeros."""

    def create(self, path: str) -> FileHandle:
        """Create (or empty) the file and open it for appending."""

    def open_append(self, path: str) -> FileHandle:
        """Open an existing file for appending."""

    def open_at(self, path: str, offset: int) -> FileHandle:
        """Open an existing file for writing from ``offset`` on (overwriting what is there)."""

    def truncate(self, path: str, size: int) -> None: ...

    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` with ``src``."""

    def remove(self, path: str) -> None: ...

    def fsync_dir(self, path: str) -> None:
        """Make creations, renames and removals in directory ``path`` durable."""

    def lock(self, path: str) -> FileLock:
        """Take an exclusive lock on the file ``path``; DataDirError if another holder has it."""


# fdatasync skips flushing metadata that reading the data back does not need (mtime).
_datasync = getattr(os, "fdatasync", os.fsync)
_fallocate = getattr(os, "posix_fallocate", None)
_ZEROS = bytes(1 << 20)


class OsFile:
    """A file descriptor written with ``pwrite`` at an offset it tracks itself."""

    def __init__(self, path: str, fd: int, offset: int) -> None:
        self._path = path
        self._fd = fd
        self._offset = offset

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, self._offset)
            view = view[n:]
            self._offset += n

    def allocate(self, size: int) -> None:
        end = os.fstat(self._fd).st_size
        if _fallocate is None:
            if end < size:
                os.ftruncate(self._fd, size)  # no posix_fallocate (macOS): sparse, unreserved
            return
        _fallocate(self._fd, 0, size)
        # fallocate leaves "unwritten" extents: the first write into each converts it, a
        # metadata change that turns every later fdatasync into a journal commit. Zeros
        # written now make those fdatasyncs data-only (here: p50 200 -> 110 us).
        for offset in range(end, size, len(_ZEROS)):
            os.pwrite(self._fd, _ZEROS[: size - offset], offset)  # [:n] past the end: no copy

    def fsync(self) -> None:
        try:
            _datasync(self._fd)
        except OSError as e:
            raise FsyncError(self._path, e) from e

    def tell(self) -> int:
        return self._offset

    def close(self) -> None:
        os.close(self._fd)


class OsFileLock:
    """An ``flock`` held while its descriptor is open (the kernel drops it if the process dies)."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class OsFileSystem:
    """The real disk."""

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def size(self, path: str) -> int:
        return os.path.getsize(path)

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(size)  # a buffered read loops until ``size`` bytes or the end

    def content_size(self, path: str) -> int:
        return os.path.getsize(path)

    def create(self, path: str) -> OsFile:
        return OsFile(path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), 0)

    def open_append(self, path: str) -> OsFile:
        fd = os.open(path, os.O_WRONLY)
        return OsFile(path, fd, os.lseek(fd, 0, os.SEEK_END))

    def open_at(self, path: str, offset: int) -> OsFile:
        return OsFile(path, os.open(path, os.O_WRONLY), offset)

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def rename(self, src: str, dst: str) -> None:
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.remove(path)

    def fsync_dir(self, path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError as e:
            raise FsyncError(path, e) from e
        finally:
            os.close(fd)

    def lock(self, path: str) -> OsFileLock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise DataDirError(f"{path} is locked: another raftd is using this data dir",
                                   LOCKED, e) from e
            raise
        return OsFileLock(fd)


def write_new_file(
    fs: FileSystem, path: str, content: bytes, what: str, *, allocate: int = 0
) -> None:
    """Create ``path`` holding ``content``, fsync'd (its directory entry is not), after
    reserving ``allocate`` bytes for it (``FileHandle.allocate``). When the disk is full,
    remove what was made and raise NoSpace (``what`` says what was written)."""
    try:
        handle = fs.create(path)
        try:
            if allocate:
                handle.allocate(allocate)
            handle.write(content)
            handle.fsync()
        finally:
            handle.close()
    except OSError as e:
        if not is_no_space(e):
            raise
        with contextlib.suppress(OSError):
            fs.remove(path)
        raise NoSpace(path, what) from e


def replace_file(fs: FileSystem, dir: str, name: str, content: bytes, what: str) -> None:
    """Make ``dir/name`` hold ``content``, atomically and durably (temp file, fsync, rename,
    fsync of the dir). Raises NoSpace (``what`` says what was written), leaving no temp file,
    when the disk is full."""
    path = os.path.join(dir, name)
    tmp = path + ".tmp"
    write_new_file(fs, tmp, content, what)
    fs.rename(tmp, path)
    fs.fsync_dir(dir)

"""SimFileSystem: an in-memory disk that loses exactly what a power cut may lose.

Theory of operation: every file is an inode holding its current bytes (what reads see, i.e.
the page cache) and its durable bytes (what the platter holds). ``FileHandle.fsync`` copies
current to durable. Names live in two maps: the current namespace and the durable one;
``fsync_dir(d)`` copies the entries whose parent is ``d`` from the first to the second.
``crash(rng)`` is the power cut: the namespace reverts to the durable one and each file to its
durable bytes, except that, with probability ``TEAR_PROBABILITY``, a file whose unsynced writes
only appended keeps a random prefix of them (a torn last record).

Fault injection: ``fail_fsync`` makes every fsync raise ``FsyncError``; ``crash_after = n``
lets ``n`` more mutating operations succeed and makes the next one raise ``SimulatedCrash``
(the process died there); the disk then refuses everything until ``crash()``. ``ops`` counts
mutating operations, so a test can enumerate every crash point of a procedure.

Preallocation and a full disk: a file has a logical ``size`` and holds ``reserved`` bytes of
disk space; ``FileHandle.allocate`` (posix_fallocate) reserves space and extends the size with
zeros, which are not stored (``data`` holds the bytes up to the last one written), so a 64 MiB
WAL segment costs no memory. With ``capacity`` set (bytes; None: unlimited) a write or an
allocation that needs more space than is free fails with ENOSPC as a real disk does: a write
stores the part that fits first (a short write), an allocation changes nothing. Space is held
by the files the namespace names (``used()``, ``free()``), so removing a file frees it.
``sparse_allocate = True`` models a file system where allocate only extends the size without
reserving anything (no fallocate support, or copy-on-write): writes into the zeros then need
space and may fail part way.

Simplifications: directories are durable as soon as ``makedirs`` returns; a file truncated
since its last fsync reverts to its durable bytes; a crash keeps a file's allocation as far as
its surviving size. No real I/O, no clock: given the same rng and calls, the outcome is
identical.
"""

from __future__ import annotations

import errno
import posixpath
import random

from raftd.storage.files import DataDirError, FsyncError

TEAR_PROBABILITY = 0.5


class SimulatedCrash(Exception):
    """The scheduled crash point was reached; call ``SimFileSystem.crash()`` next."""


class _Inode:
    """A file: ``data`` up to its last written byte, then zeros up to ``size``."""

    __slots__ = ("data", "durable", "durable_size", "reserved", "size")

    def __init__(self) -> None:
        self.data = bytearray()
        self.size = 0
        self.reserved = 0
        """Bytes of disk space the file holds (allocated or written)."""
        self.durable = b""
        self.durable_size = 0

    def content(self, offset: int = 0, size: int | None = None) -> bytes:
        """Up to ``size`` bytes of what a read sees from ``offset`` (the zeros included)."""
        end = self.size if size is None else min(self.size, offset + size)
        if offset >= end:
            return b""
        head = bytes(self.data[offset:end])
        return head + bytes(end - offset - len(head))

    def put(self, offset: int, data: bytes | memoryview) -> None:
        """Store ``data`` at ``offset`` (space already checked)."""
        if offset > len(self.data):
            self.data += bytes(offset - len(self.data))
        self.data[offset : offset + len(data)] = data
        end = offset + len(data)
        self.size = max(self.size, end)
        self.reserved = max(self.reserved, end)

    def power_loss(self, rng: random.Random) -> None:
        pending = len(self.data) - len(self.durable)
        if (
            pending > 0
            and self.size >= self.durable_size
            and self.data.startswith(self.durable)
            and rng.random() < TEAR_PROBABILITY
        ):
            self.data = self.data[: len(self.durable) + rng.randint(0, pending)]
            self.size = max(len(self.data), self.durable_size)
        else:
            self.data = bytearray(self.durable)
            self.size = self.durable_size
        self.reserved = max(len(self.data), min(self.reserved, self.size))
        # What survived is now simply the disk's content.
        self.durable = bytes(self.data)
        self.durable_size = self.size


def _fs_error(code: int, path: str) -> OSError:
    return OSError(code, errno.errorcode[code], path)


class SimFileSystem:
    """A ``raftd.storage.files.FileSystem`` in memory, with power cuts (see the module doc)."""

    def __init__(self) -> None:
        self._names: dict[str, _Inode] = {}
        self._durable_names: dict[str, _Inode] = {}
        self._dirs: set[str] = {".", "/"}
        self._locks: set[str] = set()
        self._generation = 0  # bumped by crash(): handles opened before it are dead
        self._dead = False
        self.fail_fsync = False
        self.crash_after: int | None = None
        self.ops = 0
        self.capacity: int | None = None
        """Bytes the disk holds; None: unlimited."""
        self.sparse_allocate = False
        """Whether ``allocate`` only extends files, reserving no space (see the module doc)."""

    # -- space -------------------------------------------------------------------------------
    def used(self) -> int:
        """Bytes held by the files the namespace names."""
        return sum({id(inode): inode.reserved for inode in self._names.values()}.values())

    def free(self) -> int | None:
        """Bytes still free, or None when the capacity is unlimited."""
        return None if self.capacity is None else max(0, self.capacity - self.used())

    # -- fault control -----------------------------------------------------------------------
    def _mutate(self) -> None:
        """Called first by every mutating operation: counts it or dies there."""
        if self._dead or self.crash_after == 0:
            self._dead = True
            raise SimulatedCrash(f"simulated crash before operation {self.ops}")
        if self.crash_after is not None:
            self.crash_after -= 1
        self.ops += 1

    def crash(self, rng: random.Random) -> None:
        """Power loss: keep the durable state, maybe tear the tail of unsynced appends."""
        # Only durably named inodes survive; visit them in path order so the rng draws are
        # the same on every run.
        seen: set[int] = set()
        for path in sorted(self._durable_names):
            inode = self._durable_names[path]
            if id(inode) not in seen:
                seen.add(id(inode))
                inode.power_loss(rng)
        self._names = dict(self._durable_names)
        self._locks.clear()
        self._generation += 1
        self._dead = False
        self.crash_after = None

    # -- FileSystem ----------------------------------------------------------------------------
    def makedirs(self, path: str) -> None:
        self._mutate()
        path = posixpath.normpath(path)
        while path not in self._dirs:
            self._dirs.add(path)
            path = posixpath.dirname(path) or "."

    def listdir(self, path: str) -> list[str]:
        path = posixpath.normpath(path)
        if path not in self._dirs:
            raise _fs_error(errno.ENOENT, path)
        return sorted(posixpath.basename(p) for p in self._names if self._parent(p) == path)

    def exists(self, path: str) -> bool:
        path = posixpath.normpath(path)
        return path in self._names or path in self._dirs

    def read(self, path: str) -> bytes:
        return self._inode(path).content()

    def size(self, path: str) -> int:
        return self._inode(path).size

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        return self._inode(path).content(offset, size)

    def content_size(self, path: str) -> int:
        return len(self._inode(path).data)

    def create(self, path: str) -> SimFile:
        self._mutate()
        path = posixpath.normpath(path)
        if self._parent(path) not in self._dirs:
            raise _fs_error(errno.ENOENT, path)
        inode = self._names.get(path)
        if inode is None:
            inode = self._names[path] = _Inode()
        inode.data = bytearray()
        inode.size = inode.reserved = 0
        return SimFile(self, path, inode, 0)

    def open_append(self, path: str) -> SimFile:
        inode = self._inode(path)
        return SimFile(self, path, inode, inode.size)

    def open_at(self, path: str, offset: int) -> SimFile:
        return SimFile(self, path, self._inode(path), offset)

    def truncate(self, path: str, size: int) -> None:
        self._mutate()
        inode = self._inode(path)
        del inode.data[size:]
        inode.size = size
        inode.reserved = min(inode.reserved, size)

    def rename(self, src: str, dst: str) -> None:
        self._mutate()
        inode = self._inode(src)
        del self._names[posixpath.normpath(src)]
        self._names[posixpath.normpath(dst)] = inode

    def remove(self, path: str) -> None:
        self._mutate()
        self._inode(path)
        del self._names[posixpath.normpath(path)]

    def fsync_dir(self, path: str) -> None:
        self._mutate()
        path = posixpath.normpath(path)
        if self.fail_fsync:
            raise FsyncError(path, _fs_error(errno.EIO, path))
        for name in [*self._names, *self._durable_names]:
            if self._parent(name) != path:
                continue
            if name in self._names:
                self._durable_names[name] = self._names[name]
            else:
                del self._durable_names[name]

    def lock(self, path: str) -> SimLock:
        path = posixpath.normpath(path)
        if path in self._locks:
            raise DataDirError(f"{path} is locked: another raftd is using this data dir")
        self._locks.add(path)
        return SimLock(self, path, self._generation)

    # -- helpers for SimFile / SimLock ---------------------------------------------------------
    def _inode(self, path: str) -> _Inode:
        inode = self._names.get(posixpath.normpath(path))
        if inode is None:
            raise _fs_error(errno.ENOENT, path)
        return inode

    @staticmethod
    def _parent(path: str) -> str:
        return posixpath.dirname(path) or "."

    def _check_alive(self, generation: int, path: str) -> None:
        if generation != self._generation:
            raise _fs_error(errno.EBADF, path)


class SimFile:
    def __init__(self, fs: SimFileSystem, path: str, inode: _Inode, offset: int) -> None:
        self._fs = fs
        self._path = path
        self._inode = inode
        self._offset = offset
        self._generation = fs._generation
        self._closed = False

    def write(self, data: bytes) -> None:
        self._check()
        self._fs._mutate()
        inode, free = self._inode, self._fs.free()
        if free is not None and self._offset + len(data) - inode.reserved > free:
            fits = max(0, inode.reserved + free - self._offset)
            inode.put(self._offset, data[:fits])  # a short write, then ENOSPC
            self._offset += fits
            raise _fs_error(errno.ENOSPC, self._path)
        inode.put(self._offset, data)
        self._offset += len(data)

    def allocate(self, size: int) -> None:
        self._check()
        self._fs._mutate()
        inode, free = self._inode, self._fs.free()
        if self._fs.sparse_allocate:
            inode.size = max(inode.size, size)
            return
        if free is not None and size - inode.reserved > free:
            raise _fs_error(errno.ENOSPC, self._path)
        inode.size = max(inode.size, size)
        inode.reserved = max(inode.reserved, size)

    def fsync(self) -> None:
        self._check()
        self._fs._mutate()
        if self._fs.fail_fsync:
            raise FsyncError(self._path, _fs_error(errno.EIO, self._path))
        self._inode.durable = bytes(self._inode.data)
        self._inode.durable_size = self._inode.size

    def tell(self) -> int:
        self._check()
        return self._offset

    def close(self) -> None:
        self._closed = True

    def _check(self) -> None:
        if self._closed:
            raise ValueError(f"I/O on closed file {self._path}")
        self._fs._check_alive(self._generation, self._path)


class SimLock:
    def __init__(self, fs: SimFileSystem, path: str, generation: int) -> None:
        self._fs = fs
        self._path = path
        self._generation = generation

    def release(self) -> None:
        # A lock from before a crash died with its process; do not drop its successor's.
        if self._generation == self._fs._generation:
            self._fs._locks.discard(self._path)

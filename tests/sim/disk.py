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

Simplifications: directories are durable as soon as ``makedirs`` returns; a file truncated
since its last fsync reverts to its durable bytes. No real I/O, no clock: given the same rng
and calls, the outcome is identical.
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
    __slots__ = ("data", "durable")

    def __init__(self) -> None:
        self.data = bytearray()
        self.durable = b""

    def power_loss(self, rng: random.Random) -> None:
        pending = len(self.data) - len(self.durable)
        if pending > 0 and self.data.startswith(self.durable) and rng.random() < TEAR_PROBABILITY:
            self.data = self.data[: len(self.durable) + rng.randint(0, pending)]
        else:
            self.data = bytearray(self.durable)
        self.durable = bytes(self.data)  # what survived is now simply the disk's content


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
        return bytes(self._inode(path).data)

    def size(self, path: str) -> int:
        return len(self._inode(path).data)

    def read_range(self, path: str, offset: int, size: int) -> bytes:
        return bytes(self._inode(path).data[offset : offset + size])

    def create(self, path: str) -> SimFile:
        self._mutate()
        path = posixpath.normpath(path)
        if self._parent(path) not in self._dirs:
            raise _fs_error(errno.ENOENT, path)
        inode = self._names.get(path)
        if inode is None:
            inode = self._names[path] = _Inode()
        inode.data = bytearray()
        return SimFile(self, path, inode)

    def open_append(self, path: str) -> SimFile:
        return SimFile(self, path, self._inode(path))

    def truncate(self, path: str, size: int) -> None:
        self._mutate()
        del self._inode(path).data[size:]

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
    def __init__(self, fs: SimFileSystem, path: str, inode: _Inode) -> None:
        self._fs = fs
        self._path = path
        self._inode = inode
        self._generation = fs._generation
        self._closed = False

    def write(self, data: bytes) -> None:
        self._check()
        self._fs._mutate()
        self._inode.data += data

    def fsync(self) -> None:
        self._check()
        self._fs._mutate()
        if self._fs.fail_fsync:
            raise FsyncError(self._path, _fs_error(errno.EIO, self._path))
        self._inode.durable = bytes(self._inode.data)

    def tell(self) -> int:
        self._check()
        return len(self._inode.data)

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

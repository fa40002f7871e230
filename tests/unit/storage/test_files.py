"""OsFileSystem on real files and the SimFileSystem's model of a power cut."""

from __future__ import annotations

import errno
import fcntl
import os
import random
import struct
from pathlib import Path

import pytest

from raftd.storage import files
from raftd.storage.files import DataDirError, FsyncError, OsFileSystem
from tests.sim.disk import SimFileSystem, SimulatedCrash


def test_os_append_handle_tracks_size(tmp_path: Path) -> None:
    fs = OsFileSystem()
    path = str(tmp_path / "f")
    h = fs.create(path)
    h.write(b"abc")
    h.write(b"de")
    h.fsync()
    assert h.tell() == 5
    h.close()
    h = fs.open_append(path)
    assert h.tell() == 5
    h.write(b"f")
    h.close()
    assert fs.read(path) == b"abcdef"
    fs.truncate(path, 2)
    assert fs.read(path) == b"ab"
    fs.rename(path, str(tmp_path / "g"))
    fs.fsync_dir(str(tmp_path))
    assert fs.listdir(str(tmp_path)) == ["g"]


def test_os_fsync_error_is_fsync_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    fs = OsFileSystem()
    h = fs.create(str(tmp_path / "f"))
    monkeypatch.setattr(files, "_datasync", broken_fsync)
    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(FsyncError, match=r"fsync of .*f failed") as info:
        h.fsync()
    assert not isinstance(info.value, OSError)  # no OSError handler may swallow it
    with pytest.raises(FsyncError, match=str(tmp_path)):
        fs.fsync_dir(str(tmp_path))
    h.close()


def test_os_lock_is_exclusive(tmp_path: Path) -> None:
    fs = OsFileSystem()
    path = str(tmp_path / "LOCK")
    lock = fs.lock(path)
    with pytest.raises(DataDirError, match=path):
        fs.lock(path)
    lock.release()
    fs.lock(path).release()


def test_sim_names_need_a_dir_fsync() -> None:
    fs = SimFileSystem()
    fs.makedirs("d")
    h = fs.create("d/a")
    h.write(b"data")
    h.fsync()
    fs.crash(random.Random(0))
    assert not fs.exists("d/a")  # the data was durable, the name was not

    h = fs.create("d/a")
    h.write(b"old")
    h.fsync()
    fs.fsync_dir("d")
    h = fs.create("d/b")
    h.write(b"new")
    h.fsync()
    fs.rename("d/b", "d/a")
    fs.crash(random.Random(0))
    assert fs.read("d/a") == b"old"
    assert not fs.exists("d/b")  # its creation was never made durable either


def test_sim_crash_keeps_synced_and_maybe_a_prefix_of_the_rest() -> None:
    outcomes = set()
    for seed in range(50):
        fs = SimFileSystem()
        h = fs.create("f")
        fs.fsync_dir(".")
        h.write(b"synced")
        h.fsync()
        h.write(b"pending")
        fs.crash(random.Random(seed))
        data = fs.read("f")
        assert data.startswith(b"synced")
        assert b"syncedpending".startswith(data)
        outcomes.add(len(data))
        with pytest.raises(OSError):
            h.write(b"x")  # handles do not survive the crash
    assert len(outcomes) > 2  # both lost and torn tails happen


def test_sim_crash_is_deterministic() -> None:
    def run(seed: int) -> bytes:
        fs = SimFileSystem()
        h = fs.create("f")
        fs.fsync_dir(".")
        h.write(bytes(range(200)))
        fs.crash(random.Random(seed))
        return fs.read("f")

    assert [run(s) for s in range(20)] == [run(s) for s in range(20)]


def test_sim_crash_after_and_fail_fsync() -> None:
    fs = SimFileSystem()
    h = fs.create("f")
    fs.crash_after = 1
    h.write(b"a")
    with pytest.raises(SimulatedCrash):
        h.write(b"b")
    with pytest.raises(SimulatedCrash):
        fs.fsync_dir(".")  # the process is dead until the crash is taken
    fs.crash(random.Random(0))
    assert not fs.exists("f")

    fs.fail_fsync = True
    h = fs.create("g")
    with pytest.raises(FsyncError, match="g"):
        h.fsync()
    with pytest.raises(FsyncError):
        fs.fsync_dir(".")


@pytest.mark.parametrize("kind", ["os", "sim"])
def test_allocate_then_write_in_place(tmp_path: Path, kind: str) -> None:
    """Both file systems agree: allocate extends with zeros, open_at overwrites in place."""
    fs: files.FileSystem = OsFileSystem() if kind == "os" else SimFileSystem()
    path = str(tmp_path / "f") if kind == "os" else "f"
    h = fs.create(path)
    h.allocate(100)
    h.write(b"head")
    assert h.tell() == 4
    h.fsync()
    h.close()
    assert (fs.size(path), fs.read(path)) == (100, b"head" + bytes(96))
    assert 4 <= fs.content_size(path) <= 100
    h = fs.open_at(path, 10)
    h.write(b"abc")
    h.close()
    assert fs.read_range(path, 8, 8) == b"\0\0abc\0\0\0"
    h = fs.open_append(path)
    assert h.tell() == 100
    h.write(b"z")
    h.close()
    assert fs.size(path) == 101 and fs.read(path)[-2:] == b"\0z"


_FS_IOC_FIEMAP = 0xC020660B
_FIEMAP_EXTENT_UNWRITTEN = 0x800
_EXTENT = 56  # struct fiemap_extent


def _extent_flags(path: Path) -> list[int]:
    """The flags of every extent of ``path`` (Linux FIEMAP ioctl)."""
    count = 256
    header = struct.pack("=QQLLLL", 0, 2**64 - 1, 1, 0, count, 0)  # FIEMAP_FLAG_SYNC
    request = bytearray(header + bytes(_EXTENT * count))
    with open(path, "rb") as f:
        fcntl.ioctl(f.fileno(), _FS_IOC_FIEMAP, request)
    mapped = struct.unpack_from("=L", request, 20)[0]
    return [struct.unpack_from("=L", request, 32 + _EXTENT * i + 40)[0] for i in range(mapped)]


def test_allocated_span_is_written_so_fdatasync_flushes_data_only(tmp_path: Path) -> None:
    """posix_fallocate alone leaves unwritten extents: the first write into each converts it,
    a metadata change that costs a journal commit at every fdatasync of a WAL append."""
    control = tmp_path / "control"
    fd = os.open(control, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.posix_fallocate(fd, 0, 1 << 20)
    finally:
        os.close(fd)
    try:
        flags = _extent_flags(control)
    except OSError as e:
        pytest.skip(f"FIEMAP not supported on {tmp_path}: {e}")
    if not any(f & _FIEMAP_EXTENT_UNWRITTEN for f in flags):
        pytest.skip(f"the file system of {tmp_path} has no unwritten extents to avoid")
    h = OsFileSystem().create(str(tmp_path / "segment"))
    h.allocate(3 << 20)
    h.close()
    flags = _extent_flags(tmp_path / "segment")
    assert flags and not any(f & _FIEMAP_EXTENT_UNWRITTEN for f in flags)
    assert (tmp_path / "segment").read_bytes() == bytes(3 << 20)


def test_sim_capacity_short_write_then_enospc() -> None:
    fs = SimFileSystem()
    fs.capacity = 10
    h = fs.create("f")
    with pytest.raises(OSError) as info:
        h.write(b"0123456789abc")
    assert info.value.errno == errno.ENOSPC
    assert (fs.read("f"), h.tell(), fs.free()) == (b"0123456789", 10, 0)
    h.close()
    g = fs.create("g")
    with pytest.raises(OSError):
        g.allocate(1)
    assert fs.size("g") == 0  # a refused allocation changes nothing
    fs.remove("f")
    g.allocate(10)
    assert (fs.free(), fs.size("g"), fs.content_size("g")) == (0, 10, 0)
    g.write(b"in place")  # inside the allocation: needs no new space
    assert fs.read("g") == b"in place\0\0"


def test_sim_crash_keeps_a_durable_allocation_and_tears_writes_into_it() -> None:
    outcomes = set()
    for seed in range(40):
        fs = SimFileSystem()
        h = fs.create("f")
        h.allocate(64)
        h.write(b"synced")
        h.fsync()
        fs.fsync_dir(".")
        h.write(b"pending")
        fs.crash(random.Random(seed))
        data = fs.read("f")
        assert len(data) == 64 and data.startswith(b"synced")
        kept = data[6:].rstrip(b"\0")
        assert b"pending".startswith(kept)
        outcomes.add(len(kept))
    assert len(outcomes) > 2

"""DiskStorage: MemoryStorage semantics, restarts, crashes, data-dir handling, fsync policy."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from raftd.core.errors import Compacted, CorruptLog, Unavailable
from raftd.core.state import ConfState, Entry, HardState
from raftd.core.storage import MemoryStorage
from raftd.storage.disk import DiskStorage
from raftd.storage.files import DataDirError, FileSystem, FsyncError, OsFileSystem
from raftd.storage.wal import DEFAULT_SEGMENT_BYTES, WAL
from tests.sim.disk import SimFileSystem

CONF = ConfState(voters=("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"))
HS = HardState(current_term=2, voted_for="127.0.0.1:7001")


def open_disk(
    fs: FileSystem, dir: str, *, fsync: bool = True, segment_bytes: int = DEFAULT_SEGMENT_BYTES
) -> DiskStorage:
    return DiskStorage(fs, dir, conf_state=CONF, fsync=fsync, segment_bytes=segment_bytes)


def entries(first: int, n: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=b"v%d" % i) for i in range(first, first + n)]


def answers(s: DiskStorage | MemoryStorage, lo: int, hi: int, max_bytes: int | None) -> object:
    """What the core would see for this query: a value or the exception type."""
    try:
        return (s.entries(lo, hi, max_bytes), s.term(lo), s.first_index(), s.last_index())
    except (Compacted, Unavailable) as e:
        return type(e)


def test_blank_dir_then_restart(tmp_path: Path) -> None:
    fs = OsFileSystem()
    dir = str(tmp_path / "data" / "n1")  # created, parents too
    s = open_disk(fs, dir)
    assert s.initial_state() == (None, CONF)
    assert (s.first_index(), s.last_index(), s.term(0)) == (1, 0, 0)
    s.set_hard_state(HS)
    s.append(entries(1, 5))
    s.append(entries(3, 2, term=2))  # conflicting suffix
    s.sync()
    s.close()
    s = open_disk(fs, dir)
    assert s.initial_state() == (HS, CONF)
    assert s.entries(1, 5) == entries(1, 2) + entries(3, 2, term=2)
    assert s.last_index() == 4
    s.close()


def test_same_answers_as_memory_storage(tmp_path: Path) -> None:
    rng = random.Random(11)
    fs = OsFileSystem()
    disk = open_disk(fs, str(tmp_path), segment_bytes=300)
    mem = MemoryStorage(CONF)
    for step in range(200):
        first = rng.randint(0, mem.last_index() + 2)
        batch = entries(first, rng.randint(0, 4), term=step)
        outcome: list[type[Exception] | None] = []
        for s in (disk, mem):
            try:
                s.append(batch)
                outcome.append(None)
            except (Compacted, Unavailable) as e:
                outcome.append(type(e))
        assert outcome[0] == outcome[1]
        if step % 20 == 19:
            disk.sync()
            disk.close()
            disk = open_disk(fs, str(tmp_path), segment_bytes=300)
        lo = rng.randint(0, mem.last_index() + 2)
        query = (lo, rng.randint(lo, mem.last_index() + 2), rng.choice([None, 0, 30]))
        assert answers(disk, *query) == answers(mem, *query)
    disk.close()


def test_entries_without_hard_state_is_not_blank() -> None:
    fs = SimFileSystem()
    s = open_disk(fs, "d")
    s.append(entries(1, 2))
    s.sync()
    s.close()
    s = open_disk(fs, "d")
    assert s.initial_state() == (HardState(), CONF)


def test_unchanged_hard_state_not_rewritten_and_idle_sync_is_free() -> None:
    fs = SimFileSystem()
    s = open_disk(fs, "d")
    s.set_hard_state(HS)
    before = fs.ops
    s.set_hard_state(HardState(current_term=2, voted_for="127.0.0.1:7001"))
    s.sync()
    assert fs.ops == before
    s.append(entries(1, 1))
    s.sync()
    s.sync()
    assert fs.ops > before


def test_fsync_false_writes_but_never_fsyncs() -> None:
    fs = SimFileSystem()
    s = open_disk(fs, "d", fsync=False)
    s.append(entries(1, 1))  # first append creates the segment (always made durable)
    before = fs.ops
    s.append(entries(2, 10))
    s.sync()
    assert fs.ops - before == 1  # the one write(), no fsync
    s.close()
    assert open_disk(fs, "d").last_index() == 11  # visible to a restart without power loss


def test_crash_keeps_synced_entries_and_hard_state() -> None:
    kept_unsynced = set()
    for seed in range(30):
        fs = SimFileSystem()
        s = open_disk(fs, "d")
        s.set_hard_state(HS)
        s.append(entries(1, 3))
        s.sync()
        s.append(entries(4, 3))
        fs.crash(random.Random(seed))
        s = open_disk(fs, "d")
        assert s.initial_state() == (HS, CONF)
        assert 3 <= s.last_index() <= 6
        assert s.entries(1, s.last_index() + 1) == entries(1, s.last_index())
        kept_unsynced.add(s.last_index())
    assert len(kept_unsynced) > 1


def test_fsync_error_surfaces_and_sticks() -> None:
    fs = SimFileSystem()
    s = open_disk(fs, "d")
    s.append(entries(1, 2))
    fs.fail_fsync = True
    with pytest.raises(FsyncError):
        s.sync()
    fs.fail_fsync = False
    with pytest.raises(FsyncError):
        s.sync()


def test_refused_append_changes_nothing() -> None:
    fs = SimFileSystem()
    s = open_disk(fs, "d")
    s.append(entries(1, 2))
    before = fs.ops
    with pytest.raises(Unavailable):
        s.append(entries(5, 1))
    with pytest.raises(Compacted):
        s.append(entries(0, 1))
    assert fs.ops == before
    assert s.last_index() == 2


def test_second_daemon_on_same_dir_refused(tmp_path: Path) -> None:
    fs = OsFileSystem()
    s = open_disk(fs, str(tmp_path))
    with pytest.raises(DataDirError, match=str(tmp_path / "LOCK")):
        open_disk(fs, str(tmp_path))
    s.close()
    open_disk(fs, str(tmp_path)).close()


def test_unusable_data_dir_refused_naming_it(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    for dir in (not_a_dir, not_a_dir / "n1"):
        with pytest.raises(DataDirError, match=str(dir)):
            open_disk(OsFileSystem(), str(dir))


def test_log_compacted_without_a_snapshot_is_a_gap() -> None:
    fs = SimFileSystem()
    s = open_disk(fs, "d", segment_bytes=40)
    for first in range(1, 20, 2):
        s.append(entries(first, 2))
    s.sync()
    s.close()
    wal, _ = WAL.open(fs, "d", segment_bytes=40)
    wal.drop_before(10)
    wal.close()
    with pytest.raises(CorruptLog, match=r"d/\S+\.wal at byte offset 8: the log starts at index"):
        open_disk(fs, "d")
    with pytest.raises(CorruptLog):
        open_disk(fs, "d")  # not DataDirError: the refused open released its lock

"""DiskStorage with snapshots: compaction, installs, recovery, crashes at every step, WAL size."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from raftd.core.errors import Compacted, CorruptLog, InvariantError, Unavailable
from raftd.core.state import ConfState, Entry, HardState, Snapshot, SnapshotMeta, entry_size
from raftd.core.storage import MemoryStorage
from raftd.storage import snapshots
from raftd.storage.disk import DiskStorage
from raftd.storage.files import FileSystem, UnsupportedVersion
from tests.sim.disk import SimFileSystem, SimulatedCrash

CONF = ConfState(voters=("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"))
SNAP_CONF = ConfState(voters=("127.0.0.1:7001", "127.0.0.1:7002"), learners=("127.0.0.1:7004",))
HS = HardState(current_term=2, voted_for="127.0.0.1:7001")


def open_disk(fs: SimFileSystem, *, segment_bytes: int = 120) -> DiskStorage:
    return DiskStorage(fs, "d", conf_state=CONF, segment_bytes=segment_bytes)


def entries(first: int, n: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=b"v%d" % i) for i in range(first, first + n)]


def state_data(index: int) -> bytes:
    return b"state machine at %d" % index


def take_snapshot(fs: SimFileSystem, s: DiskStorage, index: int, *, trailing: int) -> SnapshotMeta:
    """What the runtime does: capture, write in a worker, then record on the event loop."""
    meta = SnapshotMeta(index=index, term=s.term(index), conf_state=SNAP_CONF)
    data = state_data(index)
    file = snapshots.write(fs, "d", meta, [data[:7], data[7:]])
    s.record_snapshot(meta, file, trailing_entries=trailing)
    return meta


def wal_names(fs: SimFileSystem) -> list[str]:
    return [n for n in fs.listdir("d") if n.endswith(".wal")]


def log_of(s: DiskStorage) -> tuple[list[int], list[Entry]]:
    """Every term and entry the storage answers, from first_index() - 1 on."""
    first, last = s.first_index(), s.last_index()
    return [s.term(i) for i in range(first - 1, last + 1)], s.entries(first, last + 1)


def test_no_snapshot() -> None:
    s = open_disk(SimFileSystem())
    assert (s.snapshot(), s.snapshot_size(), s.log_bytes_since(0)) == (Snapshot(), 0, 0)
    assert s.initial_state() == (None, CONF)


def test_record_snapshot_compacts_and_a_restart_keeps_every_answer() -> None:
    fs = SimFileSystem()
    s = open_disk(fs)
    s.set_hard_state(HS)
    log = entries(1, 60)
    for k in range(0, 60, 4):
        s.append(log[k : k + 4])
    s.sync()
    segments = len(wal_names(fs))
    meta = take_snapshot(fs, s, 50, trailing=5)
    assert (s.first_index(), s.last_index(), s.term(45)) == (46, 60, 1)
    with pytest.raises(Compacted):
        s.entries(45, 46)
    assert s.entries(46, 61) == log[45:]
    assert len(wal_names(fs)) < segments
    assert s.snapshot() == Snapshot(meta, state_data(50))
    (snap_name,) = [n for n in fs.listdir("d") if n.endswith(".snap")]
    assert s.snapshot_size() == fs.size("d/" + snap_name)
    assert s.initial_state() == (HS, SNAP_CONF)
    assert s.log_bytes_since(50) == sum(entry_size(e) for e in log[50:])
    s.close()

    s = open_disk(fs)
    assert s.snapshot() == Snapshot(meta, state_data(50))
    assert s.initial_state() == (HS, SNAP_CONF)
    # Whole segments are dropped, so the log may reach further back, never less far.
    assert s.first_index() <= 46 and s.last_index() == 60
    assert [s.term(i) for i in range(45, 61)] == [1] * 16
    assert s.entries(46, 61) == log[45:]
    assert s.entries(s.first_index(), 61) == log[s.first_index() - 1 :]
    assert s.log_bytes_since(50) == sum(entry_size(e) for e in log[50:])


def test_same_answers_as_memory_storage_with_snapshots_and_restarts() -> None:
    rng = random.Random(5)
    fs = SimFileSystem()
    disk = open_disk(fs, segment_bytes=300)
    mem = MemoryStorage(CONF)
    committed = 0  # snapshots and compaction only ever cover entries nobody rewrites
    for step in range(400):
        if rng.random() < 0.1 and mem.last_index() > committed:
            committed = rng.randint(committed + 1, mem.last_index())
            trailing = rng.randint(0, 6)
            meta = take_snapshot(fs, disk, committed, trailing=trailing)
            mem.create_snapshot(Snapshot(meta, state_data(committed)))
            mem.compact(committed - trailing)
        else:
            first = rng.randint(max(committed + 1, mem.first_index()), mem.last_index() + 1)
            batch = entries(first, rng.randint(1, 4), term=step)
            disk.append(batch)
            mem.append(batch)
        if step % 25 == 24:
            disk.sync()
            disk.close()
            disk = open_disk(fs, segment_bytes=300)
        # Everything the reference answers, the disk answers the same (it may hold more).
        lo = rng.randint(mem.first_index(), mem.last_index() + 1)
        hi = rng.randint(lo, mem.last_index() + 1)
        max_bytes = rng.choice([None, 0, 40])
        assert disk.entries(lo, hi, max_bytes) == mem.entries(lo, hi, max_bytes), step
        assert disk.term(lo - 1) == mem.term(lo - 1)
        assert disk.last_index() == mem.last_index()
        assert disk.first_index() <= mem.first_index()
        assert disk.snapshot() == mem.snapshot()
        after = lo - 1
        expected = sum(entry_size(e) for e in mem.entries(lo, mem.last_index() + 1))
        assert disk.log_bytes_since(after) == expected
    disk.close()


def test_apply_snapshot_replaces_the_log_and_survives_restart() -> None:
    fs = SimFileSystem()
    s = open_disk(fs, segment_bytes=100)
    s.set_hard_state(HS)
    s.append(entries(1, 80))  # runs past the snapshot, in other terms: all of it goes
    s.sync()
    snap = Snapshot(SnapshotMeta(50, 3, SNAP_CONF), b"leader state")
    s.apply_snapshot(snap)

    def check(s: DiskStorage) -> None:
        assert (s.first_index(), s.term(50), s.snapshot()) == (51, 3, snap)
        assert s.initial_state() == (HS, SNAP_CONF)
        with pytest.raises(Compacted):
            s.term(49)

    check(s)
    assert (s.last_index(), s.log_bytes_since(0)) == (50, 0)
    assert len(wal_names(fs)) == 1
    s.append(entries(51, 3, term=3))
    s.sync()
    s.close()
    s = open_disk(fs, segment_bytes=100)
    check(s)
    assert s.entries(51, 54) == entries(51, 3, term=3)
    assert s.last_index() == 53


def test_snapshot_alone_is_not_blank() -> None:
    fs = SimFileSystem()
    s = open_disk(fs)
    s.apply_snapshot(Snapshot(SnapshotMeta(7, 2, SNAP_CONF), b"x"))
    s.close()
    assert open_disk(fs).initial_state() == (HardState(), SNAP_CONF)


def test_snapshot_data_is_read_once_and_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    fs = SimFileSystem()
    s = open_disk(fs)
    s.append(entries(1, 5))
    s.sync()
    take_snapshot(fs, s, 4, trailing=0)
    s.close()
    reads: list[str] = []
    real = snapshots.read_data

    def counting_read(fs: FileSystem, path: str) -> bytes:
        reads.append(path)
        return real(fs, path)

    monkeypatch.setattr(snapshots, "read_data", counting_read)
    s = open_disk(fs)
    assert reads == []
    assert s.snapshot().data == s.snapshot().data == state_data(4)
    assert len(reads) == 1


def test_stale_own_snapshot_is_ignored_and_old_installs_refused() -> None:
    fs = SimFileSystem()
    s = open_disk(fs)
    s.append(entries(1, 20))
    s.sync()
    own = SnapshotMeta(15, 1, CONF)
    file = snapshots.write(fs, "d", own, [b"own"])  # the worker finishes after the install
    installed = Snapshot(SnapshotMeta(30, 2, SNAP_CONF), b"leader")
    s.apply_snapshot(installed)
    s.record_snapshot(own, file, trailing_entries=0)
    assert s.snapshot() == installed and s.first_index() == 31
    with pytest.raises(InvariantError):
        s.apply_snapshot(installed)
    s.append(entries(31, 2, term=2))
    with pytest.raises(InvariantError, match="term 9"):
        s.record_snapshot(SnapshotMeta(32, 9), file, trailing_entries=0)
    with pytest.raises(Unavailable):
        s.record_snapshot(SnapshotMeta(40, 2), file, trailing_entries=0)
    s.close()
    assert open_disk(fs).snapshot() == installed


def test_corrupt_newest_snapshot_falls_back_while_the_wal_covers_the_older() -> None:
    fs = SimFileSystem()
    s = open_disk(fs, segment_bytes=100)
    for first in range(1, 41, 2):
        s.append(entries(first, 2))
    s.sync()
    older = take_snapshot(fs, s, 10, trailing=10)
    newest = take_snapshot(fs, s, 30, trailing=25)  # the WAL keeps entry 5 onwards
    s.close()
    path = "d/" + snapshots.snapshot_name(newest.index, newest.term)
    data = bytearray(fs.read(path))
    data[-13] ^= 1
    fs.create(path).write(bytes(data))
    s = open_disk(fs, segment_bytes=100)
    assert s.snapshot() == Snapshot(older, state_data(10))
    assert s.entries(11, 41) == entries(11, 30)
    s.close()


def test_corrupt_newest_snapshot_beyond_the_wal_is_refused_naming_the_gap() -> None:
    fs = SimFileSystem()
    s = open_disk(fs, segment_bytes=100)
    for first in range(1, 41, 2):
        s.append(entries(first, 2))
    s.sync()
    take_snapshot(fs, s, 10, trailing=0)
    newest = take_snapshot(fs, s, 30, trailing=0)  # the WAL no longer reaches back to 11
    s.close()
    path = "d/" + snapshots.snapshot_name(newest.index, newest.term)
    data = fs.read(path)
    fs.create(path).write(data[:-1])
    pattern = r"d/\S+\.wal at byte offset \d+: the log starts at index \d+ but the newest valid"
    with pytest.raises(CorruptLog, match=pattern):
        open_disk(fs, segment_bytes=100)
    with pytest.raises(CorruptLog):
        open_disk(fs, segment_bytes=100)  # the refused open released its lock


def test_unknown_snapshot_version_refused_naming_the_file() -> None:
    fs = SimFileSystem()
    s = open_disk(fs)
    s.apply_snapshot(Snapshot(SnapshotMeta(7, 2, SNAP_CONF), b"x"))
    s.close()
    path = "d/" + snapshots.snapshot_name(7, 2)
    data = fs.read(path)
    fs.create(path).write(data[:6] + b"\x09\x00" + data[8:])
    for _ in range(2):
        with pytest.raises(UnsupportedVersion, match=f"^{path}: snapshot format version 9"):
            open_disk(fs)


def test_unfinished_snapshot_write_is_removed_on_open() -> None:
    fs = SimFileSystem()
    open_disk(fs).close()
    fs.create("d/" + snapshots.snapshot_name(3, 1) + snapshots.TEMP_SUFFIX).write(b"partial")
    open_disk(fs).close()
    assert [n for n in fs.listdir("d") if "snap" in n] == []


def test_wal_and_snapshot_files_stay_bounded() -> None:
    fs = SimFileSystem()
    segment_bytes = 500
    s = open_disk(fs, segment_bytes=segment_bytes)
    sizes = []
    for _ in range(40):
        first = s.last_index() + 1
        for k in range(0, 30, 5):
            s.append(entries(first + k, 5))
        s.sync()
        take_snapshot(fs, s, s.last_index(), trailing=5)
        sizes.append(sum(fs.size("d/" + n) for n in wal_names(fs)))
        assert len([n for n in fs.listdir("d") if n.endswith(".snap")]) <= 2
    assert sum(entry_size(e) for e in s.entries(s.first_index(), 1201)) < 200
    assert max(sizes[5:]) <= 3 * segment_bytes < sizes[-1] * 40  # 1200 entries went through
    s.close()
    s = open_disk(fs, segment_bytes=segment_bytes)
    assert (s.snapshot().meta.index, s.last_index()) == (1200, 1200)


# -- crashes at every step -------------------------------------------------------------------
def crash_points(setup: Callable[[SimFileSystem], DiskStorage],
                 act: Callable[[SimFileSystem, DiskStorage], None]) -> int:
    """How many mutating disk operations ``act`` performs after ``setup``."""
    fs = SimFileSystem()
    s = setup(fs)
    before = fs.ops
    act(fs, s)
    return fs.ops - before


def crash_during(setup: Callable[[SimFileSystem], DiskStorage],
                 act: Callable[[SimFileSystem, DiskStorage], None],
                 crash_at: int, seed: int) -> SimFileSystem:
    fs = SimFileSystem()
    s = setup(fs)
    fs.crash_after = crash_at
    try:
        act(fs, s)
    except SimulatedCrash:
        pass
    fs.crash(random.Random(seed))
    return fs


def append_and_restart(fs: SimFileSystem, s: DiskStorage) -> None:
    """A recovered log takes appends that replay correctly after another restart."""
    expected = log_of(s)
    first = s.last_index() + 1
    s.append(entries(first, 2, term=9))
    s.sync()
    s.close()
    s = open_disk(fs)
    terms, tail = log_of(s)
    assert terms[-len(expected[0]) - 2 : -2] == expected[0]
    assert tail[-len(expected[1]) - 2 :] == expected[1] + entries(first, 2, term=9)
    s.close()


OLD_LOG = entries(1, 20) + entries(21, 20, term=2)


def old_log_from(first: int) -> tuple[list[int], list[Entry]]:
    """``log_of`` a storage holding OLD_LOG from ``first`` on."""
    terms = [0] + [e.term for e in OLD_LOG]
    return terms[first - 1 :], OLD_LOG[first - 1 :]


def old_state(fs: SimFileSystem) -> DiskStorage:
    """A snapshot at 10 (compacted to 8), then entries up to 40, all durable."""
    s = open_disk(fs)
    s.set_hard_state(HS)
    for k in range(0, 40, 4):
        s.append(OLD_LOG[k : k + 4])
        if k == 20:
            take_snapshot(fs, s, 10, trailing=2)
    s.sync()
    return s


def check_old(s: DiskStorage) -> None:
    assert s.snapshot() == Snapshot(SnapshotMeta(10, 1, SNAP_CONF), state_data(10))
    assert s.first_index() <= 9 and s.last_index() == 40
    assert log_of(s) == old_log_from(s.first_index())


@pytest.mark.parametrize("index", [30, 60])  # the old log disagrees at 30; it ends before 60
def test_crash_at_every_step_of_apply_snapshot(index: int) -> None:
    snap = Snapshot(SnapshotMeta(index, 5, SNAP_CONF), b"leader state")

    def act(fs: SimFileSystem, s: DiskStorage) -> None:
        s.apply_snapshot(snap)

    outcomes = set()
    for crash_at in range(crash_points(old_state, act) + 1):
        for seed in range(3):
            fs = crash_during(old_state, act, crash_at, seed)
            s = open_disk(fs)
            assert s.initial_state()[0] == HS
            if s.snapshot().meta.index == index:
                assert s.snapshot() == snap
                assert (s.first_index(), s.last_index(), s.term(index)) == (index + 1, index, 5)
                assert s.initial_state()[1] == SNAP_CONF
                outcomes.add("new")
            else:
                check_old(s)
                outcomes.add("old")
            append_and_restart(fs, s)
    assert outcomes == {"old", "new"}


def test_crash_at_every_step_of_taking_a_snapshot() -> None:
    def act(fs: SimFileSystem, s: DiskStorage) -> None:
        take_snapshot(fs, s, 36, trailing=3)

    outcomes = set()
    for crash_at in range(crash_points(old_state, act) + 1):
        for seed in range(3):
            fs = crash_during(old_state, act, crash_at, seed)
            s = open_disk(fs)
            assert not [n for n in fs.listdir("d") if n.endswith(snapshots.TEMP_SUFFIX)]
            if s.snapshot().meta.index == 36:
                assert s.snapshot().data == state_data(36)
                assert s.first_index() <= 34 and s.last_index() == 40
                assert log_of(s) == old_log_from(s.first_index())
                outcomes.add("new")
            else:
                check_old(s)
                outcomes.add("old")
            append_and_restart(fs, s)
    assert outcomes == {"old", "new"}

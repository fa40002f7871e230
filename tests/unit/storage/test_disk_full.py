"""A full disk: preallocated WAL segments, the no-space condition, NoSpace, retry, recovery.

Most tests fill the simulated disk (``SimFileSystem.capacity``); the last ones fill a real
2 MiB tmpfs, and are skipped, saying why, where one cannot be mounted.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import random
import struct
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from raftd.core.errors import CorruptLog
from raftd.core.state import ConfState, Entry, HardState, Snapshot, SnapshotMeta
from raftd.storage import hardstate, snapshots
from raftd.storage.disk import DiskStorage
from raftd.storage.files import FileHandle, FileSystem, NoSpace, OsFileSystem
from raftd.storage.wal import SPARE_NAME
from tests.sim.disk import SimFileSystem, SimulatedCrash
from tests.unit.storage.tmpfs import mounted_tmpfs

CONF = ConfState(voters=("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"))
HS = HardState(current_term=2, voted_for="127.0.0.1:7001")
SEG = 4096
HEADER = 8


def open_disk(
    fs: FileSystem, dir: str = "d", segment_bytes: int = SEG,
    background: ThreadPoolExecutor | None = None,
) -> DiskStorage:
    return DiskStorage(fs, dir, conf_state=CONF, segment_bytes=segment_bytes,
                       background=background)


def batch(first: int, n: int = 2, size: int = 100, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=bytes([i % 251]) * size)
            for i in range(first, first + n)]


def wal_names(fs: FileSystem, dir: str = "d") -> list[str]:
    return [n for n in fs.listdir(dir) if n.endswith(".wal")]


def log_of(s: DiskStorage) -> list[Entry]:
    return s.entries(s.first_index(), s.last_index() + 1)


def fill_until_no_space(s: DiskStorage, acked: list[Entry]) -> None:
    """Append and sync batches until the storage reports the no-space condition."""
    while not s.no_space():
        b = batch(len(acked) + 1)
        s.append(b)
        s.sync()
        acked.extend(b)


def full_disk() -> tuple[SimFileSystem, DiskStorage, list[Entry]]:
    """A storage whose current segment is half full and whose disk has no room for the next."""
    fs = SimFileSystem()
    s = open_disk(fs)
    s.set_hard_state(HS)
    acked = batch(1)
    s.append(acked)  # the first segment (the spare made at open, renamed)
    s.sync()
    fs.capacity = fs.used() + SEG // 2  # plenty for small files, not for another segment
    fill_until_no_space(s, acked)
    return fs, s, acked


# -- preallocated segments: recovery ------------------------------------------------------------
def test_segments_are_preallocated_and_a_zero_tail_ends_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fs = OsFileSystem()
    s = open_disk(fs, str(tmp_path))
    written: list[Entry] = []
    for first in range(1, 100, 2):  # 17 batches a segment: the third is left half full
        s.append(batch(first))
        written += batch(first)
    s.sync()
    s.close()
    paths = sorted(tmp_path.glob("*.wal"))
    assert len(paths) > 2
    assert all(p.stat().st_size == SEG for p in paths)  # full or not, each segment is whole
    assert (tmp_path / SPARE_NAME).stat().st_size == SEG  # made ahead: the last is half full
    with caplog.at_level(logging.WARNING):
        s = open_disk(fs, str(tmp_path))
    assert log_of(s) == written
    assert not caplog.records  # zero tails are neither torn records nor corruption
    more = batch(len(written) + 1)
    s.append(more)  # in place, inside the last segment's zeros
    s.sync()
    s.close()
    assert sorted(tmp_path.glob("*.wal")) == paths
    s = open_disk(fs, str(tmp_path))
    assert log_of(s) == written + more
    s.close()


class _HeldSpare(OsFileSystem):
    """The real disk, but making the spare waits until ``release`` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.asked = threading.Event()

    def create(self, path: str) -> FileHandle:
        if path.endswith(SPARE_NAME):
            self.asked.set()
            assert self.release.wait(60), "the test never released the spare"
        return super().create(path)


def _inside(thread: threading.Thread, function: str) -> bool:
    """Whether ``function`` is on ``thread``'s stack right now."""
    frame = sys._current_frames().get(thread.ident or 0)
    while frame is not None:
        if frame.f_code.co_name == function:
            return True
        frame = frame.f_back
    return False


def test_spare_made_in_the_background_is_adopted_and_a_rollover_waits_for_it(
    tmp_path: Path,
) -> None:
    fs = _HeldSpare()
    written: list[Entry] = []

    def append_until(segments: int) -> None:
        while len(wal_names(fs, str(tmp_path))) < segments:
            b = batch(len(written) + 1)
            s.append(b)
            written.extend(b)

    with ThreadPoolExecutor(1) as background:
        s = open_disk(fs, str(tmp_path), background=background)
        append_until(1)  # the first segment (its spare made at open) is adopted
        fs.release.clear()  # the second segment's spare is held back
        fs.asked.clear()
        while len(written) < 24:  # 12 batches: past half of the segment, short of its end
            b = batch(len(written) + 1)
            s.append(b)
            written += b
        assert fs.asked.wait(60)  # started once the segment was half full
        assert not (tmp_path / SPARE_NAME).exists() and len(wal_names(fs, str(tmp_path))) == 1
        writer = threading.Thread(target=append_until, args=(2,))
        writer.start()
        deadline = time.monotonic() + 60
        while not _inside(writer, "_roll"):  # the segment is full: it must wait there
            assert writer.is_alive() and time.monotonic() < deadline
            time.sleep(0.001)
        assert writer.is_alive() and len(wal_names(fs, str(tmp_path))) == 1
        fs.release.set()
        writer.join(60)
        append_until(3)
        s.sync()
        s.close()
    assert all(p.stat().st_size == SEG for p in tmp_path.glob("*.wal"))
    s = open_disk(fs, str(tmp_path))
    assert log_of(s) == written
    s.close()


def test_full_disk_found_by_the_background_spare_sets_no_space(tmp_path: Path) -> None:
    seg = 512 << 10
    with mounted_tmpfs(tmp_path / "mnt", "2m") as mnt, ThreadPoolExecutor(1) as background:
        (mnt / "filler").write_bytes(bytes(seg + (256 << 10)))
        fs = OsFileSystem()
        dir = str(mnt / "data")
        s = open_disk(fs, dir, segment_bytes=seg, background=background)
        acked: list[Entry] = []
        while not s.no_space():  # seen as soon as the background refused the next segment
            b = batch(len(acked) + 1, size=4000)
            s.append(b)
            s.sync()
            acked += b
            background.submit(lambda: None).result()  # a spare started meanwhile is done
        assert not (mnt / "data" / SPARE_NAME).exists()
        (mnt / "filler").unlink()
        for _ in range(1000):  # the runtime calls it every second; each starts one attempt
            if s.retry_space():
                break
            background.submit(lambda: None).result()  # the attempt has run
        assert not s.no_space() and (mnt / "data" / SPARE_NAME).exists()
        s.close()
        s = open_disk(fs, dir, segment_bytes=seg)
        assert log_of(s) == acked
        s.close()


def test_leftover_spare_is_removed_at_open(tmp_path: Path) -> None:
    fs = OsFileSystem()
    s = open_disk(fs, str(tmp_path))
    s.append(batch(1))
    s.sync()
    s.close()
    (tmp_path / SPARE_NAME).write_bytes(b"RFTW")  # a crash while preallocating it
    s = open_disk(fs, str(tmp_path))
    assert log_of(s) == batch(1)
    assert not (tmp_path / SPARE_NAME).exists()  # the current segment is far from half full
    s.close()


def segment_records_end(data: bytes) -> int:
    off = HEADER
    while (length := struct.unpack_from("<I", data, off)[0]) != 0:
        off += 8 + length
    return off


@pytest.mark.parametrize("where", ["record", "zero tail"])
def test_damage_in_an_earlier_segment_is_refused_naming_file_and_offset(
    tmp_path: Path, where: str
) -> None:
    fs = OsFileSystem()
    s = open_disk(fs, str(tmp_path))
    for first in range(1, 80, 2):
        s.append(batch(first))
    s.sync()
    s.close()
    oldest = min(tmp_path.glob("*.wal"))
    data = bytearray(oldest.read_bytes())
    end = segment_records_end(bytes(data))
    assert end < len(data)  # a segment rolls when the next batch does not fit: zeros remain
    pos, offset = (HEADER + 20, HEADER) if where == "record" else (len(data) - 1, end)
    data[pos] ^= 0x40
    oldest.write_bytes(bytes(data))
    with pytest.raises(CorruptLog, match=rf"{oldest}: corrupt record at byte offset {offset}\b"):
        open_disk(fs, str(tmp_path))


def test_damage_in_the_zero_tail_of_the_last_segment_is_a_torn_tail(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fs = OsFileSystem()
    s = open_disk(fs, str(tmp_path))
    s.append(batch(1, 5))
    s.sync()
    s.close()
    (path,) = tmp_path.glob("*.wal")
    data = bytearray(path.read_bytes())
    end = segment_records_end(bytes(data))
    data[end + 700] = 0x33  # nothing was acknowledged there: no record can be lost
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        s = open_disk(fs, str(tmp_path))
    assert log_of(s) == batch(1, 5)
    assert any("torn tail" in r.getMessage() for r in caplog.records)
    assert path.read_bytes() == bytes(data[:end]) + bytes(len(data) - end)  # zeroed, still whole
    s.close()


# -- the no-space condition ----------------------------------------------------------------------
def test_full_disk_at_next_segment_sets_no_space_once_and_the_log_stays_intact(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        fs, s, acked = full_disk()
    warnings = [r.getMessage() for r in caplog.records if "no space" in r.getMessage()]
    assert len(warnings) == 1 and "retrying periodically" in warnings[0]
    assert not fs.exists(f"d/{SPARE_NAME}")  # the partial allocation was removed
    assert len(wal_names(fs)) == 1
    # The current segment still has room: appends go on, the condition stays, nothing logged.
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            b = batch(len(acked) + 1)
            assert s.can_append(b)
            s.append(b)
            s.sync()
            acked += b
    assert s.no_space() and not caplog.records
    assert log_of(s) == acked
    s.close()
    s = open_disk(fs)
    assert log_of(s) == acked
    assert s.no_space()  # found again at open: the segment is past half and the disk still full
    s.close()


def test_no_space_raised_before_writing_once_the_segment_is_used_up() -> None:
    fs, s, acked = full_disk()
    while s.can_append(batch(len(acked) + 1)):
        b = batch(len(acked) + 1)
        s.append(b)
        s.sync()
        acked += b
    # can_append kept a reserve; the runtime's own small entries still fit in it.
    small = [Entry(term=2, index=len(acked) + 1, data=b"")]
    s.append(small)
    s.sync()
    acked += small
    (segment,) = wal_names(fs)
    refused = False
    while not refused:
        b = batch(len(acked) + 1)
        before = (fs.ops, fs.read(f"d/{segment}"), fs.listdir("d"), s.last_index())
        try:
            s.append(b)
        except NoSpace as e:
            refused = True
            assert isinstance(e, OSError) and e.errno == errno.ENOSPC
            assert "next one could not be preallocated" in str(e)
            # Nothing written, nothing remembered.
            assert before == (fs.ops, fs.read(f"d/{segment}"), fs.listdir("d"), s.last_index())
        else:
            s.sync()
            acked += b
    s.sync()  # the WAL is not broken by NoSpace
    fs.crash(random.Random(1))
    s = open_disk(fs)
    assert log_of(s) == acked  # every acknowledged entry, nothing else
    assert s.initial_state() == (HS, CONF)
    s.close()


def test_retry_space_clears_the_condition_once_space_returns() -> None:
    fs, s, acked = full_disk()
    assert not s.retry_space()  # still full: one attempt, cleaned up again
    assert s.no_space() and not fs.exists(f"d/{SPARE_NAME}")
    fs.capacity = None  # space returns (another file was removed)
    assert s.retry_space()
    assert not s.no_space() and fs.exists(f"d/{SPARE_NAME}")
    before = fs.ops
    assert s.retry_space()
    assert fs.ops == before  # nothing to do: nothing done
    while len(wal_names(fs)) < 3:  # the log grows past the old segment again
        b = batch(len(acked) + 1)
        s.append(b)
        acked += b
    s.sync()
    s.close()
    assert log_of(open_disk(fs)) == acked


def test_a_partial_record_left_by_enospc_is_erased() -> None:
    """Where allocation reserves nothing (no fallocate, copy-on-write), a write into the zeros
    can itself run out of space part way."""
    fs = SimFileSystem()
    fs.sparse_allocate = True
    s = open_disk(fs)
    acked = batch(1)
    s.append(acked)
    s.sync()
    (segment,) = wal_names(fs)
    path = f"d/{segment}"
    end = fs.content_size(path)
    fs.capacity = fs.used() + 150  # a batch is about 2 * 115 bytes: it will not fit whole
    with pytest.raises(NoSpace, match="writing a WAL record"):
        s.append(batch(3))
    assert fs.read_range(path, 0, end + 400) == fs.read_range(path, 0, end) + bytes(400)
    assert log_of(s) == acked
    fs.capacity = None
    s.append(batch(3))  # not a final failure: the WAL goes on where the records end
    s.sync()
    acked += batch(3)
    s.close()
    assert log_of(open_disk(fs)) == acked


def test_can_append_outside_the_condition_encodes_nothing() -> None:
    fs = SimFileSystem()
    s = open_disk(fs)
    huge = batch(1, n=1, size=10 * SEG)
    assert not s.no_space() and s.can_append(huge)
    s.append(huge)  # larger than a segment: it gets a fresh segment grown to fit
    s.sync()
    s.close()
    assert log_of(open_disk(fs)) == huge


def test_crash_at_every_step_around_a_full_disk() -> None:
    """Fill up, be refused, get space back, roll on: a crash anywhere keeps every synced
    entry and adds at most a prefix of the one batch in flight."""

    def run(fs: SimFileSystem, acked: list[Entry], attempted: list[Entry]) -> None:
        s = open_disk(fs)
        for k in range(32):
            if k == 1:
                fs.capacity = fs.used() + SEG // 2
            if k == 24:
                fs.capacity = None
                assert s.retry_space()
            b = batch(len(acked) + 1)
            del attempted[len(acked) :]
            attempted += b
            try:
                s.append(b)
            except NoSpace:
                continue
            s.sync()
            acked += b

    dry = SimFileSystem()
    acked: list[Entry] = []
    run(dry, acked, [])
    assert len(wal_names(dry, "d")) == 2 and len(acked) < 64  # it did fill up, and roll on
    for crash_at in range(dry.ops + 1):
        for seed in range(2):
            fs = SimFileSystem()
            fs.crash_after = crash_at
            acked = []
            attempted: list[Entry] = []
            with contextlib.suppress(SimulatedCrash):
                run(fs, acked, attempted)
            fs.crash(random.Random(seed))
            fs.capacity = None
            recovered = log_of(open_disk(fs))
            assert recovered[: len(acked)] == acked, (crash_at, seed)
            assert recovered == attempted[: len(recovered)], (crash_at, seed)


# -- snapshots and hard state on a full disk --------------------------------------------------
def test_snapshot_write_on_a_full_disk_raises_no_space_and_leaves_no_file() -> None:
    fs = SimFileSystem()
    fs.makedirs("d")
    fs.capacity = 1000
    meta = SnapshotMeta(index=5, term=1, conf_state=CONF)
    with pytest.raises(NoSpace, match="writing a snapshot") as info:
        snapshots.write(fs, "d", meta, [b"x" * 600, b"y" * 600])
    assert isinstance(info.value, OSError)  # the snapshotter logs it and retries later
    assert fs.listdir("d") == []


def use_up_segment(s: DiskStorage, acked: list[Entry]) -> None:
    """Append ever smaller entries until not even an empty one fits."""
    for size in (100, 10, 0):
        while True:
            b = batch(len(acked) + 1, n=1, size=size)
            try:
                s.append(b)
            except NoSpace:
                break
            acked += b


def test_snapshot_install_on_a_full_disk_changes_nothing() -> None:
    fs, s, acked = full_disk()
    meta = SnapshotMeta(index=500, term=3, conf_state=CONF)
    names = fs.listdir("d")
    with pytest.raises(NoSpace, match="writing a snapshot"):
        s.apply_snapshot(Snapshot(meta, b"s" * SEG))  # the WAL has room, the disk not
    assert fs.listdir("d") == names and log_of(s) == acked
    use_up_segment(s, acked)
    fs.capacity = None  # the file would fit now, but the WAL has no room for the restart record
    with pytest.raises(NoSpace, match="next one could not be preallocated"):
        s.apply_snapshot(Snapshot(meta, b"s"))
    assert fs.listdir("d") == names and log_of(s) == acked and s.snapshot_meta().index == 0
    assert s.retry_space()
    s.apply_snapshot(Snapshot(meta, b"s"))  # with space back, the install goes through
    assert s.snapshot_meta() == meta and log_of(s) == []


def test_hard_state_save_on_a_full_disk_raises_no_space_and_keeps_the_old_one() -> None:
    fs = SimFileSystem()
    hardstate.save(fs, ".", HS)
    fs.capacity = fs.used()
    with pytest.raises(NoSpace, match="saving the hard state"):
        hardstate.save(fs, ".", HardState(current_term=3, voted_for="127.0.0.1:7002"))
    assert hardstate.load(fs, ".") == HS
    assert fs.listdir(".") == ["hardstate"]


# -- a real full file system -------------------------------------------------------------------
def test_real_tmpfs_fills_up_then_recovers(tmp_path: Path) -> None:
    """A 2 MiB tmpfs, 512 KiB segments: posix_fallocate itself reports ENOSPC."""
    seg = 512 << 10
    with mounted_tmpfs(tmp_path / "mnt", "2m") as mnt:
        filler = mnt / "filler"
        filler.write_bytes(bytes(seg))  # another user of the disk, removed later
        fs = OsFileSystem()
        dir = str(mnt / "data")
        s = open_disk(fs, dir, segment_bytes=seg)
        s.set_hard_state(HS)
        acked: list[Entry] = []
        while not s.no_space():
            b = batch(len(acked) + 1, size=4000)
            s.append(b)
            s.sync()
            acked += b
        assert not (mnt / "data" / SPARE_NAME).exists()
        with pytest.raises(NoSpace):
            snapshots.write(fs, dir, SnapshotMeta(5, 1, CONF), [bytes(64 << 10)] * 16)
        assert not [p for p in (mnt / "data").iterdir() if p.name.endswith(".tmp")]
        while True:
            b = batch(len(acked) + 1, size=4000)
            if not s.can_append(b):
                break
            s.append(b)
            s.sync()
            acked += b
        with pytest.raises(NoSpace):
            for first in range(len(acked) + 1, len(acked) + 1000, 2):
                s.append(batch(first, size=4000))
                s.sync()
                acked += batch(first, size=4000)
        s.close()
        s = open_disk(fs, dir, segment_bytes=seg)  # a restart on the still full disk
        assert log_of(s) == acked and s.no_space()
        assert not s.retry_space()
        filler.unlink()
        assert s.retry_space()
        for _ in range(40):
            b = batch(len(acked) + 1, size=4000)
            s.append(b)
            acked += b
        s.sync()
        s.close()
        s = open_disk(fs, dir, segment_bytes=seg)
        assert log_of(s) == acked
        s.close()

"""WAL: round trips, truncation by replay, torn tails, corruption, rollover, crashes."""

from __future__ import annotations

import logging
import random
import struct
from pathlib import Path

import pytest

from raftd.core.errors import CorruptLog
from raftd.core.state import Entry, EntryType
from raftd.storage.files import FileSystem, FsyncError, OsFileSystem, UnsupportedVersion
from raftd.storage.wal import WAL, valid_end
from tests.sim.disk import SimFileSystem, SimulatedCrash

HEADER = 8


def batch(first: int, n: int, term: int = 1, size: int = 3) -> list[Entry]:
    indexes = range(first, first + n)
    return [Entry(term=term, index=i, data=bytes([i % 256]) * size) for i in indexes]


def apply(log: list[Entry], entries: list[Entry]) -> list[Entry]:
    """The oracle: the log after appending ``entries`` (conflicting suffix replaced)."""
    if not entries:
        return log
    return log[: entries[0].index - 1] + entries


def reopen(fs: FileSystem, dir: str, **kw: int) -> list[Entry]:
    wal, entries = WAL.open(fs, dir, **kw)
    wal.close()
    return entries


def segments(dir: Path) -> list[Path]:
    return sorted(dir.glob("*.wal"))


def record_offsets(data: bytes) -> list[int]:
    """Start offset of each record, then the end of the last one (where a preallocated
    segment's zero tail begins)."""
    offs = [HEADER]
    while offs[-1] + 4 <= len(data):
        (length,) = struct.unpack_from("<I", data, offs[-1])
        if length == 0:
            break
        offs.append(offs[-1] + 8 + length)
    return offs


SMALL = 4096
"""Segment size for tests that rewrite a segment file many times."""
LAYOUTS = ["preallocated", "version 2"]
"""How a test's segment is laid out: as written now (records, then zeros to the allocated
size), or as a version 2 build wrote it (the file ends with the last record)."""


def write_one_segment(tmp_path: Path, written: list[Entry], layout: str) -> tuple[Path, bytes]:
    """A log of one segment holding ``written`` (not synced last), in ``layout``: its path and
    its bytes."""
    fs = OsFileSystem()
    wal, _ = WAL.open(fs, str(tmp_path), segment_bytes=SMALL)
    wal.append(written)
    wal.close()
    (path,) = segments(tmp_path)
    full = path.read_bytes()
    if layout == "version 2":
        full = full[:6] + struct.pack("<H", 2) + full[8 : record_offsets(full)[-1]]
        path.write_bytes(full)
    return path, full


def test_round_trip(tmp_path: Path) -> None:
    fs = OsFileSystem()
    wal, entries = WAL.open(fs, str(tmp_path))
    assert entries == []
    written = batch(1, 5) + [Entry(term=2, index=6, type=EntryType.CONF_CHANGE, data=b"")]
    wal.append(written)
    wal.sync()
    wal.close()
    assert reopen(fs, str(tmp_path)) == written


def test_valid_end_is_where_the_records_end_in_a_preallocated_segment(tmp_path: Path) -> None:
    _, full = write_one_segment(tmp_path, batch(1, 20), "current")
    end = record_offsets(full)[-1]
    assert len(full) > end and not any(full[end:])  # preallocated: zeros after the records
    assert valid_end(full) == end
    assert valid_end(full[: end - 1]) == record_offsets(full)[-2]  # a torn last record
    assert valid_end(full[:HEADER]) == HEADER


def test_many_batches_with_conflicts_and_restarts(tmp_path: Path) -> None:
    rng = random.Random(7)
    fs = OsFileSystem()
    log: list[Entry] = []
    wal, _ = WAL.open(fs, str(tmp_path), segment_bytes=600)
    for step in range(300):
        first = rng.randint(max(1, len(log) - 5), len(log) + 1)
        entries = batch(first, rng.randint(1, 8), term=step, size=rng.randint(0, 40))
        wal.append(entries)
        log = apply(log, entries)
        if step % 10 == 0:
            wal.sync()
        if step % 50 == 49:
            wal.close()
            wal, replayed = WAL.open(fs, str(tmp_path), segment_bytes=600)
            assert replayed == log
    wal.close()
    assert reopen(fs, str(tmp_path)) == log
    assert len(segments(tmp_path)) > 3


def test_conflicting_suffix_survives_restart(tmp_path: Path) -> None:
    fs = OsFileSystem()
    wal, _ = WAL.open(fs, str(tmp_path))
    wal.append(batch(1, 10, term=1))
    wal.append(batch(4, 2, term=2))  # replaces 4..10 with 4..5
    wal.sync()
    wal.close()
    assert reopen(fs, str(tmp_path)) == batch(1, 3, term=1) + batch(4, 2, term=2)


def test_batch_is_one_write_and_sync_one_fsync() -> None:
    fs = SimFileSystem()
    wal, _ = WAL.open(fs, ".")
    wal.append(batch(1, 1))  # creates the first segment
    before = fs.ops
    wal.append(batch(2, 100))
    assert fs.ops - before == 1
    wal.sync()
    assert fs.ops - before == 2
    wal.sync()  # nothing new: no fsync
    assert fs.ops - before == 2


@pytest.mark.parametrize("layout", LAYOUTS)
def test_torn_tail_truncated_at_every_offset(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, layout: str
) -> None:
    fs = OsFileSystem()
    written = batch(1, 4, size=5)
    path, full = write_one_segment(tmp_path, written, layout)
    offs = record_offsets(full)
    for cut in range(HEADER, offs[-1]):
        # A write that stopped at ``cut``: the file ends there, or its preallocated zeros go on.
        torn = full[:cut] if layout == "version 2" else full[:cut] + bytes(len(full) - cut)
        path.write_bytes(torn)
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            wal, entries = WAL.open(fs, str(tmp_path), segment_bytes=SMALL)
        complete = sum(1 for end in offs[1:] if end <= cut)
        assert entries == written[:complete], cut
        # The torn record is gone: the log's bytes end where the last complete record does.
        if layout == "version 2":
            assert path.stat().st_size == offs[complete]
        else:
            assert path.read_bytes() == full[: offs[complete]] + bytes(len(full) - offs[complete])
        assert (cut == offs[complete]) != any("torn tail" in r.getMessage() for r in caplog.records)
        # The repaired log takes new appends that survive the next restart.
        wal.append(batch(complete + 1, 1, term=9))
        wal.sync()
        wal.close()
        assert reopen(fs, str(tmp_path), segment_bytes=SMALL) == (
            written[:complete] + batch(complete + 1, 1, term=9)
        )
        for extra in segments(tmp_path)[1:]:  # the version 2 segment was not appended to
            extra.unlink()


@pytest.mark.parametrize("layout", LAYOUTS)
def test_crc_mismatch_in_last_record_is_a_torn_tail(tmp_path: Path, layout: str) -> None:
    fs = OsFileSystem()
    path, full = write_one_segment(tmp_path, batch(1, 3), layout)
    data = bytearray(full)
    data[record_offsets(full)[-1] - 1] ^= 0xFF  # the last byte of the last record
    path.write_bytes(bytes(data))
    assert reopen(fs, str(tmp_path)) == batch(1, 2)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_corruption_before_the_tail_is_refused(tmp_path: Path, layout: str) -> None:
    fs = OsFileSystem()
    path, full = write_one_segment(tmp_path, batch(1, 4), layout)
    offs = record_offsets(full)
    for pos in range(HEADER, offs[-2]):  # every byte of every record but the last
        data = bytearray(full)
        data[pos] ^= 0x5A
        path.write_bytes(bytes(data))
        record_start = max(o for o in offs if o <= pos)
        with pytest.raises(CorruptLog) as info:
            WAL.open(fs, str(tmp_path))
        assert str(path) in str(info.value)
        assert f"byte offset {record_start}" in str(info.value)


def test_bad_magic_and_unknown_version_refused(tmp_path: Path) -> None:
    fs = OsFileSystem()
    wal, _ = WAL.open(fs, str(tmp_path))
    wal.append(batch(1, 2))
    wal.close()
    (path,) = segments(tmp_path)
    full = path.read_bytes()
    path.write_bytes(full[:6] + struct.pack("<H", 99) + full[8:])
    with pytest.raises(UnsupportedVersion, match=rf"{path}.*version 99"):
        WAL.open(fs, str(tmp_path))
    path.write_bytes(b"NOTWAL" + full[6:])
    with pytest.raises(CorruptLog, match=rf"{path}.*magic"):
        WAL.open(fs, str(tmp_path))


def test_rollover_and_replay_across_segments(tmp_path: Path) -> None:
    fs = OsFileSystem()
    wal, _ = WAL.open(fs, str(tmp_path), segment_bytes=100)
    log: list[Entry] = []
    for first in range(1, 40, 3):
        wal.append(batch(first, 3, size=10))
        log = apply(log, batch(first, 3, size=10))
    conflict = batch(5, 2, term=2)  # truncates entries written in earlier segments
    wal.append(conflict)
    log = apply(log, conflict)
    wal.sync()
    wal.close()
    names = [p.name for p in segments(tmp_path)]
    assert len(names) > 5
    assert names[0] == "0000000000000001-0000000000000001.wal"
    assert reopen(fs, str(tmp_path), segment_bytes=100) == log


def test_damaged_earlier_segment_is_refused(tmp_path: Path) -> None:
    fs = OsFileSystem()
    wal, _ = WAL.open(fs, str(tmp_path), segment_bytes=50)
    for first in range(1, 10, 2):
        wal.append(batch(first, 2, size=20))
    wal.close()
    first_segment = segments(tmp_path)[0]
    first_segment.write_bytes(first_segment.read_bytes()[:-3])
    with pytest.raises(CorruptLog, match=str(first_segment)):
        WAL.open(fs, str(tmp_path), segment_bytes=50)


def test_drop_before_removes_whole_old_segments(tmp_path: Path) -> None:
    fs = OsFileSystem()
    wal, _ = WAL.open(fs, str(tmp_path), segment_bytes=50)
    for first in range(1, 21, 2):
        wal.append(batch(first, 2, size=20))
    count = len(segments(tmp_path))
    wal.drop_before(8)
    wal.sync()
    wal.close()
    assert len(segments(tmp_path)) < count
    entries = reopen(fs, str(tmp_path), segment_bytes=50)
    assert 1 < entries[0].index <= 8
    assert entries == batch(entries[0].index, 21 - entries[0].index, size=20)


def test_fsync_failure_is_final() -> None:
    fs = SimFileSystem()
    wal, _ = WAL.open(fs, ".")
    wal.append(batch(1, 1))
    fs.fail_fsync = True
    with pytest.raises(FsyncError):
        wal.sync()
    fs.fail_fsync = False
    with pytest.raises(FsyncError):
        wal.sync()  # a failed fsync is never retried into a false success
    with pytest.raises(FsyncError):
        wal.append(batch(2, 1))


def possible_logs(batches: list[list[Entry]], synced: int) -> list[list[Entry]]:
    """Every log a crash may leave: all synced batches, then any prefix of later writes."""
    logs: list[list[Entry]] = []
    log: list[Entry] = []
    for k, b in enumerate(batches):
        if k >= synced:
            logs.extend(apply(log, b[:j]) for j in range(len(b)))
        log = apply(log, b)
    logs.append(log)
    return logs


def test_crash_at_every_operation_keeps_synced_entries() -> None:
    rng = random.Random(3)
    batches = [batch(1, 4), batch(5, 3), batch(3, 5, term=2), batch(8, 6)]

    def run(fs: SimFileSystem, synced: list[int]) -> None:
        wal, _ = WAL.open(fs, ".", segment_bytes=60)
        for k, b in enumerate(batches):
            wal.append(b)
            wal.sync()
            synced[0] = k + 1

    dry = SimFileSystem()
    run(dry, [0])
    assert len(dry.listdir(".")) > 2  # crashes also hit segment rollovers
    for crash_at in range(dry.ops + 1):
        for seed in range(4):
            fs = SimFileSystem()
            fs.crash_after = crash_at
            synced = [0]
            try:
                run(fs, synced)
            except SimulatedCrash:
                pass
            fs.crash(random.Random(rng.random()))
            recovered = reopen(fs, ".", segment_bytes=60)
            assert recovered in possible_logs(batches, synced[0]), (crash_at, seed)


def test_unsynced_entries_may_be_lost_synced_never() -> None:
    outcomes = set()
    for seed in range(40):
        fs = SimFileSystem()
        wal, _ = WAL.open(fs, ".")
        wal.append(batch(1, 5))
        wal.sync()
        wal.append(batch(6, 5))
        fs.crash(random.Random(seed))
        entries = reopen(fs, ".")
        assert entries == batch(1, len(entries))
        assert len(entries) >= 5
        outcomes.add(len(entries))
    assert 5 in outcomes and len(outcomes) > 1


def test_torn_header_of_last_segment_is_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fs = OsFileSystem()
    wal, _ = WAL.open(fs, str(tmp_path))
    wal.append(batch(1, 3))
    wal.close()
    torn = tmp_path / "0000000000000002-0000000000000004.wal"
    torn.write_bytes(b"RFT")
    with caplog.at_level(logging.WARNING):
        assert reopen(fs, str(tmp_path)) == batch(1, 3)
    assert not torn.exists()
    assert any("torn header" in r.getMessage() for r in caplog.records)

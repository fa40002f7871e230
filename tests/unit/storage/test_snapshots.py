"""Snapshot files: streamed round trips, corruption fallback, versions, pruning, crashes."""

from __future__ import annotations

import logging
import random
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from raftd.core.state import ConfState, SnapshotMeta
from raftd.storage import snapshots
from raftd.storage.files import FileSystem, OsFileSystem, UnsupportedVersion
from raftd.storage.snapshots import CorruptSnapshot, SnapshotFile
from tests.sim.disk import SimFileSystem, SimulatedCrash

CONF = ConfState(voters=("127.0.0.1:7001", "127.0.0.1:7002"), learners=("127.0.0.1:7003",))


def meta(index: int, term: int = 1) -> SnapshotMeta:
    return SnapshotMeta(index=index, term=term, conf_state=CONF)


def sim_dir() -> SimFileSystem:
    fs = SimFileSystem()
    fs.makedirs("d")
    return fs


def write(fs: FileSystem, dir: str, index: int, data: bytes) -> SnapshotFile:
    return snapshots.write(fs, dir, meta(index), [data[:5], data[5:]])


def test_round_trip_streams_the_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fs = SimFileSystem()
    fs.makedirs("d")
    tmp = "d/" + snapshots.snapshot_name(7, 2) + snapshots.TEMP_SUFFIX
    pieces = [b"head", b"", b"x" * 5000, b"tail"]

    def chunks() -> Iterator[bytes]:
        for k, piece in enumerate(pieces):
            # Each chunk reaches the file before the next is produced: nothing is buffered.
            assert fs.read(tmp).endswith(b"".join(pieces[:k]))
            yield piece

    written = snapshots.write(fs, "d", SnapshotMeta(7, 2, CONF), chunks())
    assert written.path == "d/snap-0000000000000007-0000000000000002.snap"
    assert fs.listdir("d") == [written.path.removeprefix("d/")]
    assert written.size == fs.size(written.path)
    assert snapshots.load_latest(fs, "d") == written
    assert snapshots.read_data(fs, written.path) == b"".join(pieces)

    # The real file system, with verification reading in several pieces.
    monkeypatch.setattr(snapshots, "READ_CHUNK_BYTES", 1000)
    os_fs = OsFileSystem()
    on_disk = snapshots.write(os_fs, str(tmp_path), SnapshotMeta(7, 2, CONF), iter(pieces))
    assert snapshots.load_latest(os_fs, str(tmp_path)) == on_disk
    assert snapshots.read_data(os_fs, on_disk.path) == b"".join(pieces)
    assert Path(on_disk.path).stat().st_size == on_disk.size


def test_empty_data_and_empty_conf() -> None:
    fs = sim_dir()
    written = snapshots.write(fs, "d", SnapshotMeta(1, 1), [])
    assert snapshots.load_latest(fs, "d") == written
    assert snapshots.read_data(fs, written.path) == b""


def test_newest_wins_by_index_not_by_name_length() -> None:
    fs = sim_dir()
    for index in (9, 0x10, 0x100):
        write(fs, "d", index, b"data %d" % index)
    latest = snapshots.load_latest(fs, "d")
    assert latest is not None and latest.meta.index == 0x100


def test_any_damaged_byte_of_the_newest_falls_back_or_refuses(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fs = sim_dir()
    older = write(fs, "d", 5, b"older snapshot")
    newest = write(fs, "d", 9, b"newest snapshot data")
    full = fs.read(newest.path)
    for pos in range(len(full)):
        damaged = bytearray(full)
        damaged[pos] ^= 0x21
        fs.create(newest.path).write(bytes(damaged))
        caplog.clear()
        if pos in (6, 7):  # the version field: a newer format, not damage
            with pytest.raises(UnsupportedVersion, match=rf"{newest.path}: .*version"):
                snapshots.load_latest(fs, "d")
            continue
        with caplog.at_level(logging.WARNING):
            assert snapshots.load_latest(fs, "d") == older, pos
        assert any(newest.path in r.getMessage() for r in caplog.records), pos
    for cut in range(len(full)):
        fs.create(newest.path).write(full[:cut])
        assert snapshots.load_latest(fs, "d") == older, cut


def test_no_valid_snapshot_is_none() -> None:
    fs = sim_dir()
    assert snapshots.load_latest(fs, "d") is None
    only = write(fs, "d", 3, b"abc")
    data = fs.read(only.path)
    fs.create(only.path).write(data[:-1] + bytes([data[-1] ^ 1]))
    assert snapshots.load_latest(fs, "d") is None


def test_unknown_version_refused_naming_the_file_even_with_an_older_valid_one() -> None:
    fs = sim_dir()
    write(fs, "d", 5, b"older")
    newest = write(fs, "d", 9, b"newer")
    data = fs.read(newest.path)
    fs.create(newest.path).write(data[:6] + struct.pack("<H", 7) + data[8:])
    with pytest.raises(UnsupportedVersion, match=rf"^{newest.path}: snapshot format version 7 "):
        snapshots.load_latest(fs, "d")


def test_a_renamed_file_is_not_trusted() -> None:
    fs = sim_dir()
    older = write(fs, "d", 5, b"older")
    newest = write(fs, "d", 9, b"newer")
    fs.rename(newest.path, "d/" + snapshots.snapshot_name(12, 1))
    assert snapshots.load_latest(fs, "d") == older


def test_read_data_rechecks_the_crc() -> None:
    fs = sim_dir()
    written = write(fs, "d", 5, b"some state machine data")
    data = bytearray(fs.read(written.path))
    data[-13] ^= 1  # the last data byte (the trailer is 12 bytes)
    fs.create(written.path).write(bytes(data))
    with pytest.raises(CorruptSnapshot, match=f"{written.path}: snapshot checksum mismatch"):
        snapshots.read_data(fs, written.path)


def test_prune_keeps_the_newest_and_leaves_temp_files() -> None:
    fs = sim_dir()
    for index in range(1, 6):
        write(fs, "d", index, b"x")
    in_progress = "d/" + snapshots.snapshot_name(6, 1) + snapshots.TEMP_SUFFIX
    fs.create(in_progress).close()
    snapshots.prune(fs, "d")
    assert fs.listdir("d") == [
        snapshots.snapshot_name(4, 1), snapshots.snapshot_name(5, 1),
        snapshots.snapshot_name(6, 1) + snapshots.TEMP_SUFFIX,
    ]
    snapshots.discard_temporary(fs, "d")
    snapshots.prune(fs, "d", keep=1)
    assert fs.listdir("d") == [snapshots.snapshot_name(5, 1)]
    with pytest.raises(ValueError):
        snapshots.prune(fs, "d", keep=0)


def test_failed_write_leaves_nothing() -> None:
    fs = sim_dir()

    def chunks() -> Iterator[bytes]:
        yield b"part"
        raise RuntimeError("capture failed")

    with pytest.raises(RuntimeError):
        snapshots.write(fs, "d", meta(3), chunks())
    assert fs.listdir("d") == []


def test_crash_at_every_operation_never_exposes_a_partial_file() -> None:
    dry = sim_dir()
    before = dry.ops
    write(dry, "d", 4, b"payload")
    steps = dry.ops - before
    outcomes = set()
    for crash_at in range(steps + 1):
        for seed in range(3):
            fs = sim_dir()
            fs.crash_after = crash_at
            try:
                write(fs, "d", 4, b"payload")
            except SimulatedCrash:
                pass
            fs.crash(random.Random(seed))
            latest = snapshots.load_latest(fs, "d")
            if latest is not None:
                assert snapshots.read_data(fs, latest.path) == b"payload"
            snapshots.discard_temporary(fs, "d")
            assert fs.listdir("d") == ([] if latest is None else [latest.path[2:]])
            outcomes.add(latest is not None)
    assert outcomes == {False, True}

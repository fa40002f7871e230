"""Hard state: atomic replace under crashes at every step, corruption, versions."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from raftd.core.state import HardState
from raftd.storage import hardstate
from raftd.storage.files import FsyncError, OsFileSystem, UnsupportedVersion
from raftd.storage.hardstate import CorruptHardState
from tests.sim.disk import SimFileSystem, SimulatedCrash

OLD = HardState(current_term=3, voted_for="127.0.0.1:7001")
NEW = HardState(current_term=4, voted_for="127.0.0.1:7002", catching_up=True)


def test_round_trip_on_real_files(tmp_path: Path) -> None:
    fs = OsFileSystem()
    assert hardstate.load(fs, str(tmp_path)) is None
    hardstate.save(fs, str(tmp_path), OLD)
    hardstate.save(fs, str(tmp_path), NEW)
    assert hardstate.load(fs, str(tmp_path)) == NEW
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hardstate"]


def save_ops() -> int:
    fs = SimFileSystem()
    before = fs.ops
    hardstate.save(fs, ".", NEW)
    return fs.ops - before


@pytest.mark.parametrize("old", [OLD, None])
def test_crash_at_every_step_gives_old_or_new(old: HardState | None) -> None:
    total = save_ops()
    assert total >= 5  # create, write, fsync, rename, fsync dir
    for crash_at in range(total + 1):
        for seed in range(10):
            fs = SimFileSystem()
            if old is not None:
                hardstate.save(fs, ".", old)
            fs.crash_after = crash_at
            try:
                hardstate.save(fs, ".", NEW)
                completed = True
            except SimulatedCrash:
                completed = False
            fs.crash(random.Random(seed))
            loaded = hardstate.load(fs, ".")
            if completed:
                assert loaded == NEW, (crash_at, seed)  # durable once save returned
            else:
                assert loaded in (old, NEW), (crash_at, seed)


def test_corrupt_file_refused_naming_path(tmp_path: Path) -> None:
    fs = OsFileSystem()
    hardstate.save(fs, str(tmp_path), NEW)  # a fresh file: only slot 0 holds a state
    path = tmp_path / "hardstate"
    full = path.read_bytes()
    covered = full.index(b"\x84\xa7version") + len(msgpack.packb({
        "version": 1, "current_term": NEW.current_term, "voted_for": NEW.voted_for,
        "catching_up": NEW.catching_up,
    }))
    for pos in range(len(full)):
        data = bytearray(full)
        data[pos] ^= 0x21
        path.write_bytes(bytes(data))
        if pos < covered:  # the only valid slot's header or payload
            with pytest.raises(CorruptHardState, match=str(path)):
                hardstate.load(fs, str(tmp_path))
        else:  # padding, or the empty slot
            assert hardstate.load(fs, str(tmp_path)) == NEW
    for cut in range(len(full)):
        path.write_bytes(full[:cut])
        with pytest.raises(CorruptHardState, match=str(path)):
            hardstate.load(fs, str(tmp_path))


def test_in_place_saves_cost_one_sync_and_survive_a_crash_at_every_step() -> None:
    fs = SimFileSystem()
    states = [HardState(current_term=t, voted_for=f"n{t}") for t in range(1, 6)]
    writer = hardstate.HardStateFile(fs, ".")
    writer.save(states[0])  # creates the file (atomic replace)
    before = fs.ops
    writer.save(states[1])
    in_place_ops = fs.ops - before
    assert in_place_ops <= 3  # open/write, sync: no rename, no directory sync
    for crash_at in range(in_place_ops + 1):
        for seed in range(10):
            fs = SimFileSystem()
            writer = hardstate.HardStateFile(fs, ".")
            for hs in states[:3]:
                writer.save(hs)
            fs.crash_after = crash_at
            try:
                writer.save(states[3])
                completed = True
            except SimulatedCrash:
                completed = False
            fs.crash(random.Random(seed))
            loaded = hardstate.load(fs, ".")
            assert loaded == states[3] if completed else loaded in (states[2], states[3])
            hardstate.HardStateFile(fs, ".").save(states[4])  # and it goes on from there
            assert hardstate.load(fs, ".") == states[4]


def test_a_version_1_file_is_read_and_upgraded_by_the_next_save(tmp_path: Path) -> None:
    fields = {"version": 1, "current_term": 7, "voted_for": "n1", "catching_up": False}
    write_payload(tmp_path / "hardstate", msgpack.packb(fields))
    fs = OsFileSystem()
    assert hardstate.load(fs, str(tmp_path)) == HardState(current_term=7, voted_for="n1")
    writer = hardstate.HardStateFile(fs, str(tmp_path))
    writer.save(NEW)
    writer.save(OLD)
    assert hardstate.load(fs, str(tmp_path)) == OLD
    assert (tmp_path / "hardstate").stat().st_size == 2 * hardstate.SLOT_BYTES


def write_payload(path: Path, payload: bytes) -> None:
    path.write_bytes(struct.pack("<I", zlib.crc32(payload)) + payload)


def test_unknown_version_refused(tmp_path: Path) -> None:
    path = tmp_path / "hardstate"
    fields = {"version": 2, "current_term": 1, "voted_for": "", "catching_up": False}
    write_payload(path, msgpack.packb(fields))
    with pytest.raises(UnsupportedVersion, match=rf"{path}.*version 2"):
        hardstate.load(OsFileSystem(), str(tmp_path))


@pytest.mark.parametrize(
    "fields",
    [
        {"version": 1, "current_term": 1, "voted_for": ""},
        {"version": 1, "current_term": "1", "voted_for": "", "catching_up": False},
        [1, 2, 3],
    ],
)
def test_well_checksummed_but_malformed_refused(tmp_path: Path, fields: object) -> None:
    path = tmp_path / "hardstate"
    write_payload(path, msgpack.packb(fields))
    with pytest.raises(CorruptHardState, match=str(path)):
        hardstate.load(OsFileSystem(), str(tmp_path))


def test_fsync_failure_surfaces() -> None:
    fs = SimFileSystem()
    fs.fail_fsync = True
    with pytest.raises(FsyncError):
        hardstate.save(fs, ".", NEW)

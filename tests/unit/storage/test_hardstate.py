"""Hard state: atomic replace under crashes at every step, corruption, versions."""

from __future__ import annotations

import random
import struct
import zlib
from pathlib import Path

import msgpack
import pytest

from raftd.core.state import ConfState, HardState
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
    # Every byte of the slot in use and around it, then a stride through padding and slot 1.
    for pos in [*range(covered + 64), *range(covered + 64, len(full), 37), len(full) - 1]:
        data = bytearray(full)
        data[pos] ^= 0x21
        path.write_bytes(bytes(data))
        if pos < covered:  # the only valid slot's header or payload
            with pytest.raises(CorruptHardState, match=str(path)):
                hardstate.load(fs, str(tmp_path))
        else:  # padding, or the empty slot
            assert hardstate.load(fs, str(tmp_path)) == NEW
    for cut in [*range(covered + 64), *range(covered + 64, len(full), 37), len(full) - 1,
                2 * hardstate.FIRST_SLOT_BYTES]:
        path.write_bytes(full[:cut])
        if cut == 2 * hardstate.FIRST_SLOT_BYTES:  # the length of the first slotted files
            assert hardstate.load(fs, str(tmp_path)) == NEW
            continue
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
    # The first in-place save after the file was created, and later ones, in either slot.
    for done in (1, 2, 3):
        for crash_at in range(in_place_ops + 1):
            for seed in range(10):
                fs = SimFileSystem()
                writer = hardstate.HardStateFile(fs, ".")
                for hs in states[:done]:
                    writer.save(hs)
                fs.crash_after = crash_at
                try:
                    writer.save(states[done])
                    completed = True
                except SimulatedCrash:
                    completed = False
                fs.crash(random.Random(seed))
                loaded = hardstate.load(fs, ".")
                expected = (states[done],) if completed else (states[done - 1], states[done])
                assert loaded in expected, (done, crash_at, seed)
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


def test_a_file_of_512_byte_slots_is_read_and_upgraded_by_the_next_save(tmp_path: Path) -> None:
    fs = OsFileSystem()
    path = tmp_path / "hardstate"
    slot = hardstate._slot(5, msgpack.packb(
        {"version": 1, "current_term": 9, "voted_for": "n2", "catching_up": False}))
    path.write_bytes(slot[:hardstate.FIRST_SLOT_BYTES] + bytes(hardstate.FIRST_SLOT_BYTES))
    assert hardstate.load(fs, str(tmp_path)) == HardState(current_term=9, voted_for="n2")
    writer = hardstate.HardStateFile(fs, str(tmp_path))
    for hs in (NEW, OLD):
        writer.save(hs)
        assert hardstate.load(fs, str(tmp_path)) == hs
        assert path.stat().st_size == 2 * hardstate.SLOT_BYTES


def test_each_slot_has_a_page_of_its_own(tmp_path: Path) -> None:
    """A torn write of the page holding one slot leaves the other slot's page intact."""
    fs = OsFileSystem()
    writer = hardstate.HardStateFile(fs, str(tmp_path))
    writer.save(OLD)
    writer.save(NEW)  # slot 1, the second page
    path = tmp_path / "hardstate"
    data = path.read_bytes()
    assert hardstate.SLOT_BYTES % 4096 == 0
    path.write_bytes(data[:hardstate.SLOT_BYTES] + bytes(b ^ 0x5A for b in data[4096:]))
    assert hardstate.load(fs, str(tmp_path)) == OLD


@pytest.mark.parametrize("length", [2 * hardstate.FIRST_SLOT_BYTES, 2 * hardstate.SLOT_BYTES])
def test_a_configuration_file_as_long_as_a_slot_file_is_read_as_one(length: int) -> None:
    fs = SimFileSystem()  # in memory: the search below saves a few hundred times

    def saved_size(conf: ConfState) -> int:
        hardstate.save_conf(fs, ".", conf, 12)
        return len(fs.read(hardstate.CONF_FILE_NAME))

    for voters in range(1, 400):
        conf = ConfState(voters=tuple(f"node-{i:03}.example.org:7001" for i in range(voters)))
        if saved_size(conf) >= length - 40:
            break
    # Lengthen the last name until the file is exactly `length` bytes long.
    first = conf.voters
    for pad in range(41):
        conf = ConfState(voters=first[:-1] + (first[-1] + "x" * pad,))
        if saved_size(conf) == length:
            break
    assert len(fs.read(hardstate.CONF_FILE_NAME)) == length
    assert hardstate.load_conf(fs, ".") == (conf, 12)


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

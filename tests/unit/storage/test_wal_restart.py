"""WAL restart records (format version 2): replay, gaps around them, segment dropping, v1 data."""

from __future__ import annotations

import struct

import pytest

from raftd.core.errors import CorruptLog
from raftd.core.state import Entry
from raftd.storage import wal as wal_format
from raftd.storage.wal import WAL, Restart
from tests.sim.disk import SimFileSystem


def batch(first: int, n: int, term: int = 1) -> list[Entry]:
    return [Entry(term=term, index=i, data=b"x%d" % i) for i in range(first, first + n)]


def wal_names(fs: SimFileSystem) -> list[str]:
    return [n for n in fs.listdir(".") if n.endswith(".wal")]


def reopen(fs: SimFileSystem, **kw: int) -> tuple[WAL, list[Entry]]:
    wal, entries = WAL.open(fs, ".", **kw)
    wal.close()
    return wal, entries


def test_restart_discards_everything_before_it() -> None:
    fs = SimFileSystem()
    wal, _ = WAL.open(fs, ".")
    wal.append(batch(1, 10))
    wal.append_restart(30, 4)
    wal.append(batch(31, 3, term=4))
    wal.sync()
    wal.close()
    wal, entries = reopen(fs)
    assert entries == batch(31, 3, term=4)
    assert wal.replayed_restart == Restart(index=30, term=4)
    assert wal.replayed_origin is not None and "at byte offset" in wal.replayed_origin


def test_restart_below_the_old_log_also_discards_it() -> None:
    fs = SimFileSystem()
    wal, _ = WAL.open(fs, ".")
    wal.append(batch(1, 10))
    wal.append_restart(5, 2)
    wal.sync()
    wal.close()
    wal, entries = reopen(fs)
    assert (entries, wal.replayed_restart) == ([], Restart(index=5, term=2))


def test_without_restart_origin_is_the_first_surviving_entry() -> None:
    fs = SimFileSystem()
    wal, _ = WAL.open(fs, ".")
    wal.append(batch(1, 3))
    wal.sync()
    wal.close()
    wal, _ = reopen(fs)
    assert wal.replayed_restart is None
    assert wal.replayed_origin == "./0000000000000001-0000000000000001.wal at byte offset 8"


@pytest.mark.parametrize(("first", "message"), [(32, "leaves a gap after the log restart"),
                                                (30, "precedes the log restart")])
def test_entry_not_following_a_restart_is_refused(first: int, message: str) -> None:
    fs = SimFileSystem()
    wal, _ = WAL.open(fs, ".")
    wal.append_restart(30, 4)
    wal.append(batch(first, 2, term=4))  # the WAL writes what it is given; replay judges
    wal.sync()
    wal.close()
    with pytest.raises(CorruptLog, match=rf"\.wal: entry {first} at byte offset \d+ {message}"):
        WAL.open(fs, ".")


def test_drop_before_removes_every_segment_before_a_restart() -> None:
    fs = SimFileSystem()
    wal, _ = WAL.open(fs, ".", segment_bytes=60)
    for first in range(1, 40, 3):
        wal.append(batch(first, 3))
    wal.append_restart(20, 3)  # below most of the old log: all of it is garbage anyway
    wal.append(batch(21, 2, term=3))
    wal.sync()
    wal.drop_before(21)
    wal.close()
    assert len([n for n in fs.listdir(".") if n.endswith(".wal")]) == 1
    _, entries = reopen(fs, segment_bytes=60)
    assert entries == batch(21, 2, term=3)


def test_version_1_segment_is_read_but_not_appended_to() -> None:
    fs = SimFileSystem()
    wal, _ = WAL.open(fs, ".")
    wal.append(batch(1, 3))
    wal.sync()
    wal.close()
    (name,) = wal_names(fs)
    # As a v1 build wrote it: entries only, and the file ends with the last record.
    data = fs.read_range(name, 0, fs.content_size(name))
    fs.create(name).write(data[:6] + struct.pack("<H", 1) + data[8:])
    wal, entries = WAL.open(fs, ".")
    assert entries == batch(1, 3)
    wal.append_restart(3, 1)
    wal.append(batch(4, 1))
    wal.sync()
    wal.close()
    names = wal_names(fs)
    assert len(names) == 2 and fs.read(names[0]) == data[:6] + struct.pack("<H", 1) + data[8:]
    assert struct.unpack_from("<H", fs.read(names[1]), 6) == (wal_format.VERSION,)
    _, entries = reopen(fs)
    assert entries == batch(4, 1)

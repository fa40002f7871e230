"""The configuration applied last survives a restart (a node never falls back two configs)."""

from __future__ import annotations

from raftd.core import ConfState, HardState, SnapshotMeta
from raftd.core.state import Entry
from raftd.storage import snapshots
from raftd.storage.disk import DiskStorage
from tests.sim.disk import SimFileSystem

CONFIGURED = ConfState(voters=("a", "b", "c"))
GROWN = ConfState(voters=("a", "b", "c", "d"), learners=("e",), auto_promote=("e",))


def open_storage(fs: SimFileSystem) -> DiskStorage:
    return DiskStorage(fs, "/data", conf_state=CONFIGURED)


def test_applied_configuration_is_what_a_restart_starts_with() -> None:
    fs = SimFileSystem()
    storage = open_storage(fs)
    storage.set_hard_state(HardState(current_term=1))
    storage.append([Entry(term=1, index=i) for i in range(1, 6)])
    storage.sync()
    assert storage.initial_state()[1] == CONFIGURED and storage.conf_index() == 0
    storage.set_conf_state(GROWN, 4)
    storage.close()
    reopened = open_storage(fs)
    assert reopened.initial_state()[1] == GROWN
    assert reopened.conf_index() == 4


def test_a_newer_snapshot_configuration_wins() -> None:
    fs = SimFileSystem()
    storage = open_storage(fs)
    storage.set_hard_state(HardState(current_term=1))
    storage.append([Entry(term=1, index=i) for i in range(1, 11)])
    storage.sync()
    storage.set_conf_state(GROWN, 4)
    shrunk = ConfState(voters=("a", "b"))
    meta = SnapshotMeta(index=8, term=1, conf_state=shrunk)
    storage.record_snapshot(meta, snapshots.write(fs, "/data", meta, [b"state"]),
                            trailing_entries=2)
    storage.close()
    assert open_storage(fs).initial_state()[1] == shrunk

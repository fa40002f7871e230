"""The backup format (raftd.backup) and the recovery procedures (raftd.recovery) on a real
temp dir: what they write is read back through DiskStorage, exactly as raftd start would."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest

from raftd import backup
from raftd.backup import Backup, BackupError
from raftd.config import NodeConfig, load_config, write_cluster_configs
from raftd.core.confchange import ConfChange, ConfChangeType
from raftd.core.state import (
    ConfState,
    Entry,
    EntryType,
    HardState,
    Snapshot,
    SnapshotMeta,
)
from raftd.federated.state import APP_NAME, FederatedState
from raftd.recovery import RecoveryError, force_new_cluster, restore_backup
from raftd.statemachine import APP, SET, DictStateMachine, encode_batch, encode_command
from raftd.storage.disk import DiskStorage
from raftd.storage.files import OsFileSystem

A, B, C = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"


def state_with(items: dict[str, int]) -> DictStateMachine:
    sm = DictStateMachine()
    sm.apply_batch(batch(items))
    return sm


def batch(items: dict[str, int]) -> bytes:
    return encode_batch(1, [encode_command(SET, k, v) for k, v in items.items()])


def snapshot_bytes(sm: DictStateMachine) -> bytes:
    return b"".join(sm.capture().chunks())


def sample() -> Backup:
    data = snapshot_bytes(state_with({"a": 1, "b": 2}))
    return Backup(index=12, term=3, voters=(A, B, C), learners=(), data=data)


def open_storage(data_dir: Path) -> DiskStorage:
    return DiskStorage(OsFileSystem(), str(data_dir), conf_state=ConfState(voters=(A, B, C)))


# -- raftd.backup ------------------------------------------------------------------------------


def test_backup_round_trip_and_atomic_save(tmp_path: Path) -> None:
    path = tmp_path / "b.backup"
    size = backup.save(str(path), sample())
    assert size == path.stat().st_size
    assert backup.load(str(path)) == sample()
    assert [p.name for p in tmp_path.iterdir()] == ["b.backup"]  # no temp file left
    fields = msgpack.unpackb(path.read_bytes())
    assert (fields["format"], fields["version"]) == ("rafty-backup", 1)
    assert fields["sha256"] == sample().sha256


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.update(data=f["data"][:-1] + b"\0"), "checksum mismatch"),
        (lambda f: f.update(index=13), "checksum mismatch"),  # metadata is covered too
        (lambda f: f.update(voters=[A]), "checksum mismatch"),
        (lambda f: f.update(version=2), "version 2 is not supported"),
        (lambda f: f.update(format="other"), "not a rafty backup"),
        (lambda f: f.pop("data"), "malformed backup"),
        (lambda f: f.update(term="3"), "malformed backup"),
    ],
)
def test_backup_refuses_damage_with_one_line(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    fields = msgpack.unpackb(backup.encode(sample()))
    change(fields)
    path = tmp_path / "b.backup"
    path.write_bytes(msgpack.packb(fields))
    with pytest.raises(BackupError, match=message) as err:
        backup.load(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_backup_refuses_what_is_not_msgpack(tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"\xc1garbage")
    with pytest.raises(BackupError, match="not a rafty backup"):
        backup.load(str(path))
    with pytest.raises(BackupError, match="cannot read"):
        backup.load(str(tmp_path / "missing"))


# -- raftd restore -----------------------------------------------------------------------------


def test_restore_writes_a_snapshot_and_a_hard_state(tmp_path: Path) -> None:
    path = tmp_path / "b.backup"
    backup.save(str(path), sample())
    done = restore_backup(str(path), str(tmp_path / "n1"), (B, A))
    assert (done.index, done.term, done.voters, done.keys) == (12, 3, (A, B), 2)
    storage = open_storage(tmp_path / "n1")
    try:
        hs, conf = storage.initial_state()
        assert hs == HardState(current_term=3)
        assert conf == ConfState(voters=(A, B))
        assert (storage.first_index(), storage.last_index()) == (13, 12)
        sm = DictStateMachine()
        sm.restore(storage.snapshot().data)
        assert sm.whole() == {"a": 1, "b": 2} and sm.digest() == done.state_hash
    finally:
        storage.close()


def test_restore_defaults_to_the_backups_voters_and_refuses_a_used_dir(tmp_path: Path) -> None:
    path = tmp_path / "b.backup"
    backup.save(str(path), sample())
    assert restore_backup(str(path), str(tmp_path / "n1")).voters == (A, B, C)
    with pytest.raises(RecoveryError, match="is not empty"):
        restore_backup(str(path), str(tmp_path / "n1"))
    with pytest.raises(RecoveryError, match="twice"):
        restore_backup(str(path), str(tmp_path / "n2"), (A, A))


def test_restore_refuses_state_it_cannot_read(tmp_path: Path) -> None:
    path = tmp_path / "b.backup"
    backup.save(str(path), Backup(index=1, term=1, voters=(A,), learners=(), data=b"\x01"))
    with pytest.raises(RecoveryError, match="cannot be read"):
        restore_backup(str(path), str(tmp_path / "n1"))
    assert not (tmp_path / "n1").exists()


# -- raftd start --force-new-cluster -----------------------------------------------------------


def config_of_node(tmp_path: Path, k: int) -> NodeConfig:
    paths = write_cluster_configs(tmp_path, [A, B, C])
    return load_config(paths[k])


def entries(first: int, term: int, payloads: list[bytes | ConfChange]) -> list[Entry]:
    out = []
    for i, p in enumerate(payloads):
        if isinstance(p, ConfChange):
            out.append(Entry(term=term, index=first + i, type=EntryType.CONF_CHANGE,
                             data=p.encode()))
        else:
            out.append(Entry(term=term, index=first + i, data=p))
    return out


def test_force_new_cluster_applies_the_whole_log_and_leaves_one_voter(tmp_path: Path) -> None:
    config = config_of_node(tmp_path, 1)
    data_dir = config.node.data_dir
    storage = open_storage(data_dir)
    storage.append(entries(1, 2, [
        b"",  # the leader's no-op
        batch({"a": 1}),
        ConfChange(type=ConfChangeType.REMOVE, node_id=C),
        batch({"b": 2, "a": 3}),  # perhaps never committed: applied all the same
    ]))
    storage.set_hard_state(HardState(current_term=4, voted_for=A))
    storage.sync()
    storage.close()

    done = force_new_cluster(config)
    assert (done.index, done.term, done.voters, done.keys) == (4, 2, (B,), 2)
    storage = open_storage(data_dir)
    try:
        hs, conf = storage.initial_state()
        assert conf == ConfState(voters=(B,))
        assert hs == HardState(current_term=4, voted_for=A)
        assert storage.snapshot_meta().index == 4 and storage.last_index() == 4
        sm = DictStateMachine()
        sm.restore(storage.snapshot().data)
        assert sm.whole() == {"a": 3, "b": 2} and sm.digest() == done.state_hash
    finally:
        storage.close()


def test_force_new_cluster_from_a_snapshot_and_its_tail(tmp_path: Path) -> None:
    config = config_of_node(tmp_path, 0)
    data_dir = config.node.data_dir
    storage = open_storage(data_dir)
    snap = Snapshot(SnapshotMeta(10, 2, ConfState(voters=(A, B, C))),
                    snapshot_bytes(state_with({"old": 1})))
    storage.apply_snapshot(snap)
    storage.append(entries(11, 3, [b"", batch({"new": 2})]))
    storage.set_hard_state(HardState(current_term=3, catching_up=True))
    storage.sync()
    storage.close()

    done = force_new_cluster(config)
    assert (done.index, done.term, done.keys) == (12, 3, 2)
    storage = open_storage(data_dir)
    try:
        hs, conf = storage.initial_state()
        assert conf == ConfState(voters=(A,)) and hs is not None and not hs.catching_up
    finally:
        storage.close()
    # Again, with nothing after the snapshot: same position, still one voter, same data.
    assert force_new_cluster(config) == done


def test_force_new_cluster_refuses_a_blank_dir(tmp_path: Path) -> None:
    with pytest.raises(RecoveryError, match="nothing to recover"):
        force_new_cluster(config_of_node(tmp_path, 2))


def test_force_new_cluster_keeps_the_state_of_enabled_applications(tmp_path: Path) -> None:
    paths = write_cluster_configs(tmp_path, [A, B, C])
    with open(paths[0], "a", encoding="utf-8") as f:
        f.write("\n[federated]\nenabled = true\n")
    config = load_config(paths[0])
    storage = open_storage(config.node.data_dir)
    register = {"op": "register", "participant": "p1", "public_key": b"key"}
    storage.append(entries(1, 1, [encode_batch(1, [encode_command(APP, APP_NAME, register)])]))
    storage.set_hard_state(HardState(current_term=1))
    storage.sync()
    storage.close()

    force_new_cluster(config)
    storage = open_storage(config.node.data_dir)
    try:
        sm, federated = DictStateMachine(), FederatedState()
        sm.register_app(APP_NAME, federated)
        sm.restore(storage.snapshot().data)
    finally:
        storage.close()
    assert federated.participants == {"p1": b"key"}

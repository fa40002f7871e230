"""Backup, restore and disaster recovery on real nodes.

``raftctl snapshot save`` → ``raftd restore`` → a new single-node cluster with the same state
hash; ``raftd restore`` refuses what it must; ``raftd start --force-new-cluster`` turns the
survivor of a cluster whose other members are gone into a one-member cluster with all of the
committed data, which accepts writes and stays that way across a restart.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from raftctl import Client
from raftctl.localcluster import LocalCluster, free_ports
from raftd import backup as backups
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import (
    DEADLINE,
    agreed_state_hash,
    diagnostic,
    read_all,
    wait_for_leader,
    wait_until,
    write_all,
)
from tests.integration.test_cli import raftctl

SMALL_SNAPSHOTS = {
    "snapshot_every": 100,
    "snapshot_min_log_bytes": 0,
    "snapshot_trailing_entries": 10,
}


def raftd(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``raftd ARGS`` in a fresh process, as an operator would."""
    done = subprocess.run(
        [sys.executable, "-m", "raftd", *args],
        check=False, capture_output=True, text=True, timeout=DEADLINE,
    )
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done


def data_dir(cluster: LocalCluster, i: int) -> Path:
    return cluster.base_dir / "data" / f"n{i + 1}"


def sole_leader(endpoint: str) -> dict[str, object] | None:
    """The node's diagnostic once it leads a cluster of which it is the only voter."""
    diag = diagnostic(endpoint)
    if diag is None or diag["status"] != "leader" or diag["volatile"]["voters"] != [endpoint]:
        return None
    return diag


def test_backup_restores_into_a_new_single_node_cluster(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    old = make_cluster(3, SMALL_SNAPSHOTS)
    old.start_all()
    wait_for_leader(old)
    items: dict[str, object] = {f"k{i:04d}": f"v{i}" for i in range(400)}
    items["blob"] = bytes(range(256)) * 64
    write_all(old.endpoints, items)
    with Client(old.endpoints, timeout=DEADLINE) as client:
        assert client.delete("k0000")
    del items["k0000"]
    old_hash = agreed_state_hash(old)

    backup = tmp_path / "cluster.backup"
    saved = raftctl(old.endpoints, "--timeout", str(DEADLINE), "-o", "json",
                    "snapshot", "save", str(backup))
    assert saved.returncode == 0, saved.stderr
    record = json.loads(saved.stdout)
    assert record["file"] == str(backup) and record["bytes"] == backup.stat().st_size
    assert sorted(record["voters"]) == sorted(old.endpoints) and record["learners"] == []
    assert not list(tmp_path.glob("*.tmp")), "the atomic write left its temp file"

    new = make_cluster(1)
    target = data_dir(new, 0)
    done = raftd("restore", str(backup), "--data-dir", str(target),
                 "--members", new.endpoints[0])
    assert done.returncode == 0, done.stderr
    assert f"state hash {old_hash}" in done.stdout, done.stdout
    new.start(0)
    diag = wait_until(lambda: sole_leader(new.endpoints[0]), "the restored node to lead alone")
    assert diag["stateHash"] == old_hash
    assert diag["snapshot"]["index"] == record["index"]
    assert diag["persist"]["currentTerm"] > record["term"]  # elected in a term of its own
    assert read_all(new.endpoints, items) == items
    assert read_all(new.endpoints, ["k0000"]) == {"k0000": None}
    with Client(new.endpoints, timeout=DEADLINE) as client:
        client.set("after-restore", 1)  # the new cluster takes writes
        assert client.get("after-restore") == 1


def test_restore_refuses_a_used_data_dir_and_a_bad_backup(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    wait_for_leader(cluster)
    write_all(cluster.endpoints, {"a": 1, "b": 2})
    backup = tmp_path / "b.backup"
    assert raftctl(cluster.endpoints, "snapshot", "save", str(backup)).returncode == 0

    used = tmp_path / "used"
    used.mkdir()
    (used / "hardstate").write_bytes(b"x")
    refused = raftd("restore", str(backup), "--data-dir", str(used))
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "is not empty" in refused.stderr

    raw = bytearray(backup.read_bytes())
    raw[-80] ^= 0xFF  # a bit flipped in the data
    corrupt = tmp_path / "corrupt.backup"
    corrupt.write_bytes(bytes(raw))
    failed = raftd("restore", str(corrupt), "--data-dir", str(tmp_path / "n1"))
    assert failed.returncode == 1 and failed.stderr.count("\n") == 1
    assert "checksum mismatch" in failed.stderr, failed.stderr
    assert not (tmp_path / "n1").exists(), "a refused restore must create nothing"

    other = tmp_path / "not-a-backup"
    other.write_bytes(b"\x93\x01\x02\x03")
    failed = raftd("restore", str(other), "--data-dir", str(tmp_path / "n2"))
    assert failed.returncode == 1 and "not a rafty backup" in failed.stderr, failed.stderr

    bad = raftd("restore", str(backup), "--data-dir", str(tmp_path / "n3"), "--members", "nope")
    assert bad.returncode == 2


def test_snapshot_save_follows_a_symlink_and_refuses_what_is_not_a_regular_file(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = make_cluster(1)
    cluster.start_all()
    wait_for_leader(cluster)
    write_all(cluster.endpoints, {"a": 1})

    plain = tmp_path / "plain.rafty"
    plain.write_bytes(b"previous")
    plain.chmod(0o644)
    saved = raftctl(cluster.endpoints, "snapshot", "save", str(plain))
    assert saved.returncode == 0, saved.stderr
    assert stat.S_IMODE(plain.stat().st_mode) == 0o600  # it holds all of the data
    assert backups.load(str(plain)).voters == tuple(cluster.endpoints)

    (tmp_path / "real").mkdir()
    link = tmp_path / "link.rafty"
    link.symlink_to("real/backup.rafty")
    saved = raftctl(cluster.endpoints, "-o", "json", "snapshot", "save", str(link))
    assert saved.returncode == 0, saved.stderr
    assert json.loads(saved.stdout)["file"] == str(link)
    assert link.is_symlink() and os.readlink(link) == "real/backup.rafty"
    written = tmp_path / "real" / "backup.rafty"
    assert stat.S_ISREG(written.lstat().st_mode) and stat.S_IMODE(written.stat().st_mode) == 0o600
    assert backups.load(str(written)).index == json.loads(saved.stdout)["index"]

    fifo = tmp_path / "fifo.rafty"
    os.mkfifo(fifo)
    directory = tmp_path / "dir.rafty"
    directory.mkdir()
    (directory / "keep").write_bytes(b"mine")
    before = sorted(p.name for p in tmp_path.iterdir())
    nobody = [f"127.0.0.1:{free_ports(1)[0]}"]
    for endpoints, path, says in [
        (cluster.endpoints, fifo, f"'{fifo}' is a FIFO, not a regular file"),
        (nobody, fifo, f"'{fifo}' is a FIFO"),  # refused before any request: not exit 3
        (cluster.endpoints, directory, f"File '{directory}' is a directory"),  # click's check
    ]:
        refused = raftctl(endpoints, "snapshot", "save", str(path))
        assert (refused.returncode, refused.stdout) == (2, ""), refused.stderr
        assert f"Error: Invalid value for 'FILE': {says}" in refused.stderr
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in directory.iterdir()] == ["keep"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp file


@contextmanager
def forced(cluster: LocalCluster, i: int) -> Iterator[subprocess.Popen[bytes]]:
    """Node ``i`` run by hand with ``--force-new-cluster`` (LocalCluster starts nodes without
    it); stopped, by its PID, when the block ends."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    with open(cluster.log_paths[i], "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raftd", "start", "--config", str(cluster.config_paths[i]),
             "--force-new-cluster"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=cluster.base_dir, env=env,
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(DEADLINE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def stop_others(cluster: LocalCluster, keep: int) -> None:
    for i in range(len(cluster)):
        if i != keep:
            cluster.kill(i)  # SIGKILL: gone for good


def test_force_new_cluster_on_the_survivor_keeps_committed_data(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, SMALL_SNAPSHOTS)
    cluster.start_all()
    wait_for_leader(cluster)
    items = {f"k{i:04d}": i for i in range(300)}
    write_all(cluster.endpoints, items, concurrency=4)  # many entries: snapshots and a tail
    expected_hash = agreed_state_hash(cluster)  # the survivor applied everything too
    survivor = (wait_for_leader(cluster) + 1) % 3  # a follower, as far as can be known
    stop_others(cluster, survivor)
    cluster.kill(survivor)
    me = cluster.endpoints[survivor]
    assert diagnostic(me) is None

    with forced(cluster, survivor) as proc:
        diag = wait_until(lambda: sole_leader(me) or proc.poll(), "the survivor to lead alone")
        assert isinstance(diag, dict), f"raftd exited with status {diag}"
        assert diag["stateHash"] == expected_hash
        assert diag["volatile"]["learners"] == []
        assert read_all([me], items) == items
        with Client([me], timeout=DEADLINE) as client:
            client.set("after", "recovery")
    log = cluster.log_paths[survivor].read_text(errors="replace")
    assert "FORCE-NEW-CLUSTER" in log

    # The one-member configuration is durable: a plain restart leads alone again.
    cluster.start(survivor)
    wait_until(lambda: sole_leader(me), "the survivor to lead alone after a restart")
    assert read_all([me], [*items, "after"]) == {**items, "after": "recovery"}

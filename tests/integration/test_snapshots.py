"""Snapshots, compaction, InstallSnapshot and large values on real nodes.

Small snapshot thresholds (``snapshot_every``, ``snapshot_min_log_bytes = 0``, a short
trailing window) make the nodes snapshot and compact every few hundred entries, so a follower
stopped while thousands of entries are written can only catch up from a snapshot.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from raftctl import Client
from raftd.storage.wal import DEFAULT_SEGMENT_BYTES, SPARE_NAME
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import (
    DEADLINE,
    diag_of,
    diagnostic,
    read_all,
    wait_caught_up,
    wait_for_leader,
    wait_until,
    write_all,
)

SMALL_SNAPSHOTS = {
    "snapshot_every": 200,
    "snapshot_min_log_bytes": 0,
    "snapshot_trailing_entries": 20,
}
MIB = 1 << 20


def test_stopped_follower_catches_up_by_install_snapshot(make_cluster: ClusterFactory) -> None:
    # fsync off: this is about catching up, and thousands of one-write entries are quicker.
    cluster = make_cluster(3, {**SMALL_SNAPSHOTS, "fsync": False})
    cluster.start_all()
    leader = wait_for_leader(cluster)
    follower = (leader + 1) % 3
    write_all(cluster.endpoints, {f"before{i}": i for i in range(100)})
    wait_caught_up(cluster, follower, leader)
    behind = diag_of(cluster, follower)["log"]["lastLogIndex"]
    cluster.kill(follower)

    # 3,000 entries: writes two at a time, so most entries carry a single write.
    written = 0
    while diag_of(cluster, leader)["log"]["lastLogIndex"] < behind + 3000:
        write_all(cluster.endpoints, {f"k{written + i:05d}": written + i for i in range(500)},
                  concurrency=2)
        written += 500
    lead = diag_of(cluster, leader)
    assert lead["snapshot"]["index"] > behind
    assert lead["log"]["firstIndex"] > behind + 1, "the leader still holds the missing entries"

    # Resolved again (leadership may have moved under load), so that the commit index the
    # follower must reach, and the hash it must match, are the leader's.
    leader = wait_for_leader(cluster)
    cluster.start(follower)
    caught = wait_caught_up(cluster, follower, leader)
    log = cluster.log_paths[follower].read_text(errors="replace")
    assert re.search(r"installed snapshot at index \d+", log), "no InstallSnapshot in its log"
    assert caught["snapshot"]["index"] > behind
    assert caught["stateHash"] == diag_of(cluster, leader)["stateHash"]
    keys = [f"k{i:05d}" for i in range(0, written, 97)]
    assert read_all([cluster.endpoints[follower]], keys, consistency="stale") == {
        k: int(k[1:]) for k in keys
    }


@pytest.mark.parametrize("datagram", [None, 1400], ids=["loopback-datagrams", "1400-byte"])
def test_one_mib_value(make_cluster: ClusterFactory, datagram: int | None) -> None:
    """A 1 MiB value (the default max_entry_bytes bounds the value alone) goes to every
    follower, in 1,400-byte fragments in the second case."""
    raft: dict[str, int] = {}
    if datagram is not None:
        raft["max_datagram_bytes"] = datagram
    cluster = make_cluster(3, raft)
    cluster.start_all()
    leader = wait_for_leader(cluster)
    value = os.urandom(MIB)
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("big", value)
        assert client.get("big") == value
    for i in range(3):
        wait_caught_up(cluster, i, leader)
        assert read_all([cluster.endpoints[i]], ["big"], consistency="stale") == {"big": value}


def wal_files(data_dir: Path) -> list[Path]:
    return sorted(data_dir.glob("*.wal"))


def test_restart_after_compaction_keeps_data_and_bounds_the_wal(
    make_cluster: ClusterFactory,
) -> None:
    """More than a WAL segment of values is written to one node: compaction must drop whole
    segments, and a restart (newest snapshot + WAL tail) must find every key."""
    cluster = make_cluster(1, {**SMALL_SNAPSHOTS, "snapshot_every": 50,
                               "snapshot_trailing_entries": 10})
    cluster.start_all()
    wait_for_leader(cluster)
    data_dir = cluster.base_dir / "data" / "n1"
    chunk = 512 << 10
    rounds = (DEFAULT_SEGMENT_BYTES + 32 * MIB) // chunk  # 96 MiB: one segment and a half
    small = {f"s{i:04d}": i for i in range(500)}
    write_all(cluster.endpoints, small)
    big_keys = [f"big{i}" for i in range(8)]
    last: dict[str, bytes] = {}
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        for n in range(rounds):
            key = big_keys[n % len(big_keys)]
            last[key] = os.urandom(16) * (chunk // 16)
            client.set(key, last[key])
    # Snapshots are written in the background: the first segment (names start with their
    # sequence number) goes once one lands far enough into the second.
    wait_until(lambda: not wal_files(data_dir)[0].name.startswith("0000000000000000-"),
               "compaction to drop the first WAL segment")
    before = diag_of(cluster, 0)
    written = rounds * chunk
    wal = sum(p.stat().st_size for p in wal_files(data_dir))
    # Segments are preallocated, and the next one waits as a spare: count it too.
    disk = wal + sum(p.stat().st_size for p in data_dir.glob(SPARE_NAME))
    print(f"WAL after compaction: {wal / MIB:.1f} MiB in {len(wal_files(data_dir))} segments "
          f"({disk / MIB:.1f} MiB with the spare) of {written / MIB:.0f} MiB written; "
          f"snapshot {before['snapshot']['bytes']} bytes")
    assert wal <= DEFAULT_SEGMENT_BYTES + 2 * MIB, f"{wal} WAL bytes"
    assert disk <= 2 * DEFAULT_SEGMENT_BYTES + 2 * MIB, f"{disk} WAL bytes with the spare"

    cluster.stop_all()
    cluster.start_all()
    wait_for_leader(cluster)

    def applied_all() -> bool:
        diag = diagnostic(cluster.endpoints[0], timeout=5.0)
        return diag is not None and diag["log"]["appliedIndex"] >= before["log"]["appliedIndex"]

    wait_until(applied_all, "the restarted node to apply its log")
    after = diag_of(cluster, 0)
    assert after["stateHash"] == before["stateHash"]
    assert read_all(cluster.endpoints, small) == small
    assert read_all(cluster.endpoints, last) == last

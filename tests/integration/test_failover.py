"""Leader failover on real processes: writes continue, and a restarted leader catches up."""

from __future__ import annotations

from raftctl.localcluster import LocalCluster
from tests.integration.helpers import (
    diagnostic,
    missing_or_wrong,
    read_all,
    wait_caught_up,
    wait_for_leader,
    write_all,
)


def test_writes_survive_leader_kill_and_old_leader_catches_up(cluster3: LocalCluster) -> None:
    """1000 writes, SIGKILL the leader, 200 more under a new leader; the restarted old leader
    applies up to the new leader's commit index and serves every key from its own state."""
    cluster = cluster3
    before = {f"key{i:04d}": f"value-{i}" for i in range(1000)}
    write_all(cluster.endpoints, before)

    old = wait_for_leader(cluster)
    cluster.kill(old)
    others = [i for i in range(len(cluster)) if i != old]
    after = {f"key{i:04d}": f"value-{i}" for i in range(1000, 1200)}
    write_all(cluster.endpoints, after)  # the client skips the dead node
    new = wait_for_leader(cluster, others)
    assert new != old

    cluster.start(old)
    diag = wait_caught_up(cluster, old, new)
    assert diag["status"] == "follower"
    lead = diagnostic(cluster.endpoints[new])
    assert lead is not None and lead["status"] == "leader"

    expected = before | after
    stale = read_all([cluster.endpoints[old]], expected, consistency="stale")
    assert missing_or_wrong(expected, stale) == {}

"""Elections on a 5-node cluster: one leader at start, and a new one after each leader kill."""

from __future__ import annotations

import time

from raftctl import Client
from raftctl.localcluster import LocalCluster
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import DEADLINE, diagnostics, wait_for_leader

KILLS = 5


def assert_one_leader_per_term(cluster: LocalCluster) -> None:
    """No two answering nodes claim leadership of the same term (Election Safety)."""
    claims: dict[int, list[str]] = {}
    for i, diag in diagnostics(cluster).items():
        if diag["status"] == "leader":
            claims.setdefault(diag["persist"]["currentTerm"], []).append(cluster.endpoints[i])
    assert all(len(leaders) == 1 for leaders in claims.values()), claims


def test_five_nodes_elect_one_leader_and_reelect_after_each_kill(
    make_cluster: ClusterFactory,
) -> None:
    """Five blank nodes started back to back elect exactly one leader; then, KILLS times, the
    leader is SIGKILLed and the others elect a new one that commits a write (regression for
    the livelock in which elections took ~19 s: all KILLS re-elections share one deadline)."""
    cluster = make_cluster(5)
    cluster.start_all()
    leader = wait_for_leader(cluster)
    assert_one_leader_per_term(cluster)

    # One generous deadline for all the re-elections together: a livelock of many seconds per
    # election exhausts it, a healthy cluster needs a small fraction of it. Only the elections
    # draw on it: not the writes, nor the restarted nodes' start-up.
    budget = DEADLINE
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        for kill in range(KILLS):
            cluster.kill(leader)
            alive = [i for i in range(len(cluster)) if i != leader]
            started = time.monotonic()
            new = wait_for_leader(cluster, alive, timeout=budget)
            budget -= time.monotonic() - started
            assert new != leader
            assert_one_leader_per_term(cluster)
            client.set(f"after-kill-{kill}", kill)
            # Whoever leads by now (it may have moved again since ``new``): a live member.
            assert client.leader in [cluster.endpoints[i] for i in alive]
            cluster.start(leader)  # keep five members, so the next kill leaves a quorum
            # The next kill is of the leader of the moment, once the restarted node answers too.
            leader = wait_for_leader(cluster)
        assert [client.get(f"after-kill-{k}") for k in range(KILLS)] == list(range(KILLS))

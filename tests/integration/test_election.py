"""Elections on a 5-node cluster: one leader at start, and a new one after each leader kill."""

from __future__ import annotations

import time

from raftctl import Client
from raftctl.localcluster import LocalCluster
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import (
    DEADLINE,
    Response,
    diagnostics,
    leader_diagnostic,
    wait_for_leader,
    wait_until,
)

KILLS = 5


def assert_one_leader_per_term(cluster: LocalCluster) -> None:
    """No two answering nodes claim leadership of the same term (Election Safety)."""
    claims: dict[int, list[str]] = {}
    for i, diag in diagnostics(cluster).items():
        if diag["status"] == "leader":
            claims.setdefault(diag["persist"]["currentTerm"], []).append(cluster.endpoints[i])
    assert all(len(leaders) == 1 for leaders in claims.values()), claims


def term_of(found: tuple[int, Response]) -> int:
    term: int = found[1]["persist"]["currentTerm"]
    return term


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

            def set_in_one_term(kill: int = kill) -> tuple[str, str | None] | None:
                """(the leader, the client's cached leader) of one write done while the same
                leader kept the same term (it may have moved again since ``new``; if it moves
                during the write, the write is simply done again: it sets the same value)."""
                before = leader_diagnostic(cluster)
                if before is None:
                    return None
                client.set(f"after-kill-{kill}", kill)
                after = leader_diagnostic(cluster)
                if after is None or (after[0], term_of(after)) != (before[0], term_of(before)):
                    return None
                return cluster.endpoints[after[0]], client.leader

            lead, cached = wait_until(set_in_one_term, f"write {kill} within one term")
            assert cached == lead and lead in [cluster.endpoints[i] for i in alive]
            cluster.start(leader)  # keep five members, so the next kill leaves a quorum
            # The next kill is of the leader of the moment, once the restarted node answers too.
            leader = wait_for_leader(cluster)
        assert [client.get(f"after-kill-{k}") for k in range(KILLS)] == list(range(KILLS))

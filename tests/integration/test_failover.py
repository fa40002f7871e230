"""Leader failover on real processes: writes continue, a restarted leader catches up, and a
leader stopped by SIGTERM hands leadership over instead of leaving the others to time out."""

from __future__ import annotations

import os
import signal
from functools import partial

from raftctl import Client
from raftctl.bench.election import parse_role_changes
from raftctl.localcluster import LocalCluster
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import (
    DEADLINE,
    STEADY,
    diagnostic,
    leader_diagnostic,
    log_offsets,
    log_since,
    missing_or_wrong,
    read_all,
    wait_caught_up,
    wait_for_leader,
    wait_until,
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
    # new's commit index covers every write above, whether or not new still leads: on a
    # loaded machine leadership may move again, even to the restarted node.
    wait_caught_up(cluster, old, new)
    wait_for_leader(cluster)  # the old leader rejoined: it acknowledges the current leader

    expected = before | after
    stale = read_all([cluster.endpoints[old]], expected, consistency="stale")
    assert missing_or_wrong(expected, stale) == {}


def test_sigterm_on_leader_transfers_leadership_before_exiting(
    make_cluster: ClusterFactory,
) -> None:
    """SIGTERM the leader of an idle cluster: it names the most caught-up voter, sends it
    TimeoutNow and exits with status 0; that voter starts a transfer campaign at once, and the
    survivors elect a leader.

    The proof of a transfer rather than an election timeout is the mechanism, not a speed:
    with PreVote on (the default) a follower whose election timer fires first becomes
    ``pre_candidate``, while TimeoutNow makes the target campaign at once
    (``follower -> candidate``) in exactly the next term. Whether the old leader saw the new
    one before its own deadline ("handed over" or "did not complete") depends on the load of
    the machine, so either outcome line is accepted; the target's campaign must be the
    transfer either way.

    A long election timeout: no election may come first (the test reads the target's first
    role change), nor move leadership between the check below and the SIGTERM."""
    cluster = make_cluster(3, STEADY)
    cluster.start_all()
    acked = {f"key{i:03d}": f"value-{i}" for i in range(300)}
    write_all(cluster.endpoints, acked)
    ask = partial(diagnostic, timeout=5.0)

    def idle_leader() -> tuple[int, int] | None:
        """(leader, its term) once both others applied all it committed, checked just
        before the SIGTERM: the target needs no entries before TimeoutNow."""
        leader = wait_for_leader(cluster)
        for i in range(len(cluster)):
            if i != leader:
                wait_caught_up(cluster, i, leader)
        found = leader_diagnostic(cluster, leader, ask)
        return None if found is None else (leader, found[1]["persist"]["currentTerm"])

    old, old_term = wait_until(idle_leader, "a leader that others caught up with")
    others = [i for i in range(len(cluster)) if i != old]
    offsets = log_offsets(cluster)

    pid = cluster.pid(old)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    handing = wait_until(
        lambda: next((line for line in log_since(cluster, old, offsets[old]).splitlines()
                      if "handing leadership to " in line), None),
        "the old leader to log the start of its handover")
    target = handing.split("handing leadership to ", 1)[1].split()[0]
    assert target in [cluster.endpoints[i] for i in others], handing

    # A write issued during the handover is refused (transferring / shutting_down, both
    # retryable) or redirected, and the client lands it at the new leader.
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("after-sigterm", "written")
    assert cluster.wait(old, DEADLINE) == 0

    # The target's own log is the proof (its role changes since the SIGTERM), not who leads
    # by now: on a loaded machine an election may have followed the transfer.
    new = cluster.endpoints.index(target)
    tail = log_since(cluster, old, offsets[old])
    assert ("leadership handed over" in tail
            or "leadership transfer did not complete" in tail), tail
    assert "second stop signal" not in tail
    changes = parse_role_changes(log_since(cluster, new, offsets[new]))
    # Its first change is the transfer campaign.
    assert changes and (changes[0].old, changes[0].new, changes[0].term) == (
        "follower", "candidate", old_term + 1), changes
    # That campaign may lose its term (votes late on a loaded machine), and then nothing makes
    # the target lead later. What must follow either way: the survivors agree on a leader of a
    # term past the old leader's.
    lead, diag = wait_until(lambda: leader_diagnostic(cluster, ask=ask),
                            "the survivors to agree on a leader")
    assert lead in others and diag["persist"]["currentTerm"] > old_term, (lead, diag["persist"])

    expected = acked | {"after-sigterm": "written"}
    survivors = [cluster.endpoints[i] for i in others]
    assert missing_or_wrong(expected, read_all(survivors, expected)) == {}

"""A node restarted with an empty data dir under its old address (DESIGN.md, core/bootstrap.py).

It must not bootstrap again nor vote before it caught up: its vote could otherwise elect a
node whose log lacks committed entries. A frozen (SIGSTOP) leader keeps the catching-up phase
open long enough to observe, and lets the other follower try to get elected meanwhile.
"""

from __future__ import annotations

import shutil
import signal

from raftctl.localcluster import LocalCluster
from tests.integration.helpers import (
    DEADLINE,
    Response,
    diagnostic,
    freeze,
    holds_throughout,
    missing_or_wrong,
    read_all,
    thaw,
    wait_caught_up,
    wait_for_leader,
    wait_until,
    write_all,
)

OBSERVE_SECONDS = 3.0
"""How long "no leader is elected" is watched: at least ten maximal election timeouts."""


def wipe(cluster: LocalCluster, node: int) -> None:
    """Stop ``node`` (SIGTERM) and delete its data dir (LocalCluster keeps it in data/n<K>)."""
    cluster.kill(node, signal.SIGTERM)
    cluster.wait(node, DEADLINE)
    shutil.rmtree(cluster.base_dir / "data" / f"n{node + 1}")


def answering(cluster: LocalCluster, node: int) -> Response | None:
    """The node's diagnostic; a loaded machine gets seconds to answer before it counts as gone."""
    return diagnostic(cluster.endpoints[node], timeout=5.0)


def wait_campaigning(cluster: LocalCluster, node: int) -> None:
    """Wait until ``node`` has tried to get elected (it is a (pre-)candidate)."""
    wait_until(
        lambda: (d := answering(cluster, node)) is not None
        and d["status"] in ("pre_candidate", "candidate"),
        f"node {node} to campaign",
    )


def no_leader_and_still_catching_up(cluster: LocalCluster, wiped: int, other: int) -> str | None:
    """What is wrong, if anything, while the wiped node must not have voted."""
    wiped_diag, other_diag = answering(cluster, wiped), answering(cluster, other)
    if wiped_diag is None or other_diag is None:
        return f"a node stopped answering: {wiped_diag=} {other_diag=}"
    if wiped_diag["catchingUp"] is not True:
        return f"the wiped node left catching-up without a leader: {wiped_diag}"
    if wiped_diag["persist"]["votedFor"] is not None:
        return f"the wiped node voted before it caught up: {wiped_diag['persist']}"
    if other_diag["status"] == "leader":
        return f"node {other} was elected with the wiped node's help: {other_diag}"
    return None


def test_wiped_follower_does_not_vote_until_caught_up(cluster3: LocalCluster) -> None:
    """A wiped follower restarts catching up (votedFor null), refuses to elect the other
    follower while the leader is frozen, then catches up from the leader, leaves catching-up
    and serves every key from its own state."""
    cluster = cluster3
    data = {f"key{i:03d}": i for i in range(300)}
    write_all(cluster.endpoints, data)
    leader = wait_for_leader(cluster)
    wiped, other = [i for i in range(len(cluster)) if i != leader]

    wipe(cluster, wiped)
    freeze(cluster, leader)
    cluster.start(wiped)
    first = wait_until(
        lambda: (d := answering(cluster, wiped)) is not None
        and (d["catchingUp"] or d["probing"]) and d,
        "the wiped node to report catching up or probing",
    )
    assert first["persist"]["votedFor"] in (None, cluster.endpoints[wiped])
    assert first["status"] == "follower"
    wait_until(lambda: (d := answering(cluster, wiped)) is not None and d["catchingUp"],
               "the wiped node to learn the cluster has data (catching up)")
    wait_campaigning(cluster, other)
    holds_throughout(lambda: no_leader_and_still_catching_up(cluster, wiped, other),
                     OBSERVE_SECONDS)

    thaw(cluster, leader)
    leader = wait_for_leader(cluster)
    wait_until(lambda: (d := answering(cluster, wiped)) is not None and not d["catchingUp"],
               "the wiped node to finish catching up")
    caught_up = wait_caught_up(cluster, wiped, leader)
    assert caught_up["persist"]["votedFor"] in (None, cluster.endpoints[leader])
    stale = read_all([cluster.endpoints[wiped]], data, consistency="stale")
    assert missing_or_wrong(data, stale) == {}


def test_no_leader_from_a_log_lacking_committed_entries(cluster3: LocalCluster) -> None:
    """Follower B is down while leader L and follower A commit writes; A is wiped and, while
    it is catching up, L is killed. B alone lacks committed entries, and A's vote is the only
    one it could get: no leader may be elected. Once L returns it leads again, and every
    committed write is present everywhere."""
    cluster = cluster3
    first = {f"first{i:03d}": i for i in range(100)}
    write_all(cluster.endpoints, first)
    leader = wait_for_leader(cluster)
    a, b = [i for i in range(len(cluster)) if i != leader]

    # Down, not frozen: a frozen node would find the missed appends in its socket buffer.
    cluster.kill(b)
    second = {f"second{i:03d}": i for i in range(200)}
    write_all([cluster.endpoints[leader], cluster.endpoints[a]], second)
    lead_diag = answering(cluster, leader)
    assert lead_diag is not None
    committed = lead_diag["log"]["commitIndex"]

    wipe(cluster, a)
    freeze(cluster, leader)
    cluster.start(a)  # its peers are frozen or down: it can only probe
    wait_until(lambda: (d := answering(cluster, a)) is not None and d["probing"],
               "the wiped node to probe")
    cluster.start(b)  # B answers the probe with a non-empty log: A must catch up
    wait_until(lambda: (d := answering(cluster, a)) is not None and d["catchingUp"],
               "the wiped node to catch up")
    cluster.kill(leader)  # SIGKILL, while A is catching up

    b_diag = answering(cluster, b)
    assert b_diag is not None and b_diag["log"]["lastLogIndex"] < committed, \
        "the scenario needs B to lack committed entries"
    wait_campaigning(cluster, b)
    holds_throughout(lambda: no_leader_and_still_catching_up(cluster, a, b), OBSERVE_SECONDS)

    cluster.start(leader)
    assert wait_for_leader(cluster) == leader, "only the old leader holds every committed entry"
    everything = first | second
    assert missing_or_wrong(everything, read_all(cluster.endpoints, everything)) == {}
    for node in (a, b):
        wait_caught_up(cluster, node, leader)
        stale = read_all([cluster.endpoints[node]], everything, consistency="stale")
        assert missing_or_wrong(everything, stale) == {}, f"node {node} misses data"
    a_diag = answering(cluster, a)
    assert a_diag is not None and a_diag["catchingUp"] is False

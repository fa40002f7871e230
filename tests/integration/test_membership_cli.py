"""raftctl add-node, promote, remove-node and transfer-leader against real nodes.

One 3-node cluster grows with blank spare nodes (configs outside the initial members), then
shrinks, with the membership read back through ``raftctl -o json status`` each time.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from raftctl.localcluster import LocalCluster, free_ports
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import led_since, log_offsets, wait_until
from tests.integration.test_cli import raftctl


def members(endpoints: Sequence[str]) -> dict[str, dict[str, Any]]:
    """address -> status row, for the members the cluster reports (the leader's view)."""
    done = raftctl(endpoints, "--timeout", "2", "-o", "json", "status")
    if done.returncode != 0:
        return {}
    return {row["address"]: row for row in json.loads(done.stdout)}


def leader_of(endpoints: Sequence[str]) -> str | None:
    """The leader every reachable member agrees on (a blank node never started is not asked)."""
    rows = members(endpoints)
    leaders = [a for a, r in rows.items() if r["role"] == "leader"]
    if len(leaders) == 1 and all(r["leader"] == leaders[0]
                                 for r in rows.values() if r["reachable"]):
        return leaders[0]
    return None


def test_grow_transfer_and_shrink(make_cluster: ClusterFactory) -> None:
    cluster: LocalCluster = make_cluster(3)
    cluster.start_all()
    wait_until(lambda: leader_of(cluster.endpoints), "a first leader")
    a, b = cluster.add_spare(), cluster.add_spare()
    spare_a, spare_b = cluster.endpoints[a], cluster.endpoints[b]
    cluster.start(a)  # blank: it waits to be added (b starts later, when its turn comes)
    eps = cluster.endpoints

    # A learner receives the log but does not vote, until promoted.
    added = raftctl(eps, "add-node", spare_a, "--learner")
    assert (added.returncode, added.stdout) == (0, "OK\n"), added.stderr
    wait_until(lambda: members(eps).get(spare_a, {}).get("role") == "learner", "a learner")
    assert json.loads(raftctl(eps, "-o", "json", "promote", spare_a).stdout) == {
        "action": "promote", "address": spare_a,
    }
    wait_until(lambda: members(eps).get(spare_a, {}).get("role") == "follower", "a voter")

    # Refusals: exit status 1 with the cluster's reason.
    again = raftctl(eps, "add-node", spare_a)
    assert (again.returncode, again.stdout) == (1, "")
    assert f"bad_request: {spare_a} is already a member" in again.stderr
    alias = spare_a.replace("127.0.0.1", "localhost")  # the same node under another name
    aliased = raftctl(eps, "add-node", alias)
    assert (aliased.returncode, aliased.stdout) == (1, "")
    assert f"bad_request: {alias} is the member {spare_a} under another name" in aliased.stderr
    unknown = raftctl(eps, "add-node", "nosuchhost.invalid:7001")  # RFC 2606: never resolves
    assert (unknown.returncode, unknown.stdout) == (1, "")
    assert "bad_request: cannot resolve nosuchhost.invalid:7001" in unknown.stderr
    assert raftctl(eps, "promote", spare_a).returncode == 1  # not a learner any more
    assert raftctl(eps, "remove-node", "127.0.0.1:9").returncode == 1  # not a member

    # Leadership moves where asked, without an election timeout to wait for.
    offsets = log_offsets(cluster)
    moved = raftctl(eps, "transfer-leader", spare_a)
    assert (moved.returncode, moved.stdout) == (0, f"{spare_a}\n"), moved.stderr
    wait_until(lambda: led_since(cluster, a, offsets[a]), "the spare to take over")
    assert raftctl(eps, "transfer-leader", spare_a).stdout == f"{spare_a}\n"  # already there

    # The leader removes itself: it hands over first, then leaves the configuration.
    assert raftctl(eps, "remove-node", spare_a).returncode == 0
    live = [e for e in eps if e != spare_a]
    wait_until(
        lambda: spare_a not in members(live) and leader_of(live), "a leader without the spare"
    )
    cluster.kill(a)

    # Without --learner a node becomes a voter by itself once caught up.
    cluster.start(b)
    assert raftctl(eps, "add-node", spare_b).returncode == 0
    wait_until(lambda: members(live).get(spare_b, {}).get("role") == "follower", "auto-promotion")
    offsets = log_offsets(cluster)
    chosen = raftctl(live, "-o", "json", "transfer-leader")
    assert chosen.returncode == 0, chosen.stderr
    new = json.loads(chosen.stdout)["leader"]
    assert new in live
    # Leadership moved: the chosen node became leader since the command (a leader naming
    # itself would not have), whoever leads by the time we look.
    chosen_node = cluster.endpoints.index(new)
    wait_until(lambda: led_since(cluster, chosen_node, offsets[chosen_node]),
               "the chosen node to take over")
    wait_until(lambda: sorted(members(live)) == sorted(live), "the members without the spare")


def test_promoting_a_learner_that_never_caught_up_says_why(make_cluster: ClusterFactory) -> None:
    """The cluster answers all along (retryable: not caught up yet), so when the retries run
    out that answer is the error, exit status 1, not a timeout (3: unreachable)."""
    cluster: LocalCluster = make_cluster(3)
    cluster.start_all()
    wait_until(lambda: leader_of(cluster.endpoints), "a first leader")
    nobody = f"127.0.0.1:{free_ports(1)[0]}"
    assert raftctl(cluster.endpoints, "add-node", nobody, "--learner").returncode == 0
    promoted = raftctl(cluster.endpoints, "--timeout", "2", "promote", nobody)
    assert (promoted.returncode, promoted.stdout) == (1, ""), promoted.stderr
    assert promoted.stderr.startswith(
        "Error: the cluster answered with an error: conf_change_in_progress: "), promoted.stderr
    assert promoted.stderr.endswith(" (still so after 2s of retries)\n"), promoted.stderr

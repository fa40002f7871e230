"""Membership changes: learner first, one change at a time, removal of the leader."""

from __future__ import annotations

import pytest

from raftd.core import (
    ConfChange,
    ConfChangeInProgress,
    ConfChangeType,
    InvalidConfChange,
    StateRole,
)
from raftd.core.messages import MsgApp
from tests.unit.core.harness import Network


def change(kind: ConfChangeType, node: str, auto: bool = True) -> ConfChange:
    return ConfChange(type=kind, node_id=node, auto_promote=auto)


def cluster() -> Network:
    net = Network(3)
    net.campaign("n1")
    for i in range(10):
        net.propose("n1", b"v%d" % i)
    return net


def test_added_node_is_a_learner_until_caught_up_then_promoted() -> None:
    net = cluster()
    net.add_node("n4")
    net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n4"))
    net.stabilize()
    assert net["n2"].raft.learners == ("n4",)
    assert "n4" not in net["n1"].raft.voters
    net.tick_all(10)  # heartbeats: n4 answers, is caught up, gets promoted
    for n in net.nodes.values():
        assert n.raft.voters == ("n1", "n2", "n3", "n4"), n.id
        assert n.raft.learners == ()
    assert [e.data for e in net["n4"].applied if e.data and e.type == 0][:10] == \
        [b"v%d" % i for i in range(10)]


def test_pinned_learner_stays_a_learner_and_never_votes() -> None:
    net = cluster()
    net.add_node("n4")
    net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n4", auto=False))
    net.tick_all(20)
    assert net["n1"].raft.learners == ("n4",)
    assert not net["n4"].raft.promotable()
    assert net["n4"].raft.log.last_index() == net["n1"].raft.log.last_index()


def test_only_one_change_in_flight() -> None:
    net = cluster()
    net.add_node("n4")
    net.add_node("n5")
    net.drop_types.add(MsgApp)  # keep the first change uncommitted
    net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n4"))
    with pytest.raises(ConfChangeInProgress):
        net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n5"))
    net.drop_types.clear()
    net.tick("n1", 4)
    net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n5", auto=False))


def test_new_leader_proposes_changes_only_after_committing_in_its_term() -> None:
    net = Network(3)
    net.drop_types.add(MsgApp)
    net.campaign("n1")
    with pytest.raises(ConfChangeInProgress):
        net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n3"))


def test_invalid_changes_are_refused() -> None:
    net = cluster()
    with pytest.raises(InvalidConfChange):
        net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n2"))
    with pytest.raises(InvalidConfChange):
        net["n1"].node.propose_conf_change(change(ConfChangeType.PROMOTE, "n9"))
    with pytest.raises(InvalidConfChange):
        net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n9"))


def test_removing_the_leader_hands_leadership_over() -> None:
    net = cluster()
    net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n1"))
    net.stabilize()
    net.tick("n1", 3)  # its next heartbeats meet the new leader's term: it steps down
    assert net["n1"].raft.role is StateRole.FOLLOWER
    assert "n1" not in net["n2"].raft.voters
    leaders = [i for i in ("n2", "n3") if net[i].raft.role is StateRole.LEADER]
    assert len(leaders) == 1
    net.propose(leaders[0], b"after")
    assert net["n2"].applied[-1].data == b"after"


def test_removed_leader_of_two_voters_hands_over_and_the_survivor_leads_alone() -> None:
    net = Network(2)
    net.campaign("n1")
    net.propose("n1", b"x")
    net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n1"))
    net.stabilize()
    net.tick("n1", 3)
    net.down.add("n1")  # the operator stops the removed node
    for _ in range(60):
        net.tick_all()
    assert net.leaders() == ["n2"]
    assert net["n2"].raft.voters == ("n2",)
    net.propose("n2", b"alone")
    assert net["n2"].applied[-1].data == b"alone"


def test_removed_follower_shrinks_the_quorum() -> None:
    net = cluster()
    net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n3"))
    net.stabilize()
    net.down.add("n3")
    net.down.add("n2")
    # A voter set of {n1, n2}: n1 alone can no longer commit, which shows n3 is gone from it.
    index = net.propose("n1", b"x")
    assert net["n1"].raft.log.commit_index < index
    net.down.discard("n2")
    net.tick("n1", 4)
    assert net["n1"].raft.log.commit_index >= index

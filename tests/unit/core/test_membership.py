"""Membership changes: learner first, one change at a time, removal of the leader."""

from __future__ import annotations

from dataclasses import replace

import pytest

from raftd.core import (
    ConfChange,
    ConfChangeInProgress,
    ConfChangeType,
    InvalidConfChange,
    NO_NODE,
    Message,
    StateRole,
    TransferInProgress,
)
from raftd.core.messages import (
    MsgApp,
    MsgAppResp,
    MsgCommitHint,
    MsgHeartbeatResp,
    MsgPreVote,
    MsgPreVoteResp,
    MsgProbe,
    MsgTimeoutNow,
    MsgVoteResp,
)
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
    net.tick("n1")  # the commit news goes with the next tick
    assert net["n2"].raft.learners == ("n4",)
    assert "n4" not in net["n1"].raft.voters
    net.tick_all(10)  # heartbeats: n4 answers, is caught up, gets promoted
    for n in net.nodes.values():
        assert n.raft.voters == ("n1", "n2", "n3", "n4"), n.id
        assert n.raft.learners == ()
    assert [e.data for e in net["n4"].applied if e.data and e.type == 0][:10] == \
        [b"v%d" % i for i in range(10)]


def test_pinned_learner_stays_a_learner_and_never_campaigns() -> None:
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


def test_an_automatic_promotion_counts_as_the_change_in_flight() -> None:
    net = cluster()
    net.add_node("n4")
    net.add_node("n5")
    net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n4"))
    net.stabilize()
    net.tick("n1")  # commit news: every member applies the learner
    for _ in range(10):  # the learner's probe answered, it may vote once promoted
        if not net["n4"].raft.catching_up:
            break
        net.tick_all()
    assert not net["n4"].raft.catching_up
    leader = net["n1"].raft
    before = leader.log.last_index()
    net.drop_types.add(MsgApp)  # the promotion, once proposed, stays uncommitted
    for _ in range(3 * leader.cfg.heartbeat_ticks):
        net.tick("n1")
        if leader.log.last_index() > before:
            break
    (entry,) = leader.log.slice(before + 1, leader.log.last_index() + 1, 1 << 20)
    assert ConfChange.decode(entry.data) == change(ConfChangeType.PROMOTE, "n4")
    with pytest.raises(ConfChangeInProgress):
        net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n5"))
    net.drop_types.clear()
    net.tick("n1", 4)
    assert leader.voters == ("n1", "n2", "n3", "n4")
    net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n5"))


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
    assert net["n1"].raft.lead_transferee == NO_NODE  # the others have not applied it yet
    net.tick("n1", 6)  # heartbeats carry the commit, answers the applied index: it hands over
    assert net["n1"].raft.role is StateRole.FOLLOWER
    assert "n1" not in net["n2"].raft.voters
    leaders = [i for i in ("n2", "n3") if net[i].raft.role is StateRole.LEADER]
    assert len(leaders) == 1
    net.propose(leaders[0], b"after")
    net.tick(leaders[0])
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


def test_restart_commits_up_to_the_configuration_it_applied_last() -> None:
    """The commit index is not durable, but an applied configuration entry was committed:
    a restarted node re-applies up to it before it acts under that configuration."""
    net = cluster()
    index = net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n3"))
    net.stabilize()
    net.tick("n1")
    net["n2"].restart()
    raft = net["n2"].raft
    assert raft.log.commit_index >= index > raft.log.applied_index
    raft.election_elapsed = raft.randomized_election_timeout
    net["n2"].node.campaign()
    assert raft.role is StateRole.FOLLOWER  # not before the change is applied again
    net.handle_ready(net["n2"])
    assert raft.log.applied_index >= index
    assert raft.voters == ("n1", "n2")


def test_removed_node_teaches_the_survivor_that_its_removal_committed() -> None:
    """Simulator B7 (seed 231): the leader of two removes itself; the survivor acknowledges
    the entry but never hears that it committed; then both restart. The survivor still counts
    the removed node, which never votes again; only the removed node knows the change
    committed, and it tells the survivor (MsgCommitHint), which then leads alone."""
    net = Network(2)
    net.campaign("n1")
    net.propose("n1", b"x")
    index = net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n1"))
    net.handle_ready(net["n1"])
    while net.queue:  # the entry reaches n2 (and n1's own ack reaches n1)
        m = net.queue.popleft()
        net[m.dst].node.step(m)
    net.handle_ready(net["n2"])  # n2's ack is queued; then n2 hears nothing more
    net.cut.add(("n1", "n2"))
    net.stabilize()
    assert net["n1"].raft.voters == ("n2",)
    assert net["n2"].raft.log.commit_index < index
    net["n1"].restart()
    net["n2"].restart()
    net.heal()
    net.tick_all(100)
    assert net.leaders() == ["n2"]
    assert net["n2"].raft.voters == ("n2",)
    net.propose("n2", b"alone")
    assert net["n2"].applied[-1].data == b"alone"


def test_a_hint_commits_only_what_matches_our_log() -> None:
    """MsgCommitHint carries the term of the committed entry: a node whose entry at that index
    has another term (the uncommitted tail of an old leader) must not commit it; nor does a
    node commit on the word of a stranger."""
    net = cluster()
    net.isolate("n1")
    net["n1"].node.propose(b"stale-1")  # n1's tail: never committed
    net["n1"].node.propose(b"stale-2")
    net.stabilize()
    net.tick_all(30)  # n2 or n3 leads in a new term and commits over n1's tail
    leader = net[net.leaders()[-1]].raft
    assert leader.id != "n1"
    net.propose(leader.id, b"new")
    stale = net["n1"].raft
    index = stale.log.commit_index + 2
    assert leader.log.commit_index >= index and stale.log.last_index() >= index
    assert leader.log.term(index) != stale.log.term(index)
    before = stale.log.commit_index
    hint = MsgCommitHint(term=0, src=leader.id, dst="n1", commit_index=index,
                         commit_term=leader.log.term(index))
    net["n1"].node.step(hint)
    assert stale.log.commit_index == before
    net["n1"].node.step(replace(hint, commit_index=index - 2, src="n9",
                                commit_term=stale.log.term(index - 2)))
    assert stale.log.commit_index == before  # n9 is no member: ignored
    net["n1"].node.step(replace(hint, commit_index=index - 2,
                                commit_term=stale.log.term(index - 2)))
    assert stale.log.commit_index == index - 2  # the entries both logs share


def test_a_node_whose_log_ends_before_the_hint_asks_back() -> None:
    """Simulator seed 1288: a node holds entries up to i but lost its commit index in a
    restart, and the node that knows the commit index knows one past i. The hint cannot be
    checked at its index, so the receiver asks whether i is committed and commits i on the
    answer (only the exchange below is delivered)."""
    net = cluster()
    net.cut.add(("n1", "n2"))
    net["n1"].node.propose(b"one more")  # committed with n3; n2 never gets it
    net.stabilize()
    net["n2"].restart()
    knower, lagging = net["n1"].raft, net["n2"].raft
    last = lagging.log.last_index()
    assert lagging.log.commit_index < last < knower.log.commit_index
    net.heal()

    def exchange(src: str, dst: str) -> None:
        net.handle_ready(net[src])
        for m in [m for m in net.queue if m.src == src and m.dst == dst]:
            net[dst].node.step(m)
        net.queue.clear()

    net["n2"].node.step(MsgCommitHint(
        term=0, src="n1", dst="n2", commit_index=knower.log.commit_index,
        commit_term=knower.log.term(knower.log.commit_index)))
    exchange("n2", "n1")  # n2 asks about its last index
    exchange("n1", "n2")  # n1 vouches for it
    assert lagging.log.commit_index == last


def test_old_incarnation_of_a_re_added_node_cannot_get_it_promoted() -> None:
    """Simulator B9 (seeds 966, 2617): remove n4, wipe it, start it blank and add it again.
    Acks the old n4 sent before it stopped arrive after the re-add; the leader must not take
    the blank node for caught up and promote it (a voter that cannot vote)."""
    net = cluster()
    net.add_node("n4")
    net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n4", auto=False))
    net.tick_all(10)
    old = net["n4"].raft
    assert old.log.last_index() == net["n1"].raft.log.last_index()
    term = net["n1"].raft.current_term
    phantoms = [
        MsgAppResp(term=term, src="n4", dst="n1", index=old.log.last_index()),
        MsgHeartbeatResp(term=term, src="n4", dst="n1", catching_up=False,
                         applied_index=old.log.applied_index),
    ]
    net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n4"))
    net.stabilize()
    net.down.add("n4")  # stopped and wiped; started blank below only once re-added
    net.tick("n1", 4)
    net["n1"].node.propose_conf_change(change(ConfChangeType.ADD_LEARNER, "n4"))
    net.stabilize()
    for m in phantoms:
        net["n1"].node.step(m)
    net.tick("n1", 4)  # heartbeats: the promotion check runs
    assert net["n1"].raft.learners == ("n4",)
    net.add_node("n4")  # the blank incarnation comes up and catches up: now promoted
    net.down.discard("n4")
    net.tick_all(20)
    assert net["n1"].raft.voters == ("n1", "n2", "n3", "n4")
    assert net["n4"].raft.log.last_index() == net["n1"].raft.log.last_index()


def test_transfer_target_learns_that_the_leaders_removal_committed() -> None:
    """Seed 14218: a transfer to n2 is in flight when n2's ack commits the leader's removal.
    The TimeoutNow that ack triggers must carry that commit, so that n2 counts its voters
    without n1 (which no longer votes) and leads alone; and n2's heartbeat answers tell the
    removed leader that it applied the change (when remove-node may be answered)."""
    net = Network(2)
    net.campaign("n1")
    net.propose("n1", b"x")
    net.drop_types.add(MsgApp)
    index = net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n1"))
    net.stabilize()
    net["n1"].node.transfer_leader("n2")  # n2 lacks the entry: no TimeoutNow yet
    net.drop_types.clear()
    sent: list[MsgTimeoutNow] = []
    send = net.send

    def record(m: Message) -> None:
        if isinstance(m, MsgTimeoutNow):
            sent.append(m)
        send(m)

    net.send = record  # type: ignore[method-assign]
    net.tick("n1", 6)  # heartbeats find the entry missing; n2 gets it and acks it
    assert sent and sent[0].leader_commit >= index
    net.down.add("n1")
    for _ in range(60):
        net.tick_all()
    assert net.leaders() == ["n2"] and net["n2"].raft.voters == ("n2",)


def test_a_removed_leader_hands_over_only_once_a_majority_of_the_others_applied_it() -> None:
    """Simulator B11 (seed 40356): a leader that removed itself handed over (and answered)
    once ONE remaining voter applied the removal; that voter lost its disk, and the voter
    left with data, not knowing the removal committed, still counted the removed node."""
    net = Network(3)
    net.campaign("n1")
    net.isolate("n3")
    index = net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n1"))
    net.stabilize()
    net.tick("n1", 12)  # n2 applies the removal and says so; n3 hears nothing
    raft = net["n1"].raft
    assert net["n2"].raft.log.applied_index >= index and not raft.majority_applied(index)
    assert raft.role is StateRole.LEADER and raft.lead_transferee == NO_NODE
    net.heal()
    net.tick("n1", 12)
    assert net["n1"].raft.role is StateRole.FOLLOWER
    assert net["n3"].raft.log.applied_index >= index


def test_a_node_left_out_votes_only_for_a_later_configuration() -> None:
    """A node its own configuration leaves out refuses a candidate whose configuration is as
    old as its own (simulator B8: a stale candidate still counting it) but votes for one whose
    configuration is later (it was added again: seed 19951, where the voter that had to vote
    never saw its own re-adding)."""
    net = cluster()
    index = net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n3"))
    net.stabilize()
    net.tick("n1", 4)
    node = net["n3"]
    assert "n3" not in node.raft.members and node.raft.conf_version() >= index
    net.down.add("n1")
    net.tick("n3", 25)  # no leader heard for an election timeout: no lease
    raft = node.raft
    ask = MsgPreVote(term=raft.current_term + 1, src="n2", dst="n3",
                     last_log_index=raft.log.last_index() + 5, last_log_term=raft.current_term,
                     conf_version=raft.conf_version())
    answers: list[Message] = []
    for version in (raft.conf_version(), raft.conf_version() + 3):
        node.node.step(replace(ask, conf_version=version))
        rd = node.node.ready()
        answers += [m for m in rd.messages if isinstance(m, MsgPreVoteResp)]
        node.node.advance(rd)
    assert [m.reject for m in answers] == [True, False]


def test_a_leader_that_removed_itself_serves_no_read_alone() -> None:
    """Seed 28654: the leader of two removed itself and still leads (handing over); its one
    voter is the other node, which may already lead a later term. A read must wait for that
    voter's ack, not be released as if the leader alone were the quorum."""
    net = Network(2)
    net.campaign("n1")
    net.drop_types.add(MsgTimeoutNow)  # the hand-over does not happen yet
    net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n1"))
    net.stabilize()
    net.tick("n1", 2)
    assert net["n1"].raft.role is StateRole.LEADER and net["n1"].raft.voters == ("n2",)
    net.isolate("n1")
    net["n1"].node.read_index(7)
    net.stabilize()
    assert net["n1"].read_states == []
    net.heal()
    net.tick("n1", 2)  # the heartbeat round reaches n2, which acks it
    assert [context for _, context in net["n1"].read_states] == [7]


def test_a_removal_counts_as_done_once_a_majority_of_the_new_configuration_applied_it() -> None:
    """Seed 36653: remove-node of another node is answered (and the operator stops it) only
    once a majority of the new configuration applied the change, so that configuration can
    elect and commit without the removed node even if the leader then loses its disk."""
    net = Network(3)
    net.campaign("n1")
    index = net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n3"))
    net.stabilize()
    assert net["n1"].raft.voters == ("n1", "n2")
    assert not net["n1"].raft.majority_applied(index)  # n2 learns the commit later
    net.tick("n1", 4)
    assert net["n1"].raft.majority_applied(index)


def test_a_candidate_whose_voters_change_gives_up_its_campaign() -> None:
    """Seed 2446: a pre-candidate learnt from a commit hint that its own removal committed,
    applied it as a candidate, then won the votes: become_leader crashed on a leader outside
    its configuration. A change of voters now ends the campaign; the next one asks the new
    voters (and a removed node never campaigns)."""
    net = cluster()
    raft = net["n3"].raft
    index = raft.log.last_index() + 1
    raft.become_candidate()
    term = raft.current_term
    raft.apply_conf_change(change(ConfChangeType.REMOVE, "n3"), index)
    assert raft.role is StateRole.FOLLOWER and raft.current_term == term
    assert raft.voted_for == "n3"  # the vote of this term stands
    for voter in ("n1", "n2"):
        raft.step(MsgVoteResp(term=term, src=voter, dst="n3", reject=False))
    assert raft.role is StateRole.FOLLOWER
    raft.campaign(pre_vote=True)
    assert raft.role is StateRole.FOLLOWER


def test_a_change_is_refused_as_in_progress_until_a_majority_applied_the_last() -> None:
    """Seed 2303: a retried remove-node heard "not a member" from the leader the moment it
    applied the removal; the operator stopped and wiped the node, and the only other voter,
    which had not learnt the commit, still counted it. "not a member" (or any next change)
    now waits until a majority of the new configuration applied the last change."""
    net = cluster()
    node = net["n1"].node
    node.propose_conf_change(change(ConfChangeType.REMOVE, "n3"))
    net.stabilize()
    assert net["n1"].raft.voters == ("n1", "n2")
    with pytest.raises(ConfChangeInProgress, match="not applied by a majority"):
        node.propose_conf_change(change(ConfChangeType.REMOVE, "n3"))
    net.tick("n1", 4)  # the heartbeats carry the commit; n2 applies it and says so
    with pytest.raises(InvalidConfChange, match="not a member"):
        node.propose_conf_change(change(ConfChangeType.REMOVE, "n3"))


def test_a_leader_that_removed_itself_takes_no_more_changes() -> None:
    net = cluster()
    net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n1"))
    net.stabilize()
    assert net["n1"].raft.role is StateRole.LEADER and "n1" not in net["n1"].raft.voters
    with pytest.raises(TransferInProgress, match="handing leadership over"):
        net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n1"))


def test_a_node_that_lost_its_data_no_longer_counts_as_having_applied() -> None:
    """A wiped node probes; what it reported applied before is gone with its disk, and must
    not make up a majority_applied (the removed leader's hand-over, the next change)."""
    net = cluster()
    net.tick("n1", 4)
    raft = net["n1"].raft
    assert raft.reported_applied["n2"] == raft.log.applied_index
    net["n1"].node.step(MsgProbe(term=0, src="n2", dst="n1"))
    assert "n2" not in raft.reported_applied


def test_a_removed_node_learns_its_removal_from_the_leaders_last_news() -> None:
    """The leader was waiting for n3's answer to a probe (so it sent n3 nothing, commit news
    included) when the removal committed; nobody replicates to n3 after that. The leader
    sends it what it lacks up to the commit index as it drops it: it learns it was removed,
    and sends clients on (simulator scenario test_a_removed_node_redirects_reads_at_once)."""
    net = cluster()
    net.cut.add(("n3", "n1"))  # its answers never arrive
    pr = net["n1"].raft.progress["n3"]
    pr.become_probe()
    pr.probe_sent = True
    index = net["n1"].node.propose_conf_change(change(ConfChangeType.REMOVE, "n3"))
    net.stabilize()
    assert net["n1"].raft.voters == ("n1", "n2")
    raft = net["n3"].raft
    assert raft.log.commit_index >= index and "n3" not in raft.members

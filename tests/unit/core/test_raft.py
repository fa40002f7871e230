"""Deterministic scenario tests of the core (no sleeps, no sockets, no clock)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from raftd.core import (
    Config,
    ConfState,
    HardState,
    MemoryStorage,
    ProposalDropped,
    RawNode,
    StateRole,
)
from raftd.core.messages import MsgApp, MsgAppResp, MsgVote, MsgVoteResp
from raftd.core.state import Entry
from tests.unit.core.harness import Network


def elect(net: Network, id: str = "n1") -> None:
    net.campaign(id)
    assert net.leaders() == [id]


def test_campaign_elects_one_leader_and_commits_noop() -> None:
    net = Network(3)
    elect(net)
    net.tick("n1")  # followers learn the commit index with the next tick's news
    for n in net.nodes.values():
        assert n.raft.current_term == 1
        assert [e.index for e in n.applied] == [1]
        assert n.applied[0].data == b""


def test_election_by_timeout_yields_exactly_one_leader() -> None:
    net = Network(5, seed=7)
    for _ in range(100):
        net.tick_all()
        if net.leaders():
            break
    assert len(net.leaders()) == 1


def test_election_timeout_draws_every_tick_in_range() -> None:
    cfg = Config(id="a", election_ticks=(15, 30), rng=random.Random(3))
    node = RawNode(cfg, MemoryStorage(ConfState(voters=("a", "b", "c"))))
    seen = set()
    for _ in range(2000):
        node.raft._reset_randomized_election_timeout()
        seen.add(node.raft.randomized_election_timeout)
    assert seen == set(range(15, 31))


def test_proposals_replicate_and_apply_everywhere() -> None:
    net = Network(3)
    elect(net)
    for i in range(20):
        net.propose("n1", f"v{i}".encode())
    net.tick("n1")
    for n in net.nodes.values():
        assert [e.data for e in n.applied[1:]] == [f"v{i}".encode() for i in range(20)]


def test_follower_refuses_proposals() -> None:
    net = Network(3)
    elect(net)
    with pytest.raises(ProposalDropped):
        net["n2"].node.propose(b"x")


def test_prevote_keeps_partitioned_node_from_disrupting() -> None:
    net = Network(3)
    elect(net)
    net.isolate("n3")
    net.tick("n3", 200)
    assert net["n3"].raft.current_term == 1  # PreVote never got a majority: no term inflation
    net.heal()
    net.tick("n3", 50)
    assert net.leaders() == ["n1"]
    assert net["n1"].raft.current_term == 1


@pytest.mark.parametrize("elapsed, elected", [(-1, False), (0, True)])
def test_lease_ends_a_little_before_the_minimum_election_timeout(
    elapsed: int, elected: bool
) -> None:
    """Tick timers run out of phase: when the leader dies, the first node whose timer runs
    out at the minimum must find the others out of their lease, though they may be a tick or
    two behind it (``Config.lease_ticks``); inside it they ignore its (pre-)votes."""
    net = Network(3)
    elect(net)
    net.down.add("n1")
    lease = net["n3"].config.lease_ticks
    assert lease < net["n3"].config.election_ticks[0]
    net.tick("n3", lease + elapsed)
    assert net["n3"].raft.leader_id == "n1"  # still follows the dead leader
    net.campaign("n2")
    assert net.leaders() == (["n2"] if elected else [])


def test_without_prevote_partitioned_node_disrupts_on_return() -> None:
    net = Network(3, pre_vote=False, check_quorum=False)
    elect(net)
    net.isolate("n3")
    net.tick("n3", 200)
    assert net["n3"].raft.current_term > 1
    net.heal()
    net.tick_all(5)
    assert net["n1"].raft.current_term > 1  # the contrast: the leader was deposed


def test_check_quorum_leader_steps_down_when_isolated() -> None:
    net = Network(3)
    elect(net)
    net.isolate("n1")
    net.tick("n1", 25)
    assert net["n1"].raft.role is StateRole.FOLLOWER


def test_conflicting_uncommitted_entries_are_repaired() -> None:
    net = Network(3)
    elect(net)
    net.propose("n1", b"committed")
    net.isolate("n1")
    for i in range(5):
        net["n1"].node.propose(f"lost{i}".encode())
    net.stabilize()
    for _ in range(100):
        net.tick_all()
        if set(net.leaders()) - {"n1"}:
            break
    new_leader = (set(net.leaders()) - {"n1"}).pop()
    net.propose(new_leader, b"after")
    net.heal()
    net.tick_all(30)
    logs = {
        i: [(e.term, e.data) for e in n.storage.entries(1, n.storage.last_index() + 1)]
        for i, n in net.nodes.items()
    }
    assert logs["n1"] == logs["n2"] == logs["n3"]
    assert all(not d.startswith(b"lost") for _, d in logs["n1"])
    assert [e.data for e in net["n1"].applied if e.data] == [b"committed", b"after"]


def _drain(node: RawNode, storage: MemoryStorage) -> list:
    out = []
    while node.has_ready():
        rd = node.ready()
        if rd.hard_state is not None:
            storage.set_hard_state(rd.hard_state)
        storage.append(rd.entries)
        out.extend(rd.messages)
        out.extend(rd.after_persist)
        node.advance(rd)
    return out


def test_figure8_entry_of_older_term_is_not_committed_by_counting_replicas() -> None:
    """Raft §5.4.2 / Figure 8: replicas of a term-2 entry on a majority do not commit it."""
    voters = ("s1", "s2", "s3", "s4", "s5")
    storage = MemoryStorage(ConfState(voters=voters))
    storage.set_hard_state(HardState(current_term=3))
    storage.append([Entry(term=1, index=1), Entry(term=2, index=2, data=b"x")])
    node = RawNode(Config(id="s1", election_ticks=(10, 20), heartbeat_ticks=2,
                          pre_vote=False), storage)
    node.campaign()
    _drain(node, storage)
    for peer in ("s2", "s3"):
        node.step(MsgVoteResp(term=4, src=peer, dst="s1", reject=False))
    _drain(node, storage)
    assert node.raft.role is StateRole.LEADER and node.raft.current_term == 4
    assert storage.last_index() == 3  # the term-4 no-op
    for peer in ("s2", "s3"):  # s2 and s3 now hold index 2 (term 2): a majority with s1
        node.step(MsgAppResp(term=4, src=peer, dst="s1", index=2))
    _drain(node, storage)
    assert node.raft.log.commit_index < 2
    for peer in ("s2", "s3"):
        node.step(MsgAppResp(term=4, src=peer, dst="s1", index=3))
    _drain(node, storage)
    assert node.raft.log.commit_index == 3


def test_vote_is_not_reset_within_a_term_even_across_restart() -> None:
    storage = MemoryStorage(ConfState(voters=("a", "b", "c")))
    storage.set_hard_state(HardState())
    cfg = Config(id="a", election_ticks=(10, 20), heartbeat_ticks=2)
    node = RawNode(cfg, storage)
    node.step(MsgVote(term=5, src="b", dst="a", last_log_index=0, last_log_term=0))
    out = _drain(node, storage)
    assert [m.reject for m in out if isinstance(m, MsgVoteResp)] == [False]
    node.step(MsgVote(term=5, src="c", dst="a", last_log_index=9, last_log_term=4))
    out = _drain(node, storage)
    assert [m.reject for m in out if isinstance(m, MsgVoteResp)] == [True]
    node = RawNode(cfg, storage)  # restart from what was persisted
    node.step(MsgVote(term=5, src="c", dst="a", last_log_index=9, last_log_term=4))
    out = _drain(node, storage)
    assert [m.reject for m in out if isinstance(m, MsgVoteResp)] == [True]


def test_vote_grant_waits_for_persistence() -> None:
    storage = MemoryStorage(ConfState(voters=("a", "b", "c")))
    storage.set_hard_state(HardState())
    node = RawNode(Config(id="a", election_ticks=(10, 20), heartbeat_ticks=2), storage)
    node.step(MsgVote(term=2, src="b", dst="a", last_log_index=0, last_log_term=0))
    rd = node.ready()
    assert rd.hard_state == HardState(current_term=2, voted_for="b")
    assert rd.must_sync
    assert not [m for m in rd.messages if isinstance(m, MsgVoteResp)]
    assert [type(m) for m in rd.after_persist] == [MsgVoteResp]


def test_leader_ships_entries_before_its_own_fsync_but_counts_itself_after() -> None:
    net = Network(3)
    elect(net)
    leader = net["n1"].node
    leader.propose(b"x")
    rd = leader.ready()
    assert any(isinstance(m, MsgApp) and m.entries for m in rd.messages)
    assert not rd.after_persist  # its own ack is held back for advance()
    commit_before = leader.raft.log.commit_index
    net["n1"].storage.append(rd.entries)
    leader.advance(rd)
    assert leader.raft.progress["n1"].match_index == rd.entries[-1].index
    assert leader.raft.log.commit_index == commit_before  # followers have not acked yet


def test_readindex_waits_for_the_new_leaders_noop() -> None:
    net = Network(3)
    net.drop_types.add(MsgApp)
    net.campaign("n1")
    assert net.leaders() == ["n1"]
    net["n1"].node.read_index(7)
    net.stabilize()
    net.tick("n1", 4)
    assert net["n1"].read_states == []  # its no-op is not committed: no read yet
    net.drop_types.clear()
    net.tick("n1", 4)
    assert net["n1"].read_states
    index, ctx = net["n1"].read_states[0]
    assert ctx == 7 and index >= 1 and net["n1"].raft.log.term(index) == 1


def test_readindex_on_follower_returns_leader_commit() -> None:
    net = Network(3)
    elect(net)
    net.propose("n1", b"a")
    net["n2"].node.read_index(3)
    net.stabilize()
    assert net["n2"].read_states == [(net["n1"].raft.log.commit_index, 3)]


def test_a_follower_read_learns_the_commit_with_its_index_not_at_the_next_tick() -> None:
    net = Network(3)
    elect(net)
    net.tick("n1")
    net.cut.add(("n1", "n2"))
    net.propose("n1", b"a")  # committed with n3 alone; n2 lacks it and its commit
    net.cut.clear()
    net["n2"].node.read_index(4)
    net.stabilize()  # no tick
    index = net["n1"].raft.log.commit_index
    assert net["n2"].read_states == [(index, 4)]
    assert net["n2"].raft.log.applied_index >= index  # the read can be served at once


def test_isolated_deposed_leader_never_answers_a_read() -> None:
    net = Network(3)
    elect(net)
    net.isolate("n1")
    for _ in range(100):
        for id in ("n2", "n3"):
            net[id].node.tick()
        net.stabilize()
        if set(net.leaders()) - {"n1"}:
            break
    new_leader = (set(net.leaders()) - {"n1"}).pop()
    net.propose(new_leader, b"newer")
    net["n1"].node.read_index(9)
    net.stabilize()
    net.tick("n1", 30)  # long enough for CheckQuorum to depose it
    assert net["n1"].read_states == []
    assert net["n1"].dropped_reads == [9]
    assert net["n1"].raft.role is StateRole.FOLLOWER


def test_single_node_cluster_elects_itself_and_serves_reads() -> None:
    net = Network(1, blank=True)
    net.tick_all(40)
    assert net.leaders() == ["n1"]
    net["n1"].node.read_index(1)
    net.stabilize()
    assert net["n1"].read_states == [(1, 1)]


def test_faulty_peer_cannot_rewrite_committed_entries_or_ack_the_future() -> None:
    net = Network(3)
    elect(net)
    net.propose("n1", b"a")
    follower = net["n2"]
    committed = follower.raft.log.commit_index
    before = follower.storage.entries(1, follower.storage.last_index() + 1)
    follower.node.step(MsgApp(
        term=1, src="n1", dst="n2", prev_log_index=0, prev_log_term=0,
        entries=(Entry(term=1, index=1, data=b"forged"),), leader_commit=1,
    ))
    net.stabilize()
    assert follower.storage.entries(1, follower.storage.last_index() + 1) == before
    assert follower.raft.log.commit_index == committed
    leader = net["n1"]
    leader.node.step(MsgAppResp(term=1, src="n3", dst="n1", index=10_000))
    net.stabilize()
    assert leader.raft.progress["n3"].match_index <= leader.raft.log.last_index()


def test_leadership_transfer_to_caught_up_voter() -> None:
    net = Network(3)
    elect(net)
    net.propose("n1", b"a")
    net["n1"].node.transfer_leader("n2")
    net.stabilize()
    assert net.leaders() == ["n2"]
    assert net["n2"].raft.current_term == 2
    net.propose("n2", b"b")
    net.tick("n2")
    assert [e.data for e in net["n1"].applied if e.data] == [b"a", b"b"]


def test_transfer_to_lagging_voter_waits_for_catch_up_and_refuses_proposals() -> None:
    from raftd.core import TransferInProgress

    net = Network(3)
    elect(net)
    net.isolate("n3")
    net.propose("n1", b"a")
    net["n1"].node.transfer_leader("n3")
    net.stabilize()
    with pytest.raises(TransferInProgress):
        net["n1"].node.propose(b"b")
    net.heal()
    net.tick("n1", 4)  # heartbeat -> n3 answers -> appends -> caught up -> TimeoutNow
    assert net.leaders() == ["n3"]


def test_transfer_aborts_after_an_election_timeout() -> None:
    net = Network(3)
    elect(net)
    net.isolate("n3")
    net.propose("n1", b"a")
    net["n1"].node.transfer_leader("n3")
    net.stabilize()
    for _ in range(12):
        net["n1"].node.tick()
        net["n2"].node.tick()
        net.stabilize()
    assert net.leaders() == ["n1"]
    net.propose("n1", b"b")  # proposals flow again


def test_read_round_whose_heartbeats_were_lost_is_confirmed_by_the_next_ones() -> None:
    from raftd.core.messages import MsgHeartbeat

    net = Network(3)
    elect(net)
    net.drop_types.add(MsgHeartbeat)
    net["n1"].node.read_index(11)
    net.stabilize()
    assert net["n1"].read_states == []  # the round's heartbeats are gone
    net.drop_types.clear()
    net.tick("n1", 2)  # no new read arrives: the periodic heartbeat must carry the round
    assert [ctx for _, ctx in net["n1"].read_states] == [11]


def test_a_commit_notice_is_answered_only_when_refused() -> None:
    """A MsgApp that is only commit news for a follower known to match (``notice``) gets no
    answer: the leader learns nothing from it, and heartbeats say who is alive."""
    net = Network(3)
    net.campaign("n1")
    net.propose("n1", b"x")
    follower = net["n2"]
    raft = follower.raft
    last = raft.log.last_index()
    notice = MsgApp(term=raft.current_term, src="n1", dst="n2", prev_log_index=last,
                    prev_log_term=raft.log.term(last), entries=(), leader_commit=last,
                    notice=True)
    answers = []
    for m in (notice, replace(notice, prev_log_index=last + 3)):
        follower.node.step(m)
        rd = follower.node.ready()
        answers.append([a.reject for a in rd.messages + rd.after_persist
                        if isinstance(a, MsgAppResp)])
        follower.node.advance(rd)
    assert answers == [[], [True]]
    assert raft.log.commit_index == last

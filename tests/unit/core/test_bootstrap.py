"""A blank data dir: bootstrap a fresh cluster, or catch up without voting (core.bootstrap)."""

from __future__ import annotations

from raftd.core import Message, StateRole
from raftd.core.messages import MsgApp, MsgAppResp, MsgVote, MsgVoteResp
from tests.unit.core.harness import Network, Node
from tests.unit.core.test_snapshot import compact_leader


def run_until_leader(net: Network, ticks: int = 300) -> str | None:
    for _ in range(ticks):
        net.tick_all()
        if net.leaders():
            return net.leaders()[0]
    return None


def test_fresh_cluster_bootstraps_without_a_flag() -> None:
    net = Network(3, blank=True)
    assert run_until_leader(net)
    for n in net.nodes.values():
        assert not n.raft.catching_up and not n.raft.probing
        assert n.storage.initial_state()[0] is not None  # no longer blank on disk


def test_fresh_cluster_waits_for_every_initial_member_then_forms() -> None:
    net = Network(3, blank=True)
    net.down.add("n3")
    assert run_until_leader(net, 200) is None
    assert all(net[i].raft.probing for i in ("n1", "n2"))
    net.down.clear()
    assert run_until_leader(net)


def _cluster_with_data() -> Network:
    net = Network(3)
    net.campaign("n1")
    for i in range(10):
        net.propose("n1", f"v{i}".encode())
    return net


def test_wiped_node_catches_up_and_does_not_vote_meanwhile() -> None:
    net = _cluster_with_data()
    # n2 misses the last writes: they are committed on n1 and n3 only.
    net.isolate("n2")
    for i in range(5):
        net.propose("n1", f"late{i}".encode())
    committed = net["n1"].raft.log.commit_index
    net.heal()
    net.down.add("n1")  # the only other holder of the late entries dies...
    net["n3"].wipe()   # ...and n3 comes back with an empty data dir
    net.isolate("n1")
    for _ in range(300):
        net.tick_all()
    # n2 lacks committed entries; n3 must not help it win.
    assert net.leaders() == []
    assert net["n3"].raft.catching_up or net["n3"].raft.probing
    assert net["n3"].raft.voted_for in ("", "n3")
    net.down.clear()
    net.heal()
    leader = run_until_leader(net)
    assert leader == "n1"
    for _ in range(50):
        net.tick_all()
    n3 = net["n3"]
    assert not n3.raft.catching_up
    assert n3.raft.log.commit_index >= committed
    assert n3.storage.entries(1, committed + 1) == net["n1"].storage.entries(1, committed + 1)


def test_catching_up_node_rejects_votes_and_survives_restart_in_that_state() -> None:
    net = _cluster_with_data()
    net["n3"].wipe()
    net.isolate("n3")
    net["n3"].node.step(MsgVote(term=9, src="n2", dst="n3", last_log_index=1, last_log_term=1))
    net.stabilize()
    assert net["n3"].raft.probing  # no answer yet: a blank node says nothing about votes
    net.heal()
    net.isolate("n1")  # n3 learns from n2's probe answer that the cluster has data
    net.tick("n3", 5)
    n3 = net["n3"]
    assert n3.raft.catching_up
    n3.restart()
    assert n3.raft.catching_up and not n3.raft.probing
    replies: list[MsgVoteResp] = []
    n3.node.step(MsgVote(term=50, src="n2", dst="n3", last_log_index=99, last_log_term=49))
    while n3.node.has_ready():
        rd = n3.node.ready()
        if rd.hard_state:
            n3.storage.set_hard_state(rd.hard_state)
        replies += [m for m in rd.messages + rd.after_persist if isinstance(m, MsgVoteResp)]
        n3.node.advance(rd)
    assert [r.reject for r in replies] == [True]


def test_wiped_member_of_single_node_cluster_restarts_as_leader() -> None:
    net = Network(1, blank=True)
    assert run_until_leader(net) == "n1"
    assert net["n1"].raft.role is StateRole.LEADER


def test_catching_up_members_wait_for_a_leader_rather_than_vote() -> None:
    """A late member and a wiped one are both catching up: safety first, no election even
    though the node holding the data is up (force-new-cluster is the documented way out)."""
    net = _cluster_with_data()
    for wiped in ("n2", "n3"):
        net[wiped].wipe()
    net["n1"].restart()  # forget leadership: an election would be needed
    assert run_until_leader(net, 600) is None
    assert all(net[i].raft.catching_up or net[i].raft.probing for i in ("n2", "n3"))


def test_catching_up_members_never_elect_a_node_missing_committed_entries() -> None:
    net = _cluster_with_data()
    net.isolate("n2")
    for i in range(5):
        net.propose("n1", b"late%d" % i)
    net.heal()
    net["n3"].wipe()
    net["n1"].restart()
    net.down.add("n1")  # the only holder of the late entries is away: n3 must not elect n2
    for _ in range(300):
        net.tick_all()
    assert net.leaders() == []


def _an_append_it_would_take(node: Node, m: Message) -> bool:
    """Whether ``m`` brings ``node`` entries it would accept (it holds ``prev_log_index``):
    what the tests below lose, so that the node gets the probing appends it rejects and the
    snapshot, never the entries after it."""
    return (isinstance(m, MsgApp) and m.dst == node.id and bool(m.entries)
            and node.raft.log.last_index() >= m.prev_log_index)


def test_a_snapshot_of_the_leaders_term_does_not_end_the_catch_up_early() -> None:
    """Simulator seed 65706: entries committed thanks to the wiped node's lost acks lie beyond
    the leader's snapshot, which is of the current term. Installing it is not enough: the
    node must reach the last index the leader had when it answered the node's probe."""
    net = _cluster_with_data()
    compact_leader(net, "n1")
    net.isolate("n2")
    for i in range(5):
        net.propose("n1", b"late%d" % i)  # committed on n1 and n3's acks alone
    committed = net["n1"].raft.log.commit_index
    net["n3"].wipe()
    n3 = net["n3"]
    deliver = net.send

    def lose_late_entries(m: Message) -> None:
        if not _an_append_it_would_take(n3, m):
            deliver(m)

    net.send = lose_late_entries  # type: ignore[method-assign]
    for _ in range(10):
        net.tick_all()
    assert n3.installed and n3.raft.log.commit_index < committed
    assert n3.raft.catching_up
    net.down.add("n1")  # the only intact holder of the late entries
    net.send = deliver  # type: ignore[method-assign]
    net.heal()
    for _ in range(300):
        net.tick_all()
    assert net.leaders() == []  # neither n2 nor n3 holds them: no election
    net.down.clear()
    assert run_until_leader(net) == "n1"
    for _ in range(50):
        net.tick_all()
    assert not n3.raft.catching_up and n3.raft.log.commit_index >= committed


def test_an_ack_of_the_former_self_still_on_the_way_cannot_commit_past_the_catch_up() -> None:
    """The leader forgets the wiped node's acks when probed, but one still in the network
    counts when it lands: the node must reach the leader's last index of that moment, not
    its commit index, or that ack commits an entry the node can vote without."""
    net = _cluster_with_data()
    compact_leader(net, "n1")
    base = net["n1"].raft.log.commit_index
    net.isolate("n2")
    n3 = net["n3"]
    deliver = net.send
    delayed: list[Message] = []
    wiped = False

    def network(m: Message) -> None:
        if not wiped and isinstance(m, MsgAppResp) and m.src == "n3" and m.index > base:
            delayed.append(m)  # the former self's ack of the late entry, on its way
        elif not (wiped and _an_append_it_would_take(n3, m)):
            deliver(m)  # after the wipe, n3 gets the snapshot but never the late entry

    net.send = network  # type: ignore[method-assign]
    late = net.propose("n1", b"late")
    assert delayed and net["n1"].raft.log.commit_index == base
    n3.wipe()
    wiped = True
    for _ in range(10):
        net.tick_all()
    assert n3.installed and n3.raft.log.commit_index == base
    assert n3.raft.catching_up and n3.raft.leader_probe[1] == late
    for m in delayed:  # it lands, and the leader commits the late entry with it...
        net["n1"].node.step(m)
    net.handle_ready(net["n1"])
    assert net["n1"].raft.log.commit_index == late
    net.queue.clear()
    net.down.add("n1")  # ...then crashes before telling anyone
    net.send = deliver  # type: ignore[method-assign]
    net.heal()
    for _ in range(300):
        net.tick_all()
    assert net.leaders() == []  # neither n2 nor n3 holds the late entry


def test_a_restarted_catching_up_node_asks_its_leader_again() -> None:
    """The leader's answer is volatile: after a restart mid-catch-up the node probes the
    leader it hears (once per election timeout), and finishes only with a fresh answer."""
    net = _cluster_with_data()
    net["n3"].wipe()
    net.tick("n3", 5)
    n3 = net["n3"]
    n3.restart()
    assert n3.raft.catching_up and n3.raft.leader_probe == (0, 0)
    for _ in range(20):
        net.tick_all()
    assert not n3.raft.catching_up
    probe_term, catch_up_index = n3.raft.leader_probe
    assert probe_term == net["n1"].raft.current_term
    assert n3.raft.log.commit_index >= catch_up_index

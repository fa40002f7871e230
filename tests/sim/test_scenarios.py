"""Hand-steered scenarios on the simulator: one fault, placed on purpose, then the checks.

Each starts from a calm scenario (no random faults, a clean network), drives the cluster
through ``Simulator.tick`` and places its fault by hand; the simulator's checkers still run
after every step, and ``converge`` ends with the full end-of-run checks (every acknowledged
write present, the same state everywhere, equal to the committed log's model). Membership
scenarios hand the operator (``tests.sim.membership``) its procedure; the last ones reproduce
production bugs the simulation found (now fixed), as regression tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from raftd.core import ConfChange, ConfChangeType, Message, StateRole
from raftd.core.messages import MsgPreVote, MsgPreVoteResp, MsgVote, MsgVoteResp
from raftd.wire.client import GetRequest
from tests.sim.checker import members
from tests.sim.membership import Change, MembershipOptions, Start, Step, Stop, Wipe
from tests.sim.simulator import NO_SLOW_DISK, OperatorToken, Options, SimNode, Simulator

FOREVER = (10**9, 10**9)
"""Down time of a crashed node: it stays down until the scenario (or the liveness phase)
restarts it."""


def calm(nodes: int, requests: int = 80) -> Callable[[Options], Options]:
    """The drawn options with every random fault and membership change off (network delays
    and reordering stay)."""

    def adjust(o: Options) -> Options:
        return replace(
            o,
            nodes=nodes,
            network=replace(o.network, loss_max=0.0, duplicate=0.0),
            workload=replace(o.workload, requests=requests, issue_rate=0.05),
            partition_modes=(),
            crash_rate=0.0,
            wipe_rate=0.0,
            cluster_crash_rate=0.0,
            tick_skip=0.0,
            pause_rate=0.0,
            down_ticks=FOREVER,
            transfer_rate=0.0,
            membership=MembershipOptions(),
            slow_disk=NO_SLOW_DISK,
        )

    return adjust


def run_until(sim: Simulator, condition: Callable[[], bool], ticks: int = 2000) -> None:
    for _ in range(ticks):
        sim.tick()
        if condition():
            return
    raise AssertionError(f"seed {sim.seed}: condition not reached in {ticks} ticks\n"
                         + sim.status_report())


def acked_writes(sim: Simulator) -> int:
    return sum(len(c.acked) for c in sim.workload.clients)


def isolate(sim: Simulator, node: str) -> None:
    ids = sim.nodes_ids
    sim.network.cut([(a, b) for a in ids for b in ids if a != b and node in (a, b)])


def leader_node(sim: Simulator) -> SimNode:
    replica = sim.leader()
    assert replica is not None
    return sim.nodes[replica.node.raft.id]


@pytest.mark.parametrize("seed", [11, 12, 13, 14, 15])
def test_whole_cluster_crash_loses_no_acknowledged_write(seed: int) -> None:
    sim = Simulator(seed, adjust=calm(3))
    run_until(sim, lambda: acked_writes(sim) >= 5)
    sim.blackout()  # every node dies at a disk write of the next tick, or at its end
    sim.tick()
    assert not any(n.up for n in sim.nodes.values())
    acked = {c.client_id: dict(c.acked) for c in sim.workload.clients}
    sim.start_liveness()
    sim.converge()  # ends with: every acknowledged write is in the converged state
    leader = sim.leader()
    assert leader is not None
    for client in sim.workload.clients:
        for key, value in acked[client.client_id].items():
            assert leader.sm.get(key)[:2] == (True, value)


@pytest.mark.parametrize("nodes", [3, 5])
def test_isolated_node_rejoins_without_disrupting(nodes: int) -> None:
    sim = Simulator(21, adjust=calm(nodes, requests=150))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 3)
    leader = leader_node(sim)
    term = sim.checker.term_floor[leader.id]
    follower = next(n for n in sim.nodes.values() if n is not leader)
    isolate(sim, follower.id)
    for _ in range(1000):  # dozens of election timeouts: PreVote keeps its term put
        sim.tick()
    assert follower.replica is not None
    assert follower.replica.node.raft.current_term == term
    sim.network.heal()
    for _ in range(300):
        sim.tick()
    assert sim.leader() is leader.replica
    assert leader.replica is not None and leader.replica.node.raft.current_term == term
    assert set(sim.checker.leaders) <= set(range(term + 1))
    sim.start_liveness()
    sim.converge()
    assert leader.replica.node.raft.current_term == term


def test_wiped_node_never_causes_loss_of_an_acknowledged_write() -> None:
    """The rule of raftd.core.bootstrap: a wiped node must not help a stale node win.

    n_stale misses writes that the leader and n_wiped acknowledged; then the leader dies and
    n_wiped loses its disk. n_stale plus a blank n_wiped are a majority, so if the blank node
    voted, n_stale would win and the acknowledged writes would be gone.
    """
    sim = Simulator(31, adjust=calm(3, requests=120))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 2)
    leader = leader_node(sim)
    stale, wiped = (n for n in sim.nodes.values() if n is not leader)
    isolate(sim, stale.id)
    before = acked_writes(sim)
    run_until(sim, lambda: acked_writes(sim) >= before + 5)
    sim.crash(leader)
    sim.wipe(wiped)
    sim.network.heal()
    sim.start(wiped)
    for _ in range(600):
        sim.tick()
        assert sim.leader() is None, "a stale node won with the vote of a wiped one"
    assert wiped.replica is not None and not wiped.replica.node.raft.promotable()
    sim.start_liveness()  # the old leader returns: it holds the acknowledged writes
    sim.converge()


# -- membership changes ----------------------------------------------------------------------
def calm_with_spares(nodes: int, spares: int, requests: int = 120,
                     loss: float = 0.0) -> Callable[[Options], Options]:
    """``calm``, plus ids for nodes the scenario adds, an idle operator (the scenario hands it
    its procedure) and, optionally, lossy links."""
    base = calm(nodes, requests)

    def adjust(o: Options) -> Options:
        o = base(o)
        return replace(o, network=replace(o.network, loss_max=loss),
                       membership=MembershipOptions(spares=spares))

    return adjust


def restart_then_converge(sim: Simulator, node: str) -> None:
    """Crash ``node`` and start it again at once, then heal everything and converge."""
    sim.crash(sim.nodes[node])
    sim.start(sim.nodes[node])
    sim.start_liveness()
    sim.converge()


def run_procedure(sim: Simulator, name: str, job: list[Step], ticks: int = 3000) -> None:
    sim.operator.start(name, job)
    run_until(sim, lambda: not sim.operator.job, ticks)
    assert sim.operator.abandoned == 0, f"{name} was abandoned"


def test_add_node_while_a_partition_isolates_the_leader() -> None:
    """The add-node request reaches the old leader on the minority side, which appends it but
    cannot commit it; it steps down (CheckQuorum) and answers not_leader; the operator retries
    at the majority's new leader, where the change commits once, and the new node catches up
    and is promoted. The old leader's uncommitted entry is overwritten when it rejoins."""
    sim = Simulator(41, adjust=calm_with_spares(3, spares=1))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 3)
    old = leader_node(sim)
    sim.start_member("n4")
    isolate(sim, old.id)
    run_procedure(sim, "add", [Change(ConfChange(type=ConfChangeType.ADD_LEARNER,
                                                 node_id="n4"), to=old.id)])
    answers = sim.operator.answers
    assert answers.get("not_leader", 0) + answers.get("timeout", 0) >= 1, answers
    assert "n4" in members(sim.checker.config)
    assert sim.leader() is not old.replica
    run_until(sim, lambda: "n4" in sim.checker.config.voters)  # promoted once caught up
    sim.network.heal()
    sim.start_liveness()
    sim.converge()
    assert sim.checker.config.voters == ("n1", "n2", "n3", "n4")
    assert sim.checker.conf_changes == 2  # one add, one promotion: never twice


@pytest.mark.parametrize("nodes", [3, 5])
def test_remove_the_leader_under_loss(nodes: int) -> None:
    """The leader removes itself on lossy links (20%): it hands leadership over once the
    change is applied, never leads again although it keeps running, and its datagrams raise
    no member's term; the remaining voters converge."""
    sim = Simulator(51, adjust=calm_with_spares(nodes, spares=0, loss=0.2))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 3)
    old = leader_node(sim)
    run_procedure(sim, "remove-leader", [
        Change(ConfChange(type=ConfChangeType.REMOVE, node_id=old.id), to=old.id)])
    assert old.id not in members(sim.checker.config)
    removed_in = max(sim.checker.leaders)
    sim.start_liveness()
    sim.converge()
    assert old.up and old.id in sim.checker.removed
    assert all(leader != old.id for term, leader in sim.checker.leaders.items()
               if term > removed_in)
    assert sim.disruptions == 0
    assert len(sim.checker.config.voters) == nodes - 1


def test_a_lagging_learner_never_votes() -> None:
    """A pinned learner cut off from the leader falls far behind and hears from no leader for
    dozens of election timeouts: it never campaigns, never grants a vote, and the voters
    elect a new leader without it when the old one dies. Then it catches up, still a learner."""
    sim = Simulator(61, adjust=calm_with_spares(3, spares=1, requests=200))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 3)
    sim.start_member("n4")
    run_procedure(sim, "add-learner", [Change(ConfChange(
        type=ConfChangeType.ADD_LEARNER, node_id="n4", auto_promote=False))])
    learner = sim.nodes["n4"]
    sent: list[Message] = []
    send = sim.network.send

    def record(messages: Sequence[Message], now: int) -> None:
        sent.extend(m for m in messages if m.src == "n4")
        send(messages, now)

    sim.network.send = record  # type: ignore[method-assign]
    leader = leader_node(sim)
    sim.network.cut([(leader.id, "n4")])
    before = acked_writes(sim)
    run_until(sim, lambda: acked_writes(sim) >= before + 10)
    sim.crash(leader)  # stays down: the others must elect a leader with the learner lagging
    run_until(sim, lambda: sim.leader() is not None)
    new_leader = sim.leader()
    assert learner.replica is not None and new_leader is not None
    assert learner.replica.node.raft.log.last_index() < new_leader.node.raft.log.last_index()
    for _ in range(600):
        sim.tick()
    assert not [m for m in sent if isinstance(m, MsgVote | MsgPreVote)]
    assert not [m for m in sent if isinstance(m, MsgVoteResp | MsgPreVoteResp) and not m.reject]
    assert learner.replica.node.raft.role is StateRole.FOLLOWER
    sim.network.heal()
    sim.start_liveness()
    sim.converge()
    assert sim.checker.config.learners == ("n4",)


# -- production bugs the simulation found (now fixed), reproduced by hand ---------------------
def test_a_node_joins_while_the_leader_was_added_later() -> None:
    """n4 joins and is promoted, then leads; n5, configured with the initial voters as the
    README's add-node example, must still hear from it and catch up."""
    sim = Simulator(71, adjust=calm_with_spares(3, spares=2))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 3)
    sim.start_member("n4")
    run_procedure(sim, "add", [Change(ConfChange(type=ConfChangeType.ADD_LEARNER,
                                                 node_id="n4"))])
    n4 = sim.nodes["n4"]
    run_until(sim, lambda: n4.replica is not None and "n4" in n4.replica.node.raft.voters)
    leader = leader_node(sim)
    assert leader.replica is not None
    leader.replica.submit_transfer(OperatorToken(1), "n4", leader.outbox)
    run_until(sim, lambda: sim.leader() is n4.replica)
    sim.start_member("n5")
    run_procedure(sim, "add", [Change(ConfChange(type=ConfChangeType.ADD_LEARNER,
                                                 node_id="n5"))])
    sim.start_liveness()
    sim.converge()  # n5, a member, must have caught up


def test_a_voter_promoted_unawares_votes() -> None:
    """n2, a caught-up pinned learner, is promoted while n1's datagrams to it are lost, so the
    promotion commits on n1 alone; n1 restarts and needs n2's vote to lead again."""
    sim = Simulator(91, adjust=calm_with_spares(1, spares=1))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 3)
    sim.start_member("n2")
    run_procedure(sim, "add-learner", [Change(ConfChange(
        type=ConfChangeType.ADD_LEARNER, node_id="n2", auto_promote=False))])
    n2 = sim.nodes["n2"]
    run_until(sim, lambda: n2.replica is not None and not n2.replica.node.raft.catching_up)
    # Proposed while n2 is caught up (a promotion is refused otherwise), then cut at once:
    # the entry commits on n1 alone (the voters are still {n1}) and never reaches n2.
    leader = sim.leader()
    assert leader is not None
    run_until(sim, lambda: leader.node.raft._learner_ready("n2"))
    leader.node.propose_conf_change(ConfChange(type=ConfChangeType.PROMOTE, node_id="n2"))
    sim.network.cut([("n1", "n2")])
    run_until(sim, lambda: "n2" in leader.node.raft.voters)
    restart_then_converge(sim, "n1")


def test_a_learner_is_promoted_only_once_caught_up() -> None:
    """n2 joins a one-node cluster and is promoted automatically (default lag); n1 restarts
    right then: n2 must be able to vote for it, i.e. must have caught up before promotion."""
    sim = Simulator(100, adjust=calm_with_spares(1, spares=1))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 3)
    sim.start_member("n2")
    sim.operator.start("add", [Change(ConfChange(type=ConfChangeType.ADD_LEARNER,
                                                 node_id="n2"))])
    run_until(sim, lambda: "n2" in sim.checker.config.voters)
    restart_then_converge(sim, "n1")


def test_remove_the_leader_of_two_voters_and_stop_it() -> None:
    """A one-node cluster moves to new hardware: add n2 (promoted once caught up), remove the
    old leader n1 and stop it, as the README says; the datagrams n1 sent after committing the
    removal (its commit index, its TimeoutNow) are lost. n2 alone must lead."""
    sim = Simulator(81, adjust=calm_with_spares(1, spares=1))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 3)
    sim.start_member("n2")
    run_procedure(sim, "add", [Change(ConfChange(type=ConfChangeType.ADD_LEARNER,
                                                 node_id="n2"))])
    run_until(sim, lambda: "n2" in sim.checker.config.voters
              and sim.nodes["n2"].replica is not None
              and not sim.nodes["n2"].replica.node.raft.catching_up)
    run_procedure(sim, "remove-leader", [
        Change(ConfChange(type=ConfChangeType.REMOVE, node_id="n1"), to="n1")])
    sim.network.cut([("n1", "n2")])  # what n1 sent since is lost
    sim.retire("n1")
    for _ in range(20):  # longer than any datagram is in flight
        sim.tick()
    sim.start_liveness()
    sim.converge()


# -- B6 and B11: a removed leader is wiped only once the others run without it ----------------
def test_a_removed_leader_is_wiped_only_once_the_new_configuration_runs_without_it() -> None:
    """The README's recovery of a lost node (remove it, wipe it, start it blank with the same
    config, add it) of the leader X, while voter A is cut off and misses entries that X and n4
    commit. B6: X, wiped and blank, voted for A, which did not know X was removed, and with
    that vote A led without the entries only n4 held (a blank node now never votes before a
    leader reached it: test_bootstrap.py). B11 (seed 40356): X answered remove-node once n4
    alone had applied the removal, so it was wiped while A still counted it. Now X hands over
    and answers only once a majority of the new configuration, {A, n4}, applied the change:
    not while A is cut off."""
    sim = Simulator(111, adjust=calm_with_spares(3, spares=1))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 3)
    x = leader_node(sim).id
    a, b = (i for i in sim.ids if i != x)
    sim.start_member("n4")
    run_procedure(sim, "add", [Change(ConfChange(type=ConfChangeType.ADD_LEARNER,
                                                 node_id="n4"))])
    run_until(sim, lambda: "n4" in sim.checker.config.voters)
    run_procedure(sim, "remove", [Change(ConfChange(type=ConfChangeType.REMOVE, node_id=b))])
    node_a, leader = sim.nodes[a], leader_node(sim)
    run_until(sim, lambda: node_a.replica is not None and leader.replica is not None
              and node_a.replica.node.raft.log.last_index()
              == leader.replica.node.raft.log.last_index())
    sim.network.cut([(x, a), ("n4", a)])  # now A falls behind
    before = acked_writes(sim)
    run_until(sim, lambda: acked_writes(sim) >= before + 5)
    wipes = sim.wipes
    sim.operator.start("rejoin", [
        Change(ConfChange(type=ConfChangeType.REMOVE, node_id=x), to=x), Stop(x), Wipe(x),
        Start(x)])
    for _ in range(150):
        sim.tick()
    assert sim.wipes == wipes and sim.operator.job, "X was wiped while A was cut off"
    sim.network.heal()
    run_until(sim, lambda: not sim.operator.job)
    assert sim.operator.abandoned == 0 and sim.wipes == wipes + 1
    sim.network.cut([("n4", a)])
    for _ in range(600):  # A may campaign; the checker raises if it leads without the entries
        sim.tick()
    sim.start_liveness()
    sim.converge()


# -- B10: a removed node sends clients on at once ---------------------------------------------
class _Answers:
    """An outbox that keeps client answers and drops datagrams."""

    def __init__(self) -> None:
        self.answers: list[dict[str, object]] = []

    def send(self, messages: Sequence[Message]) -> None:
        pass

    def respond(self, token: object, response: dict[str, object]) -> None:
        self.answers.append(response)


def test_a_removed_node_redirects_reads_at_once() -> None:
    """A removed node that keeps running is replicated to by nobody, so a read index it got
    from the leader would never be applied there: it must send the client on at once, not
    hold the read until the client's deadline (seed 7106)."""
    sim = Simulator(91, adjust=calm_with_spares(3, spares=0))
    run_until(sim, lambda: sim.leader() is not None and acked_writes(sim) >= 3)
    leader = leader_node(sim)
    removed = next(n for n in sim.nodes.values() if n is not leader)
    run_procedure(sim, "remove", [Change(ConfChange(type=ConfChangeType.REMOVE,
                                                    node_id=removed.id))])
    run_until(sim, lambda: removed.replica is not None
              and removed.id not in removed.replica.node.raft.members)
    assert removed.replica is not None
    outbox = _Answers()
    removed.replica.submit_read("t", GetRequest(key="k"), outbox)  # type: ignore[arg-type]
    assert outbox.answers and outbox.answers[0]["type"] == "redirect"
    stale = GetRequest(key="k", consistency="stale")
    removed.replica.submit_read("s", stale, outbox)  # type: ignore[arg-type]
    assert outbox.answers[1]["type"] == "result"  # a stale read is local, as asked
    sim.start_liveness()
    sim.converge()

"""Hand-steered scenarios on the simulator: one fault, placed on purpose, then the checks.

Each starts from a calm scenario (no random faults, a clean network), drives the cluster
through ``Simulator.tick`` and places its fault by hand; the simulator's checkers still run
after every step, and ``converge`` ends with the full end-of-run checks (every acknowledged
write present, the same state everywhere, equal to the committed log's model).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from tests.sim.simulator import Options, SimNode, Simulator

FOREVER = (10**9, 10**9)
"""Down time of a crashed node: it stays down until the scenario (or the liveness phase)
restarts it."""


def calm(nodes: int, requests: int = 80) -> Callable[[Options], Options]:
    """The drawn options with every random fault off (network delays and reordering stay)."""

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
    sim.network.cut([(a, b) for a in sim.ids for b in sim.ids
                     if a != b and node in (a, b)])


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

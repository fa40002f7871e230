"""The seeded simulation in ``make test``: the shared seed list, determinism, swarm coverage.

By default every seed of ``seeds.txt`` runs (on a pool of two processes, so the stage stays
within its budget on a 2-core machine; ``SIM_JOBS`` changes that); ``SIM_SEEDS=N`` runs seeds
1..N instead (``SIM_START`` moves the range) for a longer sweep, e.g.
``make sim SEEDS=2000 JOBS=2``. A failure prints each failing
seed with its options and the command that replays it with a trace.

Seeds that once exposed a bug stay in ``REGRESSION_SEEDS`` and always run. NB: seeds name
scenarios drawn by ``swarm``; changing what it draws renumbers every scenario, so a regression
seed may then stop reproducing its scenario: find it again with a sweep. Membership changes are
drawn last (``simulator.scenario``), so a regression seed found before they existed still
replays its scenario exactly without them: those are in ``REGRESSION_SEEDS_WITHOUT_MEMBERSHIP``.

``KNOWN_FAILURES`` are seeds of the list that fail because of a diagnosed production bug not
fixed yet (``KNOWN_BUGS`` says which, where, and the fix). They still run and must still fail:
the stage fails on any other failing seed, and also when a known one starts passing, so that
whoever fixes the bug moves its seeds to ``REGRESSION_SEEDS``.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from pathlib import Path

from tests.sim.membership import PROCEDURES
from tests.sim.simulator import (
    Simulator,
    run_checked,
    scenario,
    swarm,
    trace_digest,
    without_membership,
)

SEEDS_FILE = Path(__file__).with_name("seeds.txt")
WORKERS = int(os.environ.get("SIM_JOBS", "2"))
"""Processes for the seeds (``make sim JOBS=N``); two keep ``make test`` within budget."""

REGRESSION_SEEDS: dict[int, str] = {}
"""Seeds that once failed: they run on every ``make test`` whatever seeds are selected."""

REGRESSION_SEEDS_WITHOUT_MEMBERSHIP: dict[int, str] = {
    # Liveness, raftd.core.bootstrap: a node that was blank while the cluster formed (it crashed
    # while probing) came back catching up; then another member was wiped and came back
    # catching up too; fewer than a majority could vote and no leader was ever elected. Fixed
    # by letting a catching-up voter vote under Raft._catch_up_vote_ok's conditions.
    1446: "no convergence in 3000 ticks",
}
"""Regression seeds found before membership changes existed, run without them."""

KNOWN_BUGS: dict[str, str] = {
    "B1": "raftd/server.py Server._is_peer drops every datagram from a node that is neither in "
          "the receiver's [cluster] members nor in its current configuration. A node joining "
          "(configured with the initial voters, as the README's add-node example), or a member "
          "that lost its disk, knows only the initial voters: when the leader is a node added "
          "later, its MsgApp/MsgHeartbeat/MsgSnap are dropped (not_a_member) forever, so the "
          "node never catches up, and once it is a voter the cluster may need its vote in vain. "
          "Fix: accept any sender while the node is blank, probing, catching up or not a member "
          "of its own configuration (the cluster secret still authenticates peers). "
          "Reproduced by test_scenarios.test_a_node_joins_while_the_leader_was_added_later.",
    "B2": "raftd/core/raft.py Raft._handle_vote_request grants a vote only when promotable(), "
          "i.e. when the node sees itself as a voter. A learner whose promotion committed but "
          "is not applied on it yet (its commit index is not durable: 0 after a restart) "
          "refuses every vote, and a cluster that needs it (two voters; or a majority without "
          "its leader) never elects anyone. etcd lets such a node vote (raft.go, Step, "
          "MsgVote: 'learners must be allowed to cast votes'): a candidate counts only its own "
          "voters. Fix: grant on `not self.catching_up and not self.probing`, keep "
          "promotable() for campaigning. Reproduced by "
          "test_scenarios.test_a_voter_promoted_unawares_votes.",
    "B3": "raftd/core/raft.py Raft._maybe_promote_learner promotes an auto-promote learner once "
          "match_index + promote_lag_entries >= last_index: with the default lag (1000) and a "
          "short log a learner with match_index 0, blank and still catching up, is promoted at "
          "its first heartbeat answer. A catching-up voter cannot vote (bootstrap rule), so a "
          "one-node cluster grown to two deadlocks when the leader restarts. Fix: also require "
          "match_index >= commit_index and an entry of the leader's term (match_index >= the "
          "first index of the current term), so that the learner leaves catching-up at once. "
          "Reproduced by test_scenarios.test_a_learner_is_promoted_only_once_caught_up.",
    "B4": "raftd/core/raft.py Raft._hand_off_and_step_down: removing the leader of a two-voter "
          "cluster, the leader applies the change, sends MsgTimeoutNow and steps down; the "
          "remaining voter has not learned that the removal committed, so it campaigns under "
          "the old configuration and needs the removed node's vote, which never comes once the "
          "operator stopped it (as the README says): no leader, ever. Fix: MsgTimeoutNow "
          "carries the leader's commit index and the target campaigns only after applying up "
          "to it; or answer remove-node and step down only once the remaining voters "
          "acknowledged a commit index that covers the change. Reproduced by "
          "test_scenarios.test_remove_the_leader_of_two_voters_and_stop_it.",
    "B5": "raftd/snapshotter.py Snapshotter (and Replica._meta_at_applied, for snapshot save) "
          "writes raft.conf_state() as the configuration of a snapshot at the applied index. "
          "Since a restart starts in the configuration applied last (confstate), a node that "
          "restarted from an older snapshot has a configuration ahead of its applied index "
          "until it re-applies its log: a snapshot taken meanwhile pairs index i with the "
          "configuration of a later index, and a follower that installs it applies the "
          "configuration entries after i twice (seed 867 outside the list: a learner listed "
          "before it was added). Fix: take no snapshot while applied_index < "
          "storage.conf_index(), or keep the configuration as of the applied index.",
}
"""Production bugs the simulation found and that are not fixed yet: id -> where and the fix."""

KNOWN_FAILURES: dict[int, str] = {
    14: "B2", 16: "B1", 20: "B1+B2", 21: "B1", 25: "B1", 26: "B1",
    28: "B2", 42: "B2", 43: "B2+B3", 50: "B1", 51: "B1+B2", 52: "B1",
    54: "B1", 55: "B1+B2", 57: "B1", 69: "B1+B2", 72: "B1+B2", 76: "B1",
    84: "B1+B2", 86: "B2+B3", 96: "B1+B2", 104: "B2+B3", 114: "B1+B2", 119: "B1",
    120: "B4", 121: "B1+B2", 144: "B1", 162: "B2", 164: "B1+B2", 167: "B1+B2",
    168: "B2+B3", 188: "B1+B2", 195: "B1+B2", 200: "B1", 203: "B1", 206: "B4",
    208: "B4", 231: "B1+B2", 237: "B1", 242: "B2+B3", 250: "B1", 253: "B1",
    258: "B2+B3", 284: "B2+B3", 285: "B1", 289: "B2+B3", 296: "B1+B2",
}
"""Seeds of ``seeds.txt`` that fail because of bugs of ``KNOWN_BUGS`` (seed -> their ids)."""


def selected_seeds() -> list[int]:
    count = os.environ.get("SIM_SEEDS")
    if count:
        start = int(os.environ.get("SIM_START", "1"))
        return list(range(start, start + int(count)))
    return [int(line) for line in SEEDS_FILE.read_text().split()]


def _run(job: tuple[int, bool]) -> tuple[int, str | None]:
    return run_checked(*job)


def test_seeds() -> None:
    seeds = selected_seeds()
    jobs = ([(s, True) for s in sorted(set(seeds) | set(REGRESSION_SEEDS))]
            + [(s, False) for s in sorted(REGRESSION_SEEDS_WITHOUT_MEMBERSHIP)])
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        failures = {
            seed: failure
            for seed, failure in pool.imap_unordered(_run, jobs, chunksize=2)
            if failure is not None
        }
    unexpected = sorted(s for s in failures if s not in KNOWN_FAILURES)
    fixed = sorted(s for s in KNOWN_FAILURES if s in seeds and s not in failures)
    assert not unexpected, (
        f"{len(unexpected)} of {len(jobs)} seeds failed: {unexpected}\n\n"
        + "\n\n".join(failures[s] for s in unexpected)
    )
    assert not fixed, (
        f"seeds {fixed} of KNOWN_FAILURES now pass ({sorted({KNOWN_FAILURES[s] for s in fixed})}"
        " fixed?): move them to REGRESSION_SEEDS, and drop the bug from KNOWN_BUGS when none "
        "of its seeds fails any more"
    )


def test_known_failures_name_known_bugs() -> None:
    named = {bug for bugs in KNOWN_FAILURES.values() for bug in bugs.split("+")}
    assert named <= set(KNOWN_BUGS), named - set(KNOWN_BUGS)


def test_a_seed_replays_identically() -> None:
    """Same seed, same trace, byte for byte (no clock, no set order, no global rng)."""
    seed = 5  # five nodes, crashes, partitions, lossy links
    assert trace_digest(seed) == trace_digest(seed)


def test_different_seeds_differ() -> None:
    assert trace_digest(1) != trace_digest(2)


def test_swarm_turns_every_fault_on_and_off() -> None:
    """Over the seed list, each fault is on in some scenarios and off in others."""
    drawn = [scenario(seed)[0] for seed in selected_seeds()]
    features = {
        "three nodes": [o.nodes == 3 for o in drawn],
        "five nodes": [o.nodes == 5 for o in drawn],
        "one node": [o.nodes == 1 for o in drawn],
        "loss": [o.network.loss_max > 0 for o in drawn],
        "duplication": [o.network.duplicate > 0 for o in drawn],
        "reordering": [o.network.reorder for o in drawn],
        "partitions": [bool(o.partition_modes) for o in drawn],
        "crashes": [o.crash_rate > 0 for o in drawn],
        "wipes": [o.wipe_rate > 0 for o in drawn],
        "blackouts": [o.cluster_crash_rate > 0 for o in drawn],
        "clock jitter": [o.tick_skip > 0 for o in drawn],
        "pauses": [o.pause_rate > 0 for o in drawn],
        "turn per message": [o.turn_per_message for o in drawn],
        "pipelined writes": [o.workload.pipeline > 1 for o in drawn],
        "snapshots": [o.snapshot_every > 0 for o in drawn],
        "leadership transfers": [o.transfer_rate > 0 for o in drawn],
        "small datagrams": [o.max_datagram_bytes < 1400 for o in drawn],
        "membership changes": [o.membership.rate > 0 for o in drawn],
        "removed nodes left running": [o.membership.keep_removed > 0.5 for o in drawn],
        "promotion only when fully caught up": [
            o.membership.promote_lag_entries == 0 for o in drawn],
        **{f"procedure {p}": [p in o.membership.procedures for o in drawn]
           for p in PROCEDURES},
    }
    for name, on in features.items():
        assert any(on) and not all(on), f"{name}: on in {sum(on)} of {len(on)} seeds"


def test_a_run_starts_blank_and_commits() -> None:
    """Every node starts from an empty data dir: the fresh-cluster bootstrap runs each time."""
    sim = Simulator(3)
    assert all(
        n.storage is not None and n.storage.initial_state()[0] is None
        for n in sim.nodes.values()
    )
    result = sim.run()
    assert result.committed > 0 and result.leaders


def test_membership_changes_are_drawn_last() -> None:
    """Without its membership changes a seed's scenario is exactly what ``swarm`` alone draws,
    so the scenarios (and regression seeds) from before membership changes keep replaying."""
    for seed in selected_seeds()[:50]:
        options, _ = scenario(seed)
        assert without_membership(options) == swarm(random.Random(seed))

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

REGRESSION_SEEDS: dict[int, str] = {
    # Safety (B8): a stale candidate won a term another leader held with the vote of a node its
    # own configuration had removed. Fixed: a node outside its own configuration never votes
    # (which is what makes seeds 231 and 289 of the list wait: KNOWN_BUGS B7).
    5237: "leaders in term",
    # raftd/snapshotter.py: after a restart (configuration applied last restored from
    # confstate) a snapshot taken before re-applying the log paired index i with a later
    # configuration. Fixed: no snapshot while applied_index < storage.conf_index().
    # (Seeds of seeds.txt fixed at the same time, B1-B4 of that sweep: a joining node heard
    # only initial members; a promoted-unawares learner refused to vote; a blank learner was
    # promoted; the last voter of two never learned that the leader had removed itself.)
    867: "the configuration of its snapshot",
}
"""Seeds that once failed: they run on every ``make test`` whatever seeds are selected."""

REGRESSION_SEEDS_WITHOUT_MEMBERSHIP: dict[int, str] = {}
"""Regression seeds found before membership changes existed, run without them."""

KNOWN_BUGS: dict[str, str] = {
    # None of these fails a seed of seeds.txt; each names seeds of 1..10000 that fail at
    # 0aee1c8 (python -m tests.sim --seed S -v replays one).
    "B7": "Liveness, raftd/core/raft.py + raftd/replica.py: a node acts under the configuration "
          "it applied last, though its log may hold later configuration entries: the commit "
          "index is not durable and only a leader teaches it again. Shrunk to one or two "
          "voters, the voter that must lead does not know it: a learner promoted unawares (it "
          "cannot campaign) or a voter whose configuration still counts a removed, stopped "
          "node; the nodes that know (removed ones, learners) never campaign nor pass on their "
          "commit index. Also Raft._hand_off_and_step_down / Replica: the removed leader "
          "answers remove-node once the survivor leads, though the survivor may still count "
          "the removed node and so can never commit (seed 2411: stopped as the README says, "
          "nothing ever commits again). Seeds 581 769 895 924 1124 1134 1604 1980 2411 2617 "
          "4075 6365 6470 7136 9231 9278 9356 9517 9731. Fix: count votes and campaign under "
          "the latest configuration in the log, applied or not (thesis 4.1), or persist the "
          "commit index (entries up to confstate's index are known committed) and re-apply up "
          "to it before campaigning; a node that its applied configuration excludes sends "
          "MsgTimeoutNow with its commit index to that configuration's voters when it hears no "
          "leader; answer remove-node only once a remaining voter applied the change.",
    "B9": "Liveness (and a safety risk), raftd/core/raft.py Progress of a re-added node: after "
          "the README's rejoin (remove-node, wipe, start blank under the same id, add-node) "
          "acknowledgements and heartbeat answers the old incarnation sent before it stopped "
          "arrive after the re-add: the leader takes the blank node for caught up "
          "(match_index 11, catching_up=False) and promotes it at once (seeds 966 6983, "
          "also 4003 4202); with two voters nothing commits again once the leader restarts. "
          "Counted toward commit, such phantom acks could commit an entry a majority does not "
          "hold. Fix: carry the sender's incarnation (the authenticated transport's per-boot "
          "epoch) into the core and ignore a re-added peer's messages from an older one, or "
          "never re-add a removed id (a new id per replacement, as etcd).",
    "B10": "Liveness, raftd/replica.py: a removed node that keeps running still takes client "
           "reads, forwards them to the leader it remembers and waits to apply the read index, "
           "which it never will (nobody replicates to it): each such attempt costs the client "
           "the full request timeout. Seed 7106: a read bounces between two removed nodes and "
           "a blank one for 3000 ticks. Fix: a node that its applied configuration does not "
           "list answers client requests at once with a redirect to the leader it knows (or "
           "an error naming it removed).",
}
"""Production bugs the simulation found and that are not fixed yet: id -> where and the fix."""

KNOWN_FAILURES: dict[int, str] = {231: "B7", 289: "B7"}
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

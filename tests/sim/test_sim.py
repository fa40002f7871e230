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
Slow disks are drawn after them, from a stream of their own: a seed whose draw leaves them off
runs exactly as it did before they existed.

``KNOWN_FAILURES`` are seeds of the list that fail because of a diagnosed production bug not
fixed yet (``KNOWN_BUGS`` says which, where, and the fix). They still run and must still fail:
the stage fails on any other failing seed, and also when a known one starts passing, so that
whoever fixes the bug moves its seeds to ``REGRESSION_SEEDS``.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest

from tests.sim.membership import PROCEDURES
from raftd.core import ConfState, Entry
from tests.sim.checker import SafetyChecker, Violation
from tests.sim.simulator import (
    NO_SLOW_DISK,
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
SWEEP: dict[str, float] = {}
"""What ``test_seeds`` ran (seeds, seconds), for the summary line (tests/sim/conftest.py)."""

REGRESSION_SEEDS: dict[int, str] = {
    # Safety (linearizability): a leader that removed itself (still leading while it hands
    # over) took its one remaining voter for itself and released reads alone, while that
    # voter, cut off, already led a later term. Fixed: only a leader that is its own sole
    # voter skips the ReadIndex heartbeat round.
    28654: "read of",
    # Safety (B8): a stale candidate won a term another leader held with the vote of a node its
    # own configuration had removed. Fixed: a node outside its own configuration never votes.
    5237: "leaders in term",
    # raftd/snapshotter.py: after a restart (configuration applied last restored from
    # confstate) a snapshot taken before re-applying the log paired index i with a later
    # configuration. Fixed: no snapshot while applied_index < storage.conf_index().
    # (Seeds of seeds.txt fixed at the same time, B1-B4 of that sweep: a joining node heard
    # only initial members; a promoted-unawares learner refused to vote; a blank learner was
    # promoted; the last voter of two never learned that the leader had removed itself.)
    867: "the configuration of its snapshot",
    # Liveness (B7): the voters a removal left waited under the old configuration (the commit
    # index is not durable) while only the removed nodes knew it committed. Fixed: a restart
    # commits up to the configuration applied last; a node that hears no leader shares its
    # commit index (MsgCommitHint); no campaign while a committed change is unapplied.
    # (Seeds 231 and 289 of seeds.txt failed the same way.)
    2411: "no convergence",
    # Liveness (B9): acks of a removed node's old incarnation, in flight when the README's
    # rejoin re-added it blank, got the blank learner promoted. Fixed: Progress.added_at.
    966: "no convergence",
    2617: "no convergence",
    # Liveness: a transfer in flight sent TimeoutNow before the ack that carried it committed
    # the leader's own removal; the survivor counted the removed node, which answered
    # remove-node on the term rise and was stopped. Fixed: TimeoutNow after the commit; the
    # answer waits until a remaining voter reports it applied the removal.
    14218: "no convergence",
    # Liveness: a voter that never saw its own re-adding (its applied configuration leaves it
    # out) refused every vote (the B8 rule), and no majority remained without it. Fixed: it
    # votes for a candidate whose configuration is later than its own (MsgVote.conf_version).
    19951: "no convergence",
    # The simulator's fault model: a learner lost its disk while its promotion was committing,
    # leaving two voters, one blank (the documented wait for the operator). The simulator now
    # counts such a learner as a voter when it decides on disk loss.
    13842: "no convergence",
    # Liveness: remove-node n2 was answered once the leader applied it; the operator stopped
    # n2, the leader lost its disk before the others learned the commit, and they still
    # counted n2. Fixed: a removal is answered once a majority of the new configuration
    # reported it applied the change.
    36653: "no convergence",
    # The simulator's bound: faults stalled the cluster through the whole safety phase, and
    # one client at issue_rate 0.15 needed more than liveness_ticks for its 160 requests. The
    # bound now adds the clients' backlog (Workload.backlog_ticks).
    40135: "no convergence",
    # Liveness (B11): a leader that removed itself handed over and answered once ONE remaining
    # voter applied the removal; that voter lost its disk, and the voter left with data, not
    # knowing the removal committed, still counted the (wiped) removed node. Fixed: it hands
    # over and answers once a majority of the remaining voters applied it.
    40356: "no convergence",
    # Liveness: a leader answered a retried remove-node "not a member" the moment it applied
    # the removal (its own); the operator wiped the node, and the one voter left had not
    # learnt the commit. Fixed: a leader refuses every change (conf_change_in_progress) until
    # a majority applied the last one, and one that removed itself takes no change at all.
    2303: "no convergence",
    3413: "no convergence",
    # Crash: a pre-candidate learnt from a commit hint that its own removal committed, applied
    # it as a candidate and won: become_leader had no progress for itself. Fixed: a change of
    # voters ends a campaign.
    2446: "KeyError",
    # The simulator's fault model: the leader that removed itself (the committed configuration
    # no longer listed it) lost its disk while the one voter left, restarted, had not learnt
    # that the removal committed and still counted it. Until a majority of the new voters
    # applied a change, disk loss now respects both configurations (voter_sets).
    2946: "no convergence",
    # The same rule, and a crash: the two voters that applied a promotion crashed with the
    # confstate write torn, and the leader then lost its disk. A node's applied configuration
    # counts as unknown while it is down, and as its disk has it once it restarts.
    3977: "no convergence",
    # The same rule for "no other member without data": a node just removed lost its disk,
    # then a voter did, and the voters still under the previous configuration counted both.
    28751: "no convergence",
    29310: "no convergence",
}
"""Seeds that once failed: they run on every ``make test`` whatever seeds are selected."""

REGRESSION_SEEDS_WITHOUT_MEMBERSHIP: dict[int, str] = {}
"""Regression seeds found before membership changes existed, run without them."""

KNOWN_BUGS: dict[str, str] = {}
"""Production bugs the simulation found and that are not fixed yet: id -> where and the fix.
(B7, B9 and B10 of the 10,000-seed sweep at 0aee1c8, and B11 of the sweep from 40001, are
fixed: see REGRESSION_SEEDS and the scenarios of test_scenarios.py.)"""

KNOWN_FAILURES: dict[int, str] = {}
"""Seeds of ``seeds.txt`` that fail because of bugs of ``KNOWN_BUGS`` (seed -> their ids)."""


def selected_seeds() -> list[int]:
    count = os.environ.get("SIM_SEEDS")
    if count:
        start = int(os.environ.get("SIM_START", "1"))
        return list(range(start, start + int(count)))
    return [int(line) for line in SEEDS_FILE.read_text().split()]


def _run(job: tuple[int, bool]) -> tuple[int, str | None]:
    return run_checked(*job)


# A sweep's budget grows with its seeds (a second each, ten times what one takes here): the
# suite's 600 s would cut `make sim SEEDS=10000` short.
@pytest.mark.timeout(600 + len(selected_seeds()))
def test_seeds() -> None:
    seeds = selected_seeds()
    jobs = ([(s, True) for s in sorted(set(seeds) | set(REGRESSION_SEEDS))]
            + [(s, False) for s in sorted(REGRESSION_SEEDS_WITHOUT_MEMBERSHIP)])
    started = time.monotonic()
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        failures = {
            seed: failure
            for seed, failure in pool.imap_unordered(_run, jobs, chunksize=2)
            if failure is not None
        }
    SWEEP.update(seeds=len(jobs), seconds=time.monotonic() - started)
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
        "slow fsyncs": [o.slow_disk.slow > 0 for o in drawn],
        "fsync stalls": [o.slow_disk.stall > 0 for o in drawn],
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


def test_membership_changes_and_slow_disks_are_drawn_last() -> None:
    """Without its membership changes and slow disks a seed's scenario is exactly what
    ``swarm`` alone draws, so the scenarios (and regression seeds) from before them keep
    replaying."""
    for seed in selected_seeds()[:50]:
        options, _ = scenario(seed)
        alone = replace(without_membership(options), slow_disk=NO_SLOW_DISK)
        assert alone == swarm(random.Random(seed))


def test_log_matching_is_checked_at_every_write() -> None:
    checker = SafetyChecker(ConfState(voters=("n1", "n2")))
    checker.on_append("n1", [Entry(term=1, index=1), Entry(term=2, index=2, data=b"a")], 0)
    checker.on_append("n2", [Entry(term=2, index=2, data=b"a")], 1)  # the same entry
    with pytest.raises(Violation, match="log matching"):
        checker.on_append("n2", [Entry(term=2, index=2, data=b"b")], 1)
    with pytest.raises(Violation, match="log matching"):
        checker.on_append("n2", [Entry(term=2, index=2, data=b"a")], 0)

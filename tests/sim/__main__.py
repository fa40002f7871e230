"""``python -m tests.sim``: replay one seed (``--seed S [-v]``) or sweep many (``--seeds N``).

A sweep runs seeds ``start .. start+N-1`` on ``--jobs`` processes and prints the failures, the
throughput in seeds per second and per hour, and totals over the passing seeds (entries
committed, crashes, wipes, membership procedures and configuration changes, datagrams of
removed nodes and how many raised a member's term, slow fsyncs); a replay with ``-v`` prints
the readable trace (ticks, messages, role changes, crashes, partitions, slow fsyncs, client
requests and the daemon's own log lines).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys
import time
from collections import Counter
from dataclasses import asdict

from tests.sim.simulator import Simulator, without_membership

TOTALS = ("committed", "messages", "crashes", "wipes", "snapshots", "procedures",
          "conf_changes", "stray", "disruptions", "not_a_member", "slow_syncs")
"""The ``RunResult`` counts a sweep adds up."""


def _quiet_logs() -> None:
    """The daemon logs role changes and torn WAL tails; a sweep only wants failures."""
    logging.getLogger("raftd").setLevel(logging.CRITICAL)


def _run(seed: int) -> tuple[int, str | None, dict[str, int]]:
    _quiet_logs()
    try:
        result = Simulator(seed).run()
    except AssertionError as e:
        return seed, str(e), {}
    counts = asdict(result)
    return seed, None, {name: counts[name] for name in TOTALS}


def replay(seed: int, verbose: bool, membership: bool) -> int:
    if verbose:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("       [%(name)s] %(message)s"))
        raftd_log = logging.getLogger("raftd")
        raftd_log.addHandler(handler)
        raftd_log.setLevel(logging.INFO)
        raftd_log.propagate = False
    else:
        _quiet_logs()
    sim = Simulator(seed, trace=print if verbose else None,
                    adjust=None if membership else without_membership)
    print(f"seed {seed}: {sim.options.describe()}")
    try:
        result = sim.run()
    except AssertionError as e:
        print(f"FAILED {e}")
        return 1
    print(f"seed {seed}: ok in {result.ticks} ticks; {result.committed} entries committed; "
          f"{len(result.leaders)} terms with a leader; {result.messages} messages; "
          f"{result.crashes} crashes; {result.wipes} wipes; {result.snapshots} snapshots; "
          f"{result.procedures} membership procedures, {result.conf_changes} configuration "
          f"changes, final members {','.join(result.members)}; {result.stray} datagrams from "
          f"removed nodes ({result.disruptions} raised a term); {result.not_a_member} dropped "
          f"as from no member; {result.slow_syncs} slow fsyncs")
    return 0


def sweep(start: int, count: int, jobs: int) -> int:
    seeds = range(start, start + count)
    began = time.perf_counter()
    failures: list[tuple[int, str]] = []
    totals: Counter[str] = Counter()
    with multiprocessing.Pool(jobs) as pool:
        for seed, failure, counts in pool.imap_unordered(_run, seeds, chunksize=4):
            totals.update(counts)
            if failure is not None:
                failures.append((seed, failure))
                print(failure, flush=True)
    elapsed = time.perf_counter() - began
    print("totals over the passing seeds: "
          + ", ".join(f"{name.replace('_', ' ')} {totals[name]}" for name in TOTALS))
    print(f"{count} seeds from {start} in {elapsed:.1f} s on {jobs} jobs: "
          f"{count / elapsed:.1f} seeds/s ({count * 3600 / elapsed:.0f} per hour); "
          f"{len(failures)} failed"
          + (f": {sorted(s for s, _ in failures)}" if failures else ""))
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--seed", type=int, help="replay this seed")
    which.add_argument("--seeds", type=int, metavar="N", help="run N seeds")
    parser.add_argument("-v", "--verbose", action="store_true", help="print the trace")
    parser.add_argument("--start", type=int, default=1, help="first seed of --seeds")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-membership", action="store_true",
                        help="replay the seed's scenario without its membership changes (as "
                        "it ran before they existed: they are drawn last)")
    args = parser.parse_args(argv)
    if args.seed is not None:
        return replay(args.seed, args.verbose, not args.no_membership)
    return sweep(args.start, args.seeds, args.jobs)


if __name__ == "__main__":
    sys.exit(main())

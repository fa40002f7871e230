"""Federated learning on real processes: the figures of the issue's closing note.

    .venv/bin/python -m tests.perf.federated_bench [--rounds 30] [--out results.json]

1. Accuracy per round of IID and non-IID (Dirichlet alpha 0.5) shards, 3 nodes and 5
   participants, next to the same model trained centrally on the union of the shards.
   (Each round's accuracy is the participants' test of that round's global model on the
   held-out test set, which all of them share here.)
2. Re-election time when the aggregator dies, median of 5 SIGKILLs: until another node
   leads, and until its aggregator record is committed and it accepts updates.
3. Bytes replicated per round: log bytes a follower wrote per round (its WAL's growth),
   and the size of the global model in each round command.
4. Per-node aggregation share over the run (``rotate_after_s`` small, so leadership rotates;
   rotation is by time, so the shares of rounds are fair only over several terms each).

Not collected by pytest (no ``test_`` prefix); prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack

from raftctl.fl.demo import FederatedRun
from raftd.storage.wal import valid_end

POLL_S = 0.005


def ask(endpoint: str) -> dict[str, Any]:
    """One ``fl_status`` to one node on a fresh connection, no redirect followed."""
    host, port = endpoint.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1.0) as sock:
            sock.sendall(msgpack.packb({"type": "fl_status"}))
            unpacker = msgpack.Unpacker(raw=False)
            while chunk := sock.recv(65536):
                unpacker.feed(chunk)
                for answer in unpacker:
                    return dict(answer)
    except OSError:
        pass
    return {}


def wal_bytes(data_dir: Path) -> int:
    """Bytes of log records in ``data_dir`` (segments are preallocated: not their size)."""
    return sum(valid_end(p.read_bytes()) for p in data_dir.glob("*.wal"))


def training(rounds: int, alpha: float | None, rotate_after_s: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fl-bench-") as tmp, \
            FederatedRun(Path(tmp), servers=3, participants=5, rounds=rounds, alpha=alpha,
                         rotate_after_s=rotate_after_s, fsync=True) as run:
        run.start()
        st = run.status()
        leader = run.aggregator_index(st)
        while leader is None or st["round"] < 1:
            st = run.next_change(st)
            leader = run.aggregator_index(st)
        # A follower's log growth from here on is what replication carried per round.
        follower = next(i for i in range(len(run.cluster)) if i != leader)
        data_dir = run.base_dir / "cluster" / "data" / f"n{follower + 1}"
        start_round, start_bytes = st["round"], wal_bytes(data_dir)
        started = time.monotonic()
        while st["round"] < rounds:
            st = run.next_change(st)
        seconds = time.monotonic() - started
        end_bytes = wal_bytes(data_dir)
        run.wait_participants(60)
        _, model = run.global_model()
        final = run.status()
        records = run.seen.records
        per_round = [records[r].get("accuracy") for r in range(1, rounds + 1)]
        per_round[-1] = model.evaluate(run.test.X, run.test.y)
        return {
            "alpha": alpha,
            "sizes": run.split.sizes,
            "accuracy_per_round": per_round,
            "centralized": run.centralized(),
            "seconds_per_round": seconds / max(1, rounds - start_round),
            "wal_bytes_per_round": (end_bytes - start_bytes) / max(1, rounds - start_round),
            "model_bytes": records[rounds]["model_bytes"],
            "aggregations": final["aggregations"],
            "aggregator_terms": len(run.seen.aggregators),
        }


def reelection(trials: int) -> dict[str, Any]:
    """SIGKILL the aggregator ``trials`` times (restarting it after each) while 5
    participants train; time until a new leader, and until it accepts updates."""
    with tempfile.TemporaryDirectory(prefix="fl-bench-") as tmp, \
            FederatedRun(Path(tmp), servers=3, participants=5, rounds=10_000,
                         rotate_after_s=3600, fsync=True) as run:
        run.start()
        leader_s: list[float] = []
        accepting_s: list[float] = []
        for _ in range(trials):
            st = run.status()
            while st["round"] < 2 or not st.get("accepting") or run.aggregator_index(st) is None:
                st = run.next_change(st)
            victim = run.aggregator_index(st)
            assert victim is not None
            term = st["aggregator"]["term"]
            killed = time.monotonic()
            run.cluster.kill(victim)
            survivors = [e for i, e in enumerate(run.cluster.endpoints) if i != victim]
            elected = None
            while True:
                answers = [ask(e) for e in survivors]
                now = time.monotonic()
                # Only the leader answers fl_status itself (followers redirect to it).
                leading = [a for a in answers if a.get("type") == "result" and not a["stale"]]
                if elected is None and leading:
                    elected = now - killed
                if any((a.get("aggregator") or {}).get("term", 0) > term and a["accepting"]
                       for a in leading):
                    accepting_s.append(now - killed)
                    leader_s.append(elected if elected is not None else now - killed)
                    break
                time.sleep(POLL_S)
            run.cluster.start(victim)
            # Serving and following the leader again: the next kill must not also wait for
            # this node's start (3 nodes: the two left must both vote).
            deadline = time.monotonic() + 30
            while ask(run.cluster.endpoints[victim]).get("type") != "redirect":
                assert time.monotonic() < deadline, "the restarted node did not come back"
                time.sleep(POLL_S)
        return {"new_leader_s": leader_s, "accepting_s": accepting_s,
                "median_new_leader_s": statistics.median(leader_s),
                "median_accepting_s": statistics.median(accepting_s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=30)
    # 30 rounds last about 1.5 s here: rotating every 0.15 s gives each node several terms.
    parser.add_argument("--rotate-after", type=float, default=0.15)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    results = {
        "iid": training(args.rounds, None, args.rotate_after),
        "non_iid_alpha_0.5": training(args.rounds, 0.5, args.rotate_after),
        "reelection": reelection(args.trials),
    }
    for name in ("iid", "non_iid_alpha_0.5"):
        r = results[name]
        print(f"{name}: centralized {r['centralized']:.4f}; federated per round:")
        print("  " + " ".join(f"{a:.3f}" if a is not None else "-"
                              for a in r["accuracy_per_round"]))
        print(f"  {r['seconds_per_round'] * 1000:.0f} ms/round, follower WAL "
              f"{r['wal_bytes_per_round']:.0f} B/round, model {r['model_bytes']} B, "
              f"rounds per node {r['aggregations']} over {r['aggregator_terms']} aggregator "
              "terms")
    e = results["reelection"]
    print(f"aggregator SIGKILL: new leader after {e['median_new_leader_s'] * 1000:.0f} ms, "
          f"accepting updates after {e['median_accepting_s'] * 1000:.0f} ms (median of "
          f"{len(e['accepting_s'])})")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

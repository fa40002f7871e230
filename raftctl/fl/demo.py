"""``raftctl fl demo``: federated learning on this machine, round by round.

`FederatedRun` starts the pieces as real processes (a `LocalCluster` with ``[federated]``
enabled, and one ``raftctl fl participate`` process per shard) and watches them through the
client protocol as an observer that registered a key of its own, so it can fetch and test the
global model. The demo, the integration test and the benchmark in tests/perf all drive it.
Only processes it started are ever signalled, by their handles.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import numpy as np
from rich.console import Console

from raftctl.blocking import Client
from raftctl.errors import RaftctlError
from raftctl.localcluster import LocalCluster, scratch_dir
from raftd.federated import crypto
from raftd.federated.coordinator import MAX_STATUS_ROUNDS, model_context
from raftd.federated.data import Shard, Split, write_split
from raftd.federated.model import Model, ModelSpec, decode_params

WAIT_S = 2.0
CENTRALIZED_EPOCHS = 50
LR = 0.5


class DemoFailed(Exception):
    """The run did not behave (a deadline passed); the message names the logs to read."""


def centralized_accuracy(spec: ModelSpec, shards: list[Shard], test: Shard, *,
                         epochs: int = CENTRALIZED_EPOCHS, lr: float = LR, seed: int = 0) -> float:
    """The baseline: the same model trained on the union of every shard, in one place."""
    X = np.concatenate([s.X for s in shards])
    y = np.concatenate([s.y for s in shards])
    model = Model(spec)
    model.fit(X, y, epochs, lr, seed=seed)
    return model.evaluate(test.X, test.y)


@dataclass(slots=True)
class Observed:
    """What the observer saw: every round record once, and every aggregator record."""

    records: dict[int, dict[str, Any]] = field(default_factory=dict)
    aggregators: list[tuple[int, str]] = field(default_factory=list)
    """(term, node) of each aggregator record seen, in order."""
    rounds_seen: list[int] = field(default_factory=list)
    """The round number of every status read, in order (never decreasing, we check)."""


class FederatedRun:
    """A cluster, its participants and an observer; use as a context manager."""

    def __init__(self, base_dir: Path, *, servers: int, participants: int, rounds: int,
                 alpha: float | None = None, model: str = "softmax", rotate_after_s: float = 3.0,
                 min_updates: int | None = None, round_timeout_s: float = 5.0,
                 epochs: int = 10, fsync: bool = False) -> None:
        self.base_dir = base_dir
        self.rounds = rounds
        self.split: Split = write_split(base_dir / "data", participants, alpha=alpha)
        self.shards = [Shard.load(p) for p in self.split.shards]
        self.test = Shard.load(self.split.test)
        self.spec = ModelSpec(kind=model)
        self.epochs = epochs
        self.cluster = LocalCluster(servers, base_dir / "cluster", fsync=fsync, federated={
            "enabled": True, "rotate_after_s": rotate_after_s,
            "min_updates": min_updates or participants, "round_timeout_s": round_timeout_s})
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[IO[bytes]] = []
        self.client = Client(self.cluster.endpoints, timeout=WAIT_S + 5)
        self.observer = f"observer-{os.getpid()}"
        self.key = crypto.generate_private_key()
        self.seen = Observed()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in self.logs:
            log.close()
        self.client.close()
        self.cluster.stop_all()

    @property
    def participant_logs(self) -> list[Path]:
        return [self.base_dir / f"participant{k}.log" for k in range(1, len(self.shards) + 1)]

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, register the observer, then start the participants."""
        self.cluster.start_all()
        try:
            self.cluster.wait_for_leader(timeout)
        except TimeoutError as exc:  # it names the node logs: keep them (run_demo)
            raise DemoFailed(f"{exc}; {self.where()}") from None
        self._until(timeout, "the observer to register", lambda: self.client.request({
            "type": "fl_register", "participant": self.observer,
            "public_key": crypto.public_der(self.key)}))
        endpoints = ",".join(self.cluster.endpoints)
        for k, (shard, log_path) in enumerate(zip(self.split.shards, self.participant_logs,
                                                  strict=True), start=1):
            log = open(log_path, "ab")  # noqa: SIM115 - closed in close(), after the process
            self.logs.append(log)
            self.procs.append(subprocess.Popen(
                [sys.executable, "-m", "raftctl", "-e", endpoints, "-o", "json", "fl",
                 "participate", "--data", str(shard), "--test", str(self.split.test),
                 "--name", f"p{k}", "--rounds", str(self.rounds), "--model", self.spec.kind,
                 "--epochs", str(self.epochs), "--seed", str(k)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.base_dir))

    def _until(self, timeout: float, what: str, call: Any) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return call()
            except RaftctlError as exc:
                if time.monotonic() > deadline:
                    raise DemoFailed(f"timed out waiting for {what}: {exc}; {self.where()}") \
                        from None
                time.sleep(0.1)

    def where(self) -> str:
        return f"logs in {self.base_dir}"

    def status(self, wait: tuple[int, int | None] | None = None) -> dict[str, Any]:
        """The leader's ``fl_status``, recorded in `seen` (waits like a participant can)."""
        # Every round record there is (up to the server's bound), not only the last ten: the
        # observer may be stuck on a dead node while rounds go by, and must still see each.
        body: dict[str, Any] = {"type": "fl_status", "recent": MAX_STATUS_ROUNDS}
        if wait is not None:
            body.update(wait_s=WAIT_S, round=wait[0], term=wait[1])
        st: dict[str, Any] = self._until(30.0, "fl_status", lambda: self.client.request(body))
        if st.get("stale"):
            time.sleep(0.05)
            return st
        seen = self.seen
        seen.rounds_seen.append(st["round"])
        for record in st.get("rounds") or []:
            seen.records[record["round"]] = record
        agg = st.get("aggregator")
        if agg is not None and (not seen.aggregators or seen.aggregators[-1] != (agg["term"],
                                                                                   agg["node"])):
            seen.aggregators.append((agg["term"], agg["node"]))
        return st

    def next_change(self, st: dict[str, Any]) -> dict[str, Any]:
        """The status once the round or the aggregator changed (or after ~2 s)."""
        agg = st.get("aggregator")
        return self.status((st["round"], agg["term"] if agg is not None else None))

    def aggregator_index(self, st: dict[str, Any]) -> int | None:
        agg = st.get("aggregator")
        if agg is None or agg["node"] not in self.cluster.endpoints:
            return None
        return self.cluster.endpoints.index(agg["node"])

    def global_model(self) -> tuple[int, Model]:
        """The current global model, fetched sealed to the observer's key."""
        response = self._until(30.0, "fl_model", lambda: self.client.request(
            {"type": "fl_model", "participant": self.observer}))
        if response.get("success") is False:
            raise DemoFailed(f"fl_model refused: {response.get('message')}; {self.where()}")
        rnd = response["round"]
        plain = crypto.open_sealed(self.key, response["sealed"], model_context(self.observer, rnd))
        return rnd, Model(self.spec, decode_params(plain))

    def wait_participants(self, timeout: float) -> list[int]:
        """Exit statuses of the participants, once all have exited."""
        deadline = time.monotonic() + timeout
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(max(0.0, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                raise DemoFailed(f"participants still running after {timeout:g}s; "
                                 f"{self.where()}") from None
        return codes

    def centralized(self) -> float:
        return centralized_accuracy(self.spec, self.shards, self.test)


def run_demo(console: Console, *, servers: int, participants: int, rounds: int,
             alpha: float | None, model: str, rotate_after_s: float,
             kill_at: int | None) -> None:
    """The ``raftctl fl demo`` command (see its help)."""
    with scratch_dir("rafty-fl-demo-", keep_on=(DemoFailed,)) as tmp:
        run = FederatedRun(tmp, servers=servers, participants=participants, rounds=rounds,
                           alpha=alpha, model=model, rotate_after_s=rotate_after_s)
        with run:
            _demo(console, run, kill_at)


def _demo(console: Console, run: FederatedRun, kill_at: int | None) -> None:
    split = "IID" if run.split.classes.count(10) == len(run.shards) else "non-IID"
    console.print(f"==> {len(run.cluster)} raftd nodes, {len(run.shards)} participants "
                  f"({split} shards of {', '.join(map(str, run.split.sizes))} digits), "
                  f"{run.rounds} rounds of {run.spec.kind} regression", style="bold cyan")
    run.start()
    console.print(f"{'ROUND':>5}  {'AGGREGATOR':<21} {'TERM':>4}  {'UPDATES':>7}  "
                  f"{'ACCURACY':>8}  {'ROUND TIME':>10}", style="bold")
    deadline = time.monotonic() + 60 + 10 * run.rounds
    printed = 0
    killed: tuple[int, float, int] | None = None
    """(term, time, node index) of the aggregator killed, until another takes over."""
    st = run.status()
    while printed < run.rounds:
        if time.monotonic() > deadline:
            raise DemoFailed(f"training did not reach round {run.rounds}; {run.where()}")
        st = run.next_change(st)
        agg = st.get("aggregator")
        if killed is not None and agg is not None and agg["term"] > killed[0]:
            console.print(f"       {agg['node']} took over as aggregator "
                          f"{time.monotonic() - killed[1]:.2f}s after the kill; training goes on; "
                          "restarting the killed node", style="green")
            run.cluster.start(killed[2])
            killed = None
        final = None
        for rnd in range(printed + 1, st["round"] + 1):
            record = run.seen.records.get(rnd)
            if record is None:
                continue
            accuracy = record.get("accuracy")
            if accuracy is None and rnd == run.rounds:
                final = final or run.global_model()
                accuracy = final[1].evaluate(run.test.X, run.test.y)
            if accuracy is None:
                break  # known once the participants have tested this round's model
            before = run.seen.records.get(rnd - 1)
            took = (record["committed_ms"] - before["committed_ms"]) / 1000 if before else 0.0
            console.print(f"{rnd:>5}  {record['node']:<21} {record['term']:>4}  "
                          f"{record['updates']:>7}  {accuracy:>8.4f}  {took:>9.2f}s")
            printed = rnd
        if kill_at is not None and st["round"] >= kill_at and agg is not None:
            index = run.aggregator_index(st)
            if index is not None:
                run.cluster.kill(index)
                console.print(f"==> SIGKILL the aggregator {agg['node']} in round "
                              f"{st['round'] + 1}", style="bold red")
                killed, kill_at = (agg["term"], time.monotonic(), index), None
    run.wait_participants(30)
    _, final_model = run.global_model()
    federated = final_model.evaluate(run.test.X, run.test.y)
    central = run.centralized()
    shares = run.status().get("aggregations", {})
    console.print()
    console.print("rounds aggregated per node: " + ", ".join(
        f"{node} {count}" for node, count in shares.items()))
    console.print(f"federated accuracy {federated:.4f}   centralized (all shards in one "
                  f"place) {central:.4f}", style="bold")

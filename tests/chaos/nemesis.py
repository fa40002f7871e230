"""The nemesis: process and network faults on a running chaos cluster, one fault at a time.

A seeded schedule draws a fault kind, injects it, holds it for a random while, heals it, and
rests before the next one; now and then a second fault joins the first before both are healed
(`Nemesis.run`). Holding a fault for a drawn time is the schedule itself, not a wait
for a condition; ``stop`` interrupts it at once. Kinds:

- ``kill``, ``kill-leader``: SIGKILL a node (fsync'd state survives), restart it at heal.
- ``kill-majority``: SIGKILL three of five, the leader among them: no quorum until the heal,
  after which every acknowledged write must still be there.
- ``kill-all``: SIGKILL every node, then restart them all (a whole-cluster reboot).
- ``pause``, ``pause-leader``: SIGSTOP, then SIGCONT at heal. A paused leader still believes
  it leads when it resumes, the case that breaks reads served from a lease.
- ``isolate``, ``isolate-leader``: the node's link goes down (clients cannot reach it either).
- ``partition-leader-minority``: the leader and one other node against the other three.
- ``partition-random``: a random 3/2 split.
- ``bridge``: two halves that each see the middle node but not each other (non-transitive).
- ``leader-deaf``: every other node's frames to the leader are lost, while the leader's still
  arrive: followers keep hearing heartbeats, and only CheckQuorum can depose it.
- ``impair``: netem delay and loss on one node.

Network kinds need namespaces, ``impair`` also needs netem; without them those kinds are
left out and ``skipped`` records why, for the test to report.
"""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from raftctl.errors import RaftctlError
from raftctl.survey import collect_status
from tests.chaos.cluster import ChaosCluster
from tests.chaos.netns import Network

Heal = Callable[[], None]

PROCESS_KINDS = ("kill", "kill-leader", "kill-majority", "kill-all", "pause", "pause-leader")
NETWORK_KINDS = (
    "isolate",
    "isolate-leader",
    "partition-leader-minority",
    "partition-random",
    "bridge",
    "leader-deaf",
)
NETEM_KINDS = ("impair",)
LEADER_KINDS = frozenset(
    {"kill-leader", "pause-leader", "isolate-leader", "partition-leader-minority", "leader-deaf"}
)
_STATUS_TIMEOUT = 1.0


class Nemesis:
    def __init__(
        self,
        cluster: ChaosCluster,
        network: Network | None,
        rng: random.Random,
        log_path: Path,
        *,
        network_reason: str | None,
        netem_reason: str | None,
        hold: tuple[float, float] = (0.5, 4.0),
        rest: tuple[float, float] = (0.5, 2.0),
        overlap: float = 0.25,
    ) -> None:
        self.cluster = cluster
        self.network = network
        self.rng = rng
        self.hold = hold
        self.rest = rest
        self.overlap = overlap
        self.compound = 0
        """Faults injected while another one was still in force."""
        self.counts: Counter[str] = Counter()
        """Faults injected, by kind."""
        self.skipped: dict[str, str] = {}
        """Kinds left out, with the reason."""
        self.kinds = list(PROCESS_KINDS)
        for kinds, reason in ((NETWORK_KINDS, network_reason), (NETEM_KINDS, netem_reason)):
            for kind in kinds:
                if reason is None and network is not None:
                    self.kinds.append(kind)
                else:
                    self.skipped[kind] = reason or "no network namespaces"
        self.log_path = log_path
        self._t0 = time.monotonic()

    def note(self, text: str) -> None:
        """A line of the fault log, stamped with seconds since the nemesis started."""
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"{time.monotonic() - self._t0:9.3f} {text}\n")

    def run(self, stop: threading.Event, until: float) -> None:
        """Inject faults until the monotonic time ``until`` or ``stop``; heals what is left.

        Now and then a fault stays while the next one is injected (a pause during a partition,
        one partition replaced by another, ...): at most two at once, then both are healed.
        """
        active: list[Heal] = []

        def wait(span: tuple[float, float]) -> None:
            stop.wait(max(0.0, min(self.rng.uniform(*span), until - time.monotonic())))

        try:
            while not stop.is_set() and time.monotonic() < until:
                kind = self.rng.choice(self.kinds)
                heal = self.inject(kind)
                if heal is not None:
                    self.counts[kind] += 1
                    if active:
                        self.compound += 1
                    active.append(heal)
                wait(self.hold)
                if len(active) >= 2 or self.rng.random() >= self.overlap:
                    while active:
                        active.pop()()
                    wait(self.rest)
        finally:
            while active:
                active.pop()()

    def inject(self, kind: str) -> Heal | None:
        """Inject one fault of ``kind``; returns how to heal it (None: not possible now)."""
        n = len(self.cluster)
        running = [i for i in range(n) if self.cluster.running(i) and i not in self.cluster.stopped]
        if not running:
            return None
        if kind == "kill-all":
            return self._kill(kind, running)
        if kind == "kill-majority":
            leader = self.leader()
            pool = [i for i in running if i != leader]
            first = [leader] if leader is not None and leader in running else []
            return self._kill(kind, first + self.rng.sample(pool, min(len(pool), 3 - len(first))))
        if kind in LEADER_KINDS:
            victim = self.leader()
            if victim is None or victim not in running:
                self.note(f"{kind}: no running leader known, skipped")
                return None
        else:
            victim = self.rng.choice(running)
        if kind in ("kill", "kill-leader"):
            return self._kill(kind, [victim])
        if kind in ("pause", "pause-leader"):
            self.cluster.send(victim, signal.SIGSTOP)
            self.note(f"{kind}: SIGSTOP node {victim + 1} (pid {self.cluster.pid(victim)})")

            def resume() -> None:
                self.cluster.send(victim, signal.SIGCONT)
                self.note(f"heal {kind}: SIGCONT node {victim + 1}")

            return resume
        network = self.network
        assert network is not None
        if kind in ("isolate", "isolate-leader"):
            network.isolate(victim)
            self.note(f"{kind}: link of node {victim + 1} down")
        elif kind == "partition-leader-minority":
            others = [i for i in range(n) if i != victim]
            minority = {victim, self.rng.choice(others)}
            groups = [minority, set(range(n)) - minority]
            network.partition(groups)
            self.note(f"{kind}: {_show(groups)}")
        elif kind == "partition-random":
            minority = set(self.rng.sample(range(n), 2))
            groups = [minority, set(range(n)) - minority]
            network.partition(groups)
            self.note(f"{kind}: {_show(groups)}")
        elif kind == "bridge":
            order = self.rng.sample(range(n), n)
            middle, half = order[0], (n - 1) // 2
            left, right = set(order[1 : 1 + half]), set(order[1 + half :])
            network.partition([left, right])
            self.note(f"{kind}: {_show([left, right])} both see node {middle + 1}")
        elif kind == "leader-deaf":
            for i in range(n):
                if i != victim:
                    network.cut(i, victim)
            self.note(f"{kind}: nothing reaches node {victim + 1}, its own frames go out")
        elif kind == "impair":
            delay, loss = self.rng.choice((10, 50, 100)), self.rng.choice((5.0, 20.0, 40.0))
            network.impair(victim, delay_ms=delay, loss_percent=loss)
            self.note(f"{kind}: node {victim + 1} delay {delay}ms loss {loss}%")
        else:
            raise ValueError(f"unknown fault kind {kind!r}")

        def heal_network() -> None:
            network.heal()
            self.note(f"heal {kind}: network healed")

        return heal_network

    def _kill(self, kind: str, victims: list[int]) -> Heal:
        for i in victims:
            self.cluster.send(i, signal.SIGKILL)
        self.note(f"{kind}: SIGKILL nodes {', '.join(str(i + 1) for i in victims)}")

        def restart() -> None:
            for i in victims:
                self.cluster.start(i)
            self.note(f"heal {kind}: restarted nodes {', '.join(str(i + 1) for i in victims)}")

        return restart

    def heal_all(self) -> None:
        """Resume paused nodes, start dead ones, heal the network."""
        for i in range(len(self.cluster)):
            self.cluster.send(i, signal.SIGCONT)
            self.cluster.start(i)
        if self.network is not None:
            self.network.heal()
        self.note("heal all")

    def leader(self) -> int | None:
        """The node leading in the highest term any reachable node reports, or None."""
        try:
            rows = asyncio.run(collect_status(self.cluster.endpoints, _STATUS_TIMEOUT))
        except RaftctlError:
            return None
        leaders = [r for r in rows if r.reachable and r.role == "leader" and r.term is not None]
        if not leaders:
            return None
        top = max(leaders, key=lambda r: r.term or 0)
        if top.address not in self.cluster.endpoints:
            return None
        return self.cluster.endpoints.index(top.address)


def _show(groups: list[set[int]]) -> str:
    return " | ".join(",".join(str(i + 1) for i in sorted(g)) for g in groups)

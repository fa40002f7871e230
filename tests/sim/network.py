"""SimNetwork: the datagram network between simulated replicas, with its faults.

Theory of operation. Each directed path (src, dst) has its own delivery heap keyed by
``(due_tick, seq)``; ``seq`` is a network-wide send counter, so ties break in send order and
one seed gives one delivery order. A message is encoded with the production peer codec when it
is sent and decoded when it is delivered: the bytes in flight are exactly what a UDP datagram
would carry, so every run also exercises ``raftd.wire.peer``.

Faults, per path and drawn once from the network's own rng: loss (0-30%), duplication (a second
copy with its own delay) and a delay range in ticks. With ``reorder`` off a path is FIFO (a copy
is never due before one sent earlier), which is the gentler network most LANs give; with it on,
the random delays reorder freely. Cuts are directed links checked at *delivery*, so a partition
also swallows what was already in flight, as a real one does.

A message larger than a datagram (a ``MsgSnap``, a single large entry) travels in production as
a fragmented transfer (``raftd.wire.fragments``) that retransmits lost fragments itself; here it
is one unit, lost or not as a whole. A snapshot's transfer also has an *outcome* the sender
must hear (``RawNode.report_snapshot``), so a ``MsgSnap`` is never dropped silently: it is
delivered with ``ok=False`` when lost or cut, and the simulator reports that to its sender.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from raftd.core import Message
from raftd.core.messages import MsgSnap, MsgTimeoutNow
from raftd.wire.peer import decode_peer, encode_peer

Path = tuple[str, str]


@dataclass(frozen=True, slots=True)
class NetworkOptions:
    loss_max: float
    """Each path's loss probability is drawn uniformly from [0, loss_max]."""
    duplicate: float
    delay: tuple[int, int]
    """Inclusive range of ticks a datagram spends in flight (at least 1)."""
    reorder: bool


class Delivery(NamedTuple):
    msg: Message
    ok: bool
    """False only for a snapshot transfer that failed (lost or cut)."""


class SimNetwork:
    def __init__(
        self,
        nodes: Sequence[str],
        options: NetworkOptions,
        rng: random.Random,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self._rng = rng
        self._trace = trace
        self._nodes = list(nodes)
        self._paths: list[Path] = [(a, b) for a in nodes for b in nodes if a != b]
        self._heaps: dict[Path, list[tuple[int, int, bytes, bool]]] = {
            p: [] for p in self._paths
        }
        """Per path: (due tick, send seq, encoded message, is a snapshot transfer)."""
        self._last_due: dict[Path, int] = dict.fromkeys(self._paths, 0)
        self.loss: dict[Path, float] = {
            p: rng.uniform(0.0, options.loss_max) for p in self._paths
        }
        self.duplicate = options.duplicate
        self._delay = options.delay
        self._cut: set[Path] = set()
        self._seq = 0
        self.sent = 0
        self.delivered = 0
        self.timeout_now_due = 0
        """Latest tick a MsgTimeoutNow is due: until then a leadership transfer may land."""

    def add_node(self, node: str) -> None:
        """A node joins the network (a new member): its paths get their own loss, drawn now."""
        others, self._nodes = self._nodes, [*self._nodes, node]
        for path in [p for other in others for p in ((other, node), (node, other))]:
            self._paths.append(path)
            self._heaps[path] = []
            self._last_due[path] = 0
            self.loss[path] = self._rng.uniform(0.0, self.options.loss_max)

    # -- faults ------------------------------------------------------------------------------
    def cut(self, links: Iterable[Path]) -> None:
        for link in links:
            self._cut.add(link)

    def heal(self) -> None:
        self._cut.clear()

    def is_cut(self, src: str, dst: str) -> bool:
        return (src, dst) in self._cut

    def calm(self, max_jitter: int) -> None:
        """Stop loss and duplication (the liveness phase). Delays stay, they are not faults,
        but their spread is cut to ``max_jitter`` ticks: Raft promises a stable leader only
        when a heartbeat round trip fits well within the election timeout (§5.6), and with
        a wider spread runs of slow answers can legitimately make a leader's CheckQuorum
        fail (seed 103426: one-way delays of 3-11 ticks, 18 ticks without an answer)."""
        for p in self._paths:
            self.loss[p] = 0.0
        self.duplicate = 0.0
        lo, hi = self._delay
        self._delay = (lo, min(hi, lo + max_jitter))

    # -- traffic -----------------------------------------------------------------------------
    def send(self, messages: Sequence[Message], now: int) -> None:
        rng = self._rng
        lo, hi = self._delay
        for m in messages:
            data = encode_peer(m)
            path = (m.src, m.dst)
            self.sent += 1
            snap = isinstance(m, MsgSnap)
            if not snap and rng.random() < self.loss[path]:
                if self._trace is not None:
                    self._trace(f"  lost {describe(m)}")
                continue
            copies = 2 if self.duplicate and not snap and rng.random() < self.duplicate else 1
            for _ in range(copies):
                due = now + rng.randint(lo, hi)
                if not self.options.reorder:
                    due = max(due, self._last_due[path])
                    self._last_due[path] = due
                self._seq += 1
                heapq.heappush(self._heaps[path], (due, self._seq, data, snap))
                if isinstance(m, MsgTimeoutNow):
                    self.timeout_now_due = max(self.timeout_now_due, due)

    def deliver(self, now: int) -> list[Delivery]:
        """Every message due by ``now`` on an uncut path, in (due, send order), and the
        outcome of every snapshot transfer due by then."""
        due: list[tuple[int, int, bytes, bool]] = []
        failed: set[int] = set()
        for path, heap in self._heaps.items():
            if not heap or heap[0][0] > now:
                continue
            cut = path in self._cut
            while heap and heap[0][0] <= now:
                item = heapq.heappop(heap)
                if item[3]:
                    if cut or self._rng.random() < self.loss[path]:
                        failed.add(item[1])
                    due.append(item)
                elif not cut:
                    due.append(item)
        due.sort()
        self.delivered += len(due)
        return [Delivery(decode_peer(data), seq not in failed) for _, seq, data, _ in due]

    def in_flight(self) -> int:
        return sum(len(h) for h in self._heaps.values())


def describe(m: Message) -> str:
    """One stable line per message for traces (etcd's describe.go, in miniature)."""
    name = type(m).__name__
    head = f"{m.src}->{m.dst} {name} t{m.term}"
    fields = []
    for slot in type(m).__slots__:
        value = getattr(m, slot)
        if slot == "entries":
            value = "[" + ",".join(f"{e.index}/{e.term}:{len(e.data)}b" for e in value) + "]"
        elif slot == "snapshot":
            meta = value.meta
            value = f"{meta.index}/{meta.term}:{len(value.data)}b voters={','.join(meta.conf_state.voters)}"
        fields.append(f"{slot}={value}")
    return head + (" " + " ".join(fields) if fields else "")

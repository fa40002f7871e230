"""An in-memory, fully deterministic network of RawNodes for scenario tests of the core.

``Network.stabilize()`` handles every Ready (persist into MemoryStorage, deliver messages) until
nothing moves, the way etcd-io/raft's interaction tests do. Links can be cut per direction.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any

from raftd.core import (
    ConfChange,
    Config,
    ConfState,
    EntryType,
    HardState,
    MemoryStorage,
    Message,
    RawNode,
    StateRole,
)
from raftd.core.state import Entry, Snapshot


class Node:
    def __init__(self, id: str, voters: tuple[str, ...], *, seed: int, blank: bool,
                 pre_vote: bool, check_quorum: bool) -> None:
        self.id = id
        self.storage = MemoryStorage(ConfState(voters=voters))
        if not blank:
            self.storage.set_hard_state(HardState())
        self.config = Config(
            id=id, election_ticks=(10, 20), heartbeat_ticks=2, rng=random.Random(seed),
            pre_vote=pre_vote, check_quorum=check_quorum, max_msg_bytes=4096, max_inflight=8,
        )
        self.node = RawNode(self.config, self.storage)
        self.applied: list[Entry] = []
        self.read_states: list[tuple[int, int]] = []
        self.dropped_reads: list[int] = []
        self.installed: list[Snapshot] = []

    @property
    def raft(self):  # noqa: ANN201 - test convenience
        return self.node.raft

    def wipe(self) -> None:
        """Lose everything, as if the data dir were deleted."""
        voters = self.storage.initial_state()[1].voters
        self.storage = MemoryStorage(ConfState(voters=voters))
        self.restart()

    def restart(self) -> None:
        """Lose volatile state, keep what was persisted."""
        self.node = RawNode(self.config, self.storage)
        self.applied = []


class Network:
    def __init__(self, n: int, *, seed: int = 1, blank: bool = False, pre_vote: bool = True,
                 check_quorum: bool = True, ids: tuple[str, ...] | None = None) -> None:
        """``n`` nodes named n1..n``n``, or named ``ids`` when given (``n`` must match)."""
        ids = ids or tuple(f"n{i}" for i in range(1, n + 1))
        assert len(ids) == n
        self.nodes = {
            i: Node(i, ids, seed=seed * 100 + k, blank=blank, pre_vote=pre_vote,
                    check_quorum=check_quorum)
            for k, i in enumerate(ids)
        }
        self.queue: deque[Message] = deque()
        self.cut: set[tuple[str, str]] = set()
        self.down: set[str] = set()
        self.drop_types: set[type] = set()
        self.log: list[str] = []

    def add_node(self, id: str) -> Node:
        """Start a blank node whose configured members are the current voters."""
        voters = next(iter(self.nodes.values())).raft.voters
        node = Node(id, voters, seed=len(self.nodes) + 1000, blank=True, pre_vote=True,
                    check_quorum=True)
        self.nodes[id] = node
        return node

    def __getitem__(self, id: str) -> Node:
        return self.nodes[id]

    def isolate(self, id: str) -> None:
        for other in self.nodes:
            if other != id:
                self.cut.add((id, other))
                self.cut.add((other, id))

    def heal(self) -> None:
        self.cut.clear()

    def send(self, m: Message) -> None:
        if (m.src, m.dst) in self.cut or m.dst in self.down or type(m) in self.drop_types:
            return
        self.queue.append(m)

    def handle_ready(self, n: Node) -> bool:
        moved = False
        while n.node.has_ready():
            moved = True
            rd = n.node.ready()
            if rd.hard_state is not None:
                n.storage.set_hard_state(rd.hard_state)
            if rd.snapshot is not None:
                n.storage.apply_snapshot(rd.snapshot)
                n.installed.append(rd.snapshot)
            n.storage.append(rd.entries)
            for m in rd.messages:
                self.send(m)
            for m in rd.after_persist:
                self.send(m)
            for e in rd.committed_entries:
                if e.type is EntryType.CONF_CHANGE:
                    conf = n.node.apply_conf_change(ConfChange.decode(e.data), e.index)
                    n.storage.set_conf_state(conf, e.index)  # durable, as raftd.replica does
            n.applied.extend(rd.committed_entries)
            n.read_states.extend((r.index, r.context) for r in rd.read_states)
            n.dropped_reads.extend(rd.dropped_reads)
            n.node.advance(rd)
        return moved

    def stabilize(self, limit: int = 10_000) -> None:
        for _ in range(limit):
            moved = False
            for id in sorted(self.nodes):
                if id not in self.down:
                    moved |= self.handle_ready(self.nodes[id])
            while self.queue:
                m = self.queue.popleft()
                if m.dst in self.down or (m.src, m.dst) in self.cut:
                    continue
                self.nodes[m.dst].node.step(m)
                moved = True
            if not moved:
                return
        raise AssertionError("network did not stabilize")

    def tick(self, id: str, n: int = 1) -> None:
        for _ in range(n):
            self.nodes[id].node.tick()
            self.stabilize()

    def tick_all(self, n: int = 1) -> None:
        for _ in range(n):
            for id in sorted(self.nodes):
                if id not in self.down:
                    self.nodes[id].node.tick()
            self.stabilize()

    def campaign(self, id: str) -> None:
        self.nodes[id].node.campaign()
        self.stabilize()

    def leaders(self) -> list[str]:
        return [i for i, n in self.nodes.items()
                if i not in self.down and n.raft.role is StateRole.LEADER]

    def propose(self, id: str, data: bytes) -> int:
        index = self.nodes[id].node.propose(data)
        self.stabilize()
        return index


class Recorder(Network):
    """The harness network, also recording every message sent; messages on the paths in
    ``held`` wait in ``waiting``, undelivered, until ``release``."""

    def __init__(self, n: int, **kwargs: Any) -> None:
        super().__init__(n, **kwargs)
        self.sent: list[Message] = []
        self.held: set[tuple[str, str]] = set()
        self.waiting: list[Message] = []

    def send(self, m: Message) -> None:
        self.sent.append(m)
        if (m.src, m.dst) in self.held:
            self.waiting.append(m)
            return
        super().send(m)

    def release(self, count: int | None = None) -> None:
        """Deliver the first ``count`` held messages (all by default), then stabilize."""
        count = len(self.waiting) if count is None else count
        released, self.waiting = self.waiting[:count], self.waiting[count:]
        self.queue.extend(released)
        self.stabilize()


def log_of(net: Network, id: str) -> list[tuple[int, int]]:
    s = net[id].storage
    return [(e.index, e.term) for e in s.entries(s.first_index(), s.last_index() + 1)]

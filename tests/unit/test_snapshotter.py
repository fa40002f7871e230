"""Snapshotter's trigger policy (``Snapshotter.due``), on a real DiskStorage in a tmp dir.

A snapshot is due once the log since the last snapshot holds at least ``every_entries``
entries *and* at least max(``min_log_bytes``, size of the last snapshot file) bytes. A
single-node Replica applies client writes one turn at a time, so each condition can be watched
turning true on the exact write that satisfies it. Snapshots are taken by
``Snapshotter.start`` itself (its worker thread, then ``record_snapshot`` on the loop).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from raftd.core import Config, ConfState, Message, RawNode, StateRole
from raftd.replica import Replica
from raftd.snapshotter import SnapshotPolicy, Snapshotter
from raftd.statemachine import SET, DictStateMachine, encode_command
from raftd.storage.disk import DiskStorage
from raftd.storage.files import OsFileSystem

DEADLINE = 30.0
"""Generous bound on one snapshot write in a worker thread (a hang fails, never a slow run)."""


class _Outbox:
    def __init__(self) -> None:
        self.responses: dict[Hashable, dict[str, Any]] = {}

    def send(self, messages: Sequence[Message]) -> None:
        assert not messages, "a single-node cluster has no one to talk to"

    def respond(self, token: Hashable, response: dict[str, Any]) -> None:
        self.responses[token] = response

    def respond_capture(self, token: Hashable, meta: object, capture: object) -> None:
        raise AssertionError("no snapshot was asked for")


class Node:
    """One real node without the asyncio runtime: DiskStorage, RawNode, Replica, Snapshotter."""

    def __init__(self, data_dir: Path, policy: SnapshotPolicy) -> None:
        fs = OsFileSystem()
        self.storage = DiskStorage(fs, str(data_dir), conf_state=ConfState(voters=("n1",)),
                                   fsync=False, segment_bytes=1 << 20)
        config = Config(id="n1", election_ticks=(10, 20), heartbeat_ticks=2,
                        rng=random.Random(1))
        self.replica = Replica(RawNode(config, self.storage), self.storage, DictStateMachine(),
                               max_entry_bytes=1 << 16, request_timeout_ticks=1000)
        self.fatal: list[BaseException] = []
        self.snapshotter = Snapshotter(self.replica, self.storage, fs, str(data_dir), policy,
                                       on_fatal=lambda _what, e: self.fatal.append(e),
                                       on_done=lambda _elapsed: None)
        self.out = _Outbox()
        self.writes = 0
        for _ in range(100):
            self.replica.tick(self.out)
            self.replica.process(self.out, 0)
            if self.replica.node.raft.role is StateRole.LEADER:
                break
        assert self.replica.node.raft.role is StateRole.LEADER

    @property
    def applied(self) -> int:
        return self.replica.node.raft.log.applied_index

    def write(self, key: str, value_bytes: int) -> None:
        """One client write, proposed, committed and applied as one entry in one turn."""
        self.writes += 1
        token = f"w{self.writes}"
        before = self.applied
        self.replica.submit_write(token, encode_command(SET, key, b"v" * value_bytes))
        self.replica.process(self.out, 0)
        assert self.out.responses[token]["type"] == "result"
        assert self.applied == before + 1

    def log_since_snapshot(self) -> tuple[int, int]:
        """Entries and bytes of the log since the last snapshot."""
        last = self.storage.snapshot_meta().index
        return self.applied - last, self.storage.log_bytes_since(last)

    def snapshot(self) -> None:
        """Take a snapshot through Snapshotter.start and wait for it to be recorded."""
        async def run() -> None:
            done = asyncio.Event()
            self.snapshotter.on_done = lambda _elapsed: done.set()
            self.snapshotter.start()
            assert not self.snapshotter.due(), "one snapshot at a time"
            await asyncio.wait_for(done.wait(), DEADLINE)

        asyncio.run(run())
        assert self.fatal == []
        assert self.storage.snapshot_meta().index == self.applied

    def close(self) -> None:
        self.storage.close()


MakeNode = Callable[..., Node]


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[MakeNode]:
    made: list[Node] = []

    def make(every_entries: int, min_log_bytes: int) -> Node:
        node = Node(tmp_path / f"n{len(made)}", SnapshotPolicy(every_entries, min_log_bytes,
                                                              trailing_entries=0))
        made.append(node)
        return node

    yield make
    for node in made:
        node.close()


def write_until_due(node: Node, key: str, value_bytes: int,
                    limit: int = 1000) -> tuple[int, int]:
    """Write until a snapshot is due; returns the log since the last snapshot (entries, bytes)
    as it was before the write that made it due (when it was not due yet)."""
    assert not node.snapshotter.due()
    for _ in range(limit):
        before = node.log_since_snapshot()
        node.write(key, value_bytes)
        if node.snapshotter.due():
            return before
    raise AssertionError(f"no snapshot due after {limit} writes: {node.log_since_snapshot()}")


def test_not_due_before_every_entries_however_many_bytes(make_node: MakeNode) -> None:
    node = make_node(every_entries=20, min_log_bytes=0)
    node.write("big", 4000)  # bytes are plenty from the start
    before, _ = write_until_due(node, "k", 10)
    entries, log_bytes = node.log_since_snapshot()
    assert (before, entries) == (19, 20)  # due at the threshold: "at least every_entries"
    assert log_bytes > 4000


def test_not_due_below_min_log_bytes_however_many_entries(make_node: MakeNode) -> None:
    node = make_node(every_entries=5, min_log_bytes=10_000)
    _, bytes_before = write_until_due(node, "k", 100)
    entries, log_bytes = node.log_since_snapshot()
    assert entries > 5 * 10  # the entry threshold was passed long before
    assert bytes_before < 10_000 <= log_bytes  # due on the write that crossed min_log_bytes


@pytest.mark.parametrize("state_bytes", [40_000, 1_000], ids=["large-state", "small-state"])
def test_after_a_snapshot_the_bar_is_the_larger_of_min_log_bytes_and_its_size(
    make_node: MakeNode, state_bytes: int
) -> None:
    """A large state is not rewritten for a few writes: after its snapshot, the log must grow
    by the snapshot's size; a small state falls back to min_log_bytes."""
    min_log_bytes = 5_000
    node = make_node(every_entries=5, min_log_bytes=min_log_bytes)
    for i in range(10):
        node.write(f"big{i}", state_bytes // 10)
    if not node.snapshotter.due():
        write_until_due(node, "k", 100)
    node.snapshot()
    size = node.storage.snapshot_size()
    assert (size > min_log_bytes) == (state_bytes > min_log_bytes)  # the case meant
    assert node.log_since_snapshot() == (0, 0)
    assert not node.snapshotter.due()

    bar = max(min_log_bytes, size)
    _, bytes_before = write_until_due(node, "k", 100)  # one key: the state does not grow
    entries, log_bytes = node.log_since_snapshot()
    assert entries > 5
    assert bytes_before < bar <= log_bytes  # due on the write that crossed the bar

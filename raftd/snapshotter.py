"""Snapshotter: decides when to snapshot and writes the snapshot off the event loop.

Policy: snapshot once the log since the last snapshot holds at least ``snapshot_every``
entries *and* at least max(``snapshot_min_log_bytes``, size of the last snapshot) bytes, so a
large state is not rewritten every few seconds for a handful of writes.

Mechanics: on the event loop, ``DictStateMachine.capture()`` freezes the current contents in
O(1) (``raftd.layered``: later writes go to an overlay; values are replaced, never mutated);
a worker thread serializes the frozen layer in chunks (each msgpack call holds the GIL only
briefly) straight into the snapshot file; back on the
loop, storage adopts the file and compacts the log, keeping ``trailing_entries`` entries so
followers slightly behind still get entries instead of a snapshot. One snapshot at a time. No
``fork()``: the process has threads (the executor, metrics), and uvloop's state would not
survive it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from raftd.core import SnapshotMeta
from raftd.replica import Replica
from raftd.statemachine import Capture
from raftd.storage import snapshots
from raftd.storage.disk import DiskStorage
from raftd.storage.files import FileSystem, FsyncError

log = logging.getLogger(__name__)

RETRY_AFTER_ERROR_S = 10.0


@dataclass(frozen=True, slots=True)
class SnapshotPolicy:
    every_entries: int
    min_log_bytes: int
    trailing_entries: int


class Snapshotter:
    def __init__(
        self,
        replica: Replica,
        storage: DiskStorage,
        fs: FileSystem,
        data_dir: str,
        policy: SnapshotPolicy,
        on_fatal: Callable[[str, BaseException], None],
        on_done: Callable[[float], None],
    ) -> None:
        self.replica = replica
        self.storage = storage
        self.fs = fs
        self.data_dir = data_dir
        self.policy = policy
        self.on_fatal = on_fatal
        self.on_done = on_done
        self.running = False
        self.not_before = 0.0
        self.count = 0

    def due(self) -> bool:
        if self.running:
            return False
        applied = self.replica.node.raft.log.applied_index
        last = self.storage.snapshot_meta().index
        if applied - last < self.policy.every_entries:
            return False
        if applied < self.storage.conf_index():
            return False  # re-applying after a restart: the configuration is ahead of applied
        needed = max(self.policy.min_log_bytes, self.storage.snapshot_size())
        return self.storage.log_bytes_since(last) >= needed and time.monotonic() >= self.not_before

    def start(self) -> None:
        """Capture the state now and write it in a worker thread."""
        started = time.monotonic()
        raft = self.replica.node.raft
        applied = raft.log.applied_index
        meta = SnapshotMeta(index=applied, term=raft.log.term(applied),
                            conf_state=raft.conf_state())
        capture = self.replica.sm.capture()  # O(1): the state machine freezes a layer
        self.running = True
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(
            None, snapshots.write, self.fs, self.data_dir, meta, capture.chunks()
        )
        future.add_done_callback(lambda f: self._finish(f, meta, capture, started))

    def _finish(
        self,
        future: asyncio.Future[snapshots.SnapshotFile],
        meta: SnapshotMeta,
        capture: Capture,
        started: float,
    ) -> None:
        self.running = False
        capture.release()  # also when the write failed before reading any chunk
        try:
            file = future.result()
        except FsyncError as e:
            self.on_fatal("writing a snapshot failed", e)
            return
        except OSError as e:
            log.error("writing the snapshot at index %d failed: %s; retrying later",
                      meta.index, e)
            self.not_before = time.monotonic() + RETRY_AFTER_ERROR_S
            return
        try:
            self.storage.record_snapshot(meta, file, trailing_entries=self.policy.trailing_entries)
        except Exception as e:  # noqa: BLE001 - compaction failing leaves the log unknown
            self.on_fatal("adopting the snapshot failed", e)
            return
        elapsed = time.monotonic() - started
        self.count += 1
        self.on_done(elapsed)
        log.info("snapshot at index %d (term %d): %d bytes in %.2f s; log compacted",
                 meta.index, meta.term, file.size, elapsed)

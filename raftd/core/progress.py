"""What the leader knows about each follower's log (Raft Figure 2 ``next_index``/``match_index``).

A follower is in one of three states:

- PROBE: the leader does not know where the logs diverge. It sends one MsgApp and then waits
  (``probe_sent``) for the answer or for the next heartbeat response before sending again,
  so a lost probe is retried once per heartbeat.
- REPLICATE: the logs match up to ``match_index``; the leader streams MsgApps optimistically,
  advancing ``next_index`` as it sends, bounded by the ``Inflights`` window. Datagrams may be
  lost: a gap makes the follower reject the next MsgApp (back to PROBE), and a lost tail is
  noticed when heartbeats come back without progress (``stalled_heartbeats``).
- SNAPSHOT: the entries the follower needs were compacted away; a snapshot is on its way and
  nothing else is sent until the follower acknowledges it or the runtime reports the transfer
  failed (``RawNode.report_snapshot``).
"""

from __future__ import annotations

import enum
from collections import deque

from raftd.core.types import Index


class ProgressState(enum.Enum):
    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """A bounded window of in-flight MsgApps, each remembered by its last index."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._last_indexes: deque[Index] = deque()

    def full(self) -> bool:
        return len(self._last_indexes) >= self.capacity

    def add(self, last_index: Index) -> None:
        self._last_indexes.append(last_index)

    def free_le(self, index: Index) -> None:
        """Forget every message acknowledged by an ack of ``index``."""
        q = self._last_indexes
        while q and q[0] <= index:
            q.popleft()

    def reset(self) -> None:
        self._last_indexes.clear()

    def __len__(self) -> int:
        return len(self._last_indexes)


class Progress:
    """Invariant: ``match_index < next_index``."""

    __slots__ = (
        "match_index",
        "next_index",
        "state",
        "probe_sent",
        "recent_active",
        "inflights",
        "stalled_heartbeats",
        "catching_up",
        "pending_snapshot",
        "added_at",
        "commit_sent",
    )

    def __init__(self, next_index: Index, max_inflight: int) -> None:
        self.match_index: Index = 0
        self.next_index: Index = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.recent_active = False
        self.inflights = Inflights(max_inflight)
        self.stalled_heartbeats = 0
        self.pending_snapshot: Index = 0
        self.catching_up = True
        """As the follower last said (heartbeat answers); until it says, assume it is."""
        self.added_at: Index = 0
        """For a learner: an index at or after the entry that added it. A re-added node's old
        incarnation (removed, wiped, started again under the same id) never held it, so acks
        and answers below it may be that incarnation's, still in flight (simulator B9)."""
        self.commit_sent: Index = 0
        """The commit index the last MsgApp to this node carried."""

    def become_snapshot(self, index: Index) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.inflights.reset()

    def become_probe(self) -> None:
        # After a snapshot the follower holds at least the snapshot's index.
        self.next_index = max(self.match_index, self.pending_snapshot) + 1
        self.pending_snapshot = 0
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflights.reset()

    def forget_acks(self) -> None:
        """The follower lost its data: count none of what it acknowledged. Probing goes on
        from ``next_index`` (its rejections lead back to what it holds); a snapshot in flight
        goes on too, its answer telling where the follower stands."""
        self.match_index = 0
        if self.state is not ProgressState.SNAPSHOT:
            next_index = self.next_index
            self.become_probe()
            self.next_index = next_index

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next_index = self.match_index + 1
        self.probe_sent = False
        self.inflights.reset()

    def paused(self) -> bool:
        if self.state is ProgressState.PROBE:
            return self.probe_sent
        if self.state is ProgressState.SNAPSHOT:
            return True
        return self.inflights.full()

    def sent(self, last_index: Index, count: int) -> None:
        """Record that a MsgApp carrying ``count`` entries up to ``last_index`` went out."""
        if self.state is ProgressState.REPLICATE:
            if count:
                self.next_index = last_index + 1
                self.inflights.add(last_index)
        else:
            self.probe_sent = True

    def maybe_update(self, index: Index) -> bool:
        """An ack of ``index``; False when it is stale (nothing new acknowledged)."""
        updated = index > self.match_index
        if updated:
            self.match_index = index
            self.probe_sent = False
            self.stalled_heartbeats = 0
        if self.next_index < index + 1:
            self.next_index = index + 1
        return updated

    def maybe_decrease_to(self, rejected: Index, hint: Index) -> bool:
        """A rejection of the MsgApp whose ``prev_log_index`` was ``rejected``.

        ``hint`` is the leader's guess (from the follower's conflict hint) of the last index that
        may match. False when the rejection is stale and must be ignored.
        """
        if self.state is ProgressState.SNAPSHOT:
            return False  # the snapshot's answer will tell us where the follower stands
        if self.state is ProgressState.REPLICATE:
            if rejected <= self.match_index:
                return False
            self.become_probe()
            self.next_index = max(self.match_index + 1, min(rejected, hint + 1))
            return True
        if self.next_index - 1 != rejected:
            return False
        self.next_index = max(min(rejected, hint + 1), self.match_index + 1)
        self.probe_sent = False
        return True

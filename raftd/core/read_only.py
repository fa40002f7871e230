"""ReadIndex rounds (Raft thesis §6.4): linearizable reads without writing to the log.

The leader records ``commit_index`` as a round's read index, then sends a heartbeat tagged with
the round number. Once a majority has answered a heartbeat of that round (or a later one, which
was also sent after the read arrived), the leader knows it was still leader when the read
arrived, so every read of that round and of all earlier rounds may be served as soon as
``applied_index >= read index``. The caller (``Raft``) holds reads back until an entry of the
leader's current term is committed, so ``commit_index`` is at least every entry a previous
leader may have committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from raftd.core.quorum import majority
from raftd.core.types import Index, NodeId


@dataclass(slots=True)
class ReadRequest:
    """A read from ``requester`` (the leader itself or a follower) tagged with its ``context``."""

    requester: NodeId
    context: int


@dataclass(slots=True)
class ReadRound:
    index: Index
    requests: list[ReadRequest]
    acks: set[NodeId] = field(default_factory=set)


class ReadOnly:
    def __init__(self) -> None:
        self._rounds: dict[int, ReadRound] = {}
        self._next_round = 1

    def add(self, index: Index, requests: list[ReadRequest], self_id: NodeId) -> int:
        number = self._next_round
        self._next_round += 1
        self._rounds[number] = ReadRound(index=index, requests=requests, acks={self_id})
        return number

    def recv_ack(self, src: NodeId, number: int, voters: tuple[NodeId, ...]) -> list[ReadRound]:
        """Record ``src``'s ack of round ``number``; return the rounds it releases, in order."""
        rnd = self._rounds.get(number)
        if rnd is None or src not in voters:
            return []
        rnd.acks.add(src)
        if sum(1 for v in voters if v in rnd.acks) < majority(len(voters)):
            return []
        released = [self._rounds.pop(n) for n in sorted(self._rounds) if n <= number]
        return released

    def last_round(self) -> int:
        """The newest round still waiting for acks (0: none). Periodic heartbeats carry it,
        so a round whose own heartbeats were lost is confirmed by the next ones."""
        return max(self._rounds, default=0)

    def pending_requests(self) -> list[ReadRequest]:
        return [r for n in sorted(self._rounds) for r in self._rounds[n].requests]

    def reset(self) -> None:
        self._rounds.clear()

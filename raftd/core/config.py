"""Core configuration: identities, timing in ticks, flow-control limits, feature flags."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from raftd.core.errors import ConfigError
from raftd.core.types import NodeId


@dataclass(slots=True, kw_only=True)
class Config:
    id: NodeId
    election_ticks: tuple[int, int] = (15, 30)
    """Election timeout is drawn uniformly from every integer tick in [lo, hi]."""
    heartbeat_ticks: int = 3
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    """Injected so that one seed gives one run; the runtime seeds it from os.urandom."""
    max_msg_bytes: int = 1 << 20
    """Entry bytes per MsgApp, so each MsgApp fits one datagram."""
    max_inflight: int = 256
    """MsgApps in flight per follower in the REPLICATE state."""
    max_apply_bytes: int = 64 << 20
    """Committed entry bytes handed out per Ready."""
    promote_lag_entries: int = 1000
    """A learner this close to the leader's last index is promoted automatically."""
    pre_vote: bool = True
    check_quorum: bool = True

    @property
    def lease_ticks(self) -> int:
        """Ticks after hearing from a leader during which (pre-)vote requests are ignored (the
        leader lease of thesis §4.2.3): the minimum election timeout less two ticks of slack,
        but longer than a heartbeat interval. The nodes' tick timers run out of phase and a
        heartbeat reaches them at slightly different times: without the slack, a node whose
        timer ran out at the minimum finds the others a tick short of it and is ignored, and
        the cluster waits for the next timer (4% of the elections of ``bench election``)."""
        return max(self.heartbeat_ticks + 1, self.election_ticks[0] - 2)

    def validate(self) -> None:
        lo, hi = self.election_ticks
        if not self.id:
            raise ConfigError("id must be a non-empty node id")
        if self.heartbeat_ticks < 1:
            raise ConfigError("heartbeat_ticks must be >= 1")
        if not (self.heartbeat_ticks < lo <= hi):
            raise ConfigError("election_ticks must satisfy heartbeat_ticks < lo <= hi")
        if self.max_inflight < 1 or self.max_msg_bytes < 1 or self.max_apply_bytes < 1:
            raise ConfigError("limits must be positive")

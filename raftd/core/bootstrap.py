"""How a node with an empty data dir joins safely: bootstrap a fresh cluster, or catch up.

A wiped node restarted under its old address looks exactly like a member of a brand-new
cluster: both have no hard state and no log. Treating it as new would be unsafe. It forgot its
votes (it could vote twice in a term) and its log (its vote could elect a leader that lacks
entries it had acknowledged and that were committed only thanks to that acknowledgement).

The rule:

1. A blank node first *probes*: every heartbeat interval it sends MsgProbe to the other voters
   of its initial configuration. It neither votes nor campaigns while probing.
2. If any answer comes from a node whose log holds an entry, or any leader contacts it, the
   cluster has progressed: the node becomes *catching up*. A catching-up node stores entries and
   acknowledges appends (those acknowledgements are true: its log is durable from now on) but
   never votes, pre-votes or campaigns. It leaves that state once its commit index, learned from
   a leader of term T, points at an entry of term T: that entry was committed by the leader of
   T, so every entry committed before T lies below it and is now in this node's log (leader
   completeness, Raft §5.4). Entries of T itself may lie beyond it, committed thanks to acks
   the former self sent this very leader (a snapshot of T can end before them: seed 65706).
   So the node also needs that leader's answer to a MsgProbe of its own: on a probe, a leader
   forgets the prober's acks and answers with its last index, which the node's commit index
   must reach. An ack of the former self still on the way may yet count, but only for an
   entry the leader had sent, so up to that last index. A catching-up node without such an
   answer for the current term (say, restarted while catching up) probes its leader on a
   heartbeat, at most once per election timeout. Once done, it records a vote for that leader
   in term T, so it cannot vote again in the one term it is sure to share with the cluster.
   There is deliberately no exception for a leaderless cluster: a blank node knows only its
   config file's members, not the current configuration, so any rule letting it vote before
   a leader reached it can elect a candidate that lacks committed entries (the simulator
   found one). The price: if the catching-up nodes are needed for a quorum (a late member and
   a wiped one in a 3-node cluster), no leader is elected until the operator intervenes
   (``raftd start --force-new-cluster`` on the node that holds the data).
3. If *every* other initial voter answers that it is blank or holds no entry, no entry was ever
   appended anywhere, so nothing can be lost: the node bootstraps as an ordinary follower. It
   adopts the highest term it heard and, if that term is above 0, records a vote for itself in
   it, so it never votes in a term in which its former self may already have voted.

Requiring every initial voter (not a majority) in step 3 is what makes a wipe safe even when the
only other holder of the committed entries is down: then the node simply waits. The cost is that
a brand-new cluster forms once every initial member has started once. The ``catching_up`` flag is
part of the durable hard state, so a restart in the middle of catching up resumes it.

Residual risk (documented, not closed): the wiped node's former self may have been in a term
greater than any term it hears of while catching up (it voted for a candidacy that then
vanished, or acked a leader that a partition keeps from it). Losing a disk is outside Raft's
fault model; this rule closes the cases that need only one such loss and a live leader, which
is what operators meet in practice.
"""

from __future__ import annotations

import enum

from raftd.core.messages import MsgProbeResp
from raftd.core.types import NodeId, Term


class ProbeOutcome(enum.Enum):
    WAIT = "wait"
    BOOTSTRAP = "bootstrap"
    CATCH_UP = "catch_up"


class Prober:
    """Collects MsgProbeResp from the other initial voters and decides the outcome."""

    def __init__(self, others: tuple[NodeId, ...]) -> None:
        self.others = others
        self.fresh: set[NodeId] = set()
        self.max_term: Term = 0

    def record(self, resp: MsgProbeResp) -> ProbeOutcome:
        if resp.src not in self.others:
            return ProbeOutcome.WAIT
        self.max_term = max(self.max_term, resp.term)
        if not resp.blank and resp.last_index > 0:
            return ProbeOutcome.CATCH_UP
        self.fresh.add(resp.src)
        if self.fresh >= set(self.others):
            return ProbeOutcome.BOOTSTRAP
        return ProbeOutcome.WAIT

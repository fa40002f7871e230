"""Membership changes: one server at a time, learner first (Raft thesis ch. 4; etcd's learners).

A new node joins as a *learner*: it receives the log but never votes and is not counted in any
quorum, so adding it cannot cost availability while it catches up. Once it is close to the
leader it is *promoted* to voter (automatically, unless it was added as a pinned learner).

When a change takes effect. A configuration entry takes effect when it is **applied** (after
commit), on every node, as in etcd. That is safe with single-server changes because the leader
(1) proposes a change only after an entry of its own term is committed, which rules out the
lost-change scenario of single-server changes described by Ongaro (raft-dev, 2015); and (2)
proposes it only when every earlier configuration entry is applied (``pending_conf_index``), so
at most one change is ever in flight and any two consecutive configurations differ by one
server: their majorities overlap, so two leaders can never be elected in one term. It also
waits until a majority of its voters reported they applied the last change (``conf_index``);
until then a change, even one refused as "not a member", is ``conf_change_in_progress``: a
retried remove-node told "not a member" lets the operator wipe the node, which is safe only
once enough voters know it is gone (simulator seed 2303).

Taking effect on apply has a price that the simulator found: a node's applied configuration
lags its log, and the commit index is not durable. Three rules keep the cluster live:
a restarted node commits up to the configuration entry it applied last (durable in
``confstate``, so known committed); a node that heard no leader for an election timeout tells
the members it knows what it knows committed (``MsgCommitHint``: the nodes a removal left may
only learn it from the removed ones); a node does not campaign while a committed configuration
entry is still unapplied (its voters are about to change).

Who votes. A node votes while its applied configuration lists it (a learner too: its
promotion may be committed but not applied here). A node that its configuration leaves out
votes only for a candidate whose configuration is as of a later index (``conf_version`` in the
vote request), i.e. one that lists it again: a stale candidate still counting a removed node
could otherwise win a term that another leader holds. A leader that removed itself hands
over, and answers remove-node, only once a majority of the remaining voters reported they
applied the change, so an operator who stops or wipes it then strands no one, even if one of
those voters loses its disk next (one reporting voter was not enough: simulator B11).

Re-adding a removed id (the README's rejoin: remove, wipe, start blank, add) needs care:
acknowledgements of the old incarnation may still be in flight. It never held the entry that
re-added it, so the leader promotes a learner only on acks at or past that entry
(``Progress.added_at``), never on what the old incarnation said.

The configuration lives in the log (CONF_CHANGE entries) and in snapshots (``ConfState``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import msgpack

from raftd.core.errors import RaftError
from raftd.core.state import ConfState
from raftd.core.types import NodeId

CONF_CHANGE_FORMAT = 1


class ConfChangeType(enum.Enum):
    ADD_LEARNER = "add_learner"
    PROMOTE = "promote"
    REMOVE = "remove"


class InvalidConfChange(RaftError):
    """The change does not apply to the current configuration (e.g. adding a member twice)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfChange:
    type: ConfChangeType
    node_id: NodeId
    auto_promote: bool = True
    """For ADD_LEARNER: promote automatically once caught up (False pins it as a learner)."""

    def encode(self) -> bytes:
        return msgpack.packb(
            [CONF_CHANGE_FORMAT, self.type.value, self.node_id, self.auto_promote]
        )

    @staticmethod
    def decode(data: bytes) -> ConfChange:
        version, kind, node_id, auto_promote = msgpack.unpackb(data)
        if version != CONF_CHANGE_FORMAT:
            raise InvalidConfChange(f"unknown configuration entry format {version!r}")
        return ConfChange(type=ConfChangeType(kind), node_id=node_id, auto_promote=auto_promote)


def apply_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The configuration after ``cc``; raises InvalidConfChange if it does not apply."""
    voters, learners = set(conf.voters), set(conf.learners)
    auto = set(conf.auto_promote)
    node = cc.node_id
    if cc.type is ConfChangeType.ADD_LEARNER:
        if node in voters or node in learners:
            raise InvalidConfChange(f"{node} is already a member")
        learners.add(node)
        if cc.auto_promote:
            auto.add(node)
    elif cc.type is ConfChangeType.PROMOTE:
        if node not in learners:
            raise InvalidConfChange(f"{node} is not a learner")
        learners.discard(node)
        auto.discard(node)
        voters.add(node)
    else:
        if node not in voters and node not in learners:
            raise InvalidConfChange(f"{node} is not a member")
        if voters == {node}:
            raise InvalidConfChange(f"{node} is the last voter")
        voters.discard(node)
        learners.discard(node)
        auto.discard(node)
    return ConfState(
        voters=tuple(sorted(voters)),
        learners=tuple(sorted(learners)),
        auto_promote=tuple(sorted(auto)),
    )

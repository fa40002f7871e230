"""Scalar aliases and the role enum shared by the whole core."""

from __future__ import annotations

import enum

NodeId = str
"""A node's identity is its advertised ``host:port``."""

Term = int
Index = int

NO_NODE: NodeId = ""
"""Stands for "nobody" in ``voted_for`` and ``leader_id``."""


class StateRole(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"

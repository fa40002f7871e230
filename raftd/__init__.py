"""raftd: one Raft node of a rafty cluster."""

__version__ = "0.1.0"

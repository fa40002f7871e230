"""Applications hosted inside raftd beside the key-value store, chosen by the node config.

Each returns a ``server.ServerApp`` (node-local: requests, role changes) and registers its
replicated part (a ``statemachine.AppStateMachine``) on ``server.replica.sm`` here, before the
server restores the state machine from a snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raftd.server import Server, ServerApp


def hosted_apps(server: Server) -> dict[str, ServerApp]:
    """The applications the node config enables, by application name."""
    return {}

"""Applications hosted inside raftd beside the key-value store, chosen by the node config.

Each returns a ``server.ServerApp`` (node-local: requests, role changes) and registers its
replicated part (a ``statemachine.AppStateMachine``) on ``server.replica.sm`` here, before the
server restores the state machine from a snapshot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raftd.server import Server, ServerApp

FEDERATED_EXTRA = "pip install 'rafty[federated]'"


class AppUnavailable(Exception):
    """An enabled application cannot run here; ``str(err)`` is the one line to report."""


APP_SETTINGS = {"fl": "[federated] enabled = true"}
"""What a node's config needs for each application (named in refusals, so users know)."""


def hosted_apps(server: Server) -> dict[str, ServerApp]:
    """The applications the node config enables, by application name."""
    apps: dict[str, ServerApp] = {}
    if server.config.federated.enabled:
        # Imported only when enabled: the base install has no numpy or cryptography.
        try:
            from raftd.federated.coordinator import FederatedApp
        except ImportError as exc:
            raise AppUnavailable(
                f"[federated] enabled = true needs the federated extra ({FEDERATED_EXTRA}): "
                f"{exc}"
            ) from None
        from raftd.federated.state import APP_NAME, FederatedState

        state = FederatedState()
        server.replica.sm.register_app(APP_NAME, state)
        apps[APP_NAME] = FederatedApp(server, server.config.federated, state)
    return apps

"""The exceptions of the raftctl client library: one hierarchy, no bare socket errors.

```
RaftctlError
├── InvalidArgument        refused before sending: nothing reached the cluster (a ValueError)
│   └── InvalidEndpoint    an endpoint is not host:port
├── ClusterUnavailable     no endpoint could be reached before the deadline
├── RequestTimeout         a node was reached, but the request did not complete in time
└── ServerError            the cluster answered {"type": "error"} (code, message)
    ├── NoLeader           no_leader, or no leader known when the deadline passed
    ├── ConditionFailed    condition_failed: a compare-and-set did not match
    ├── SessionExpired     session_expired: the write may or may not have been applied
    ├── TooLarge           too_large
    ├── Unauthorized       unauthorized: the node wants a client token (token=)
    └── BadRequest         bad_request: the server refused the request as malformed
```

A write that finally raised may or may not have been applied (DESIGN.md "Python API").
"""

from __future__ import annotations

from collections.abc import Sequence


class RaftctlError(Exception):
    """Base of every error the client library raises."""


class InvalidArgument(RaftctlError, ValueError):
    """An argument the cluster cannot take (a value msgpack cannot carry, a map key that is
    not str or bytes, an endpoint no node could have): refused before anything was sent."""


class InvalidEndpoint(InvalidArgument):
    """An endpoint is not a ``host:port`` string."""


class ClusterUnavailable(RaftctlError):
    """No node could be reached; ``endpoints`` lists those tried."""

    def __init__(self, endpoints: Sequence[str], detail: str = "") -> None:
        self.endpoints = tuple(endpoints)
        text = f"no node reachable (tried {', '.join(self.endpoints)})"
        super().__init__(f"{text}: {detail}" if detail else text)


class RequestTimeout(RaftctlError):
    """The request did not complete before its deadline (a node was reachable)."""


class ServerError(RaftctlError):
    """The cluster answered with an error ``code`` (see DESIGN.md) and ``message``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code = code
        self.message = message


class NoLeader(ServerError):
    """The cluster has no leader (election in progress, or no quorum)."""


class ConditionFailed(ServerError):
    """A conditional write (``if_revision`` / ``if_absent``) found another revision.

    ``revision`` is the key's revision the server found (0: the key does not exist), when it
    said so.
    """

    def __init__(self, code: str, message: str, revision: int | None = None) -> None:
        super().__init__(code, message)
        self.revision = revision


class SessionExpired(ServerError):
    """The server forgot this client's session; the write may or may not have been applied."""


class TooLarge(ServerError):
    """The request or its response exceeds the server's frame limit."""


class Unauthorized(ServerError):
    """The node requires a client token and the request carried none, or a wrong one."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(code, message)
        # The node's message names raftctl's option, and raftctl prints it as it is; a
        # traceback also shows this note, for programs.
        self.add_note("Client, AsyncClient and DistributedDict take the token as token=...")


class BadRequest(ServerError):
    """The server refused the request as malformed."""


ERRORS_BY_CODE: dict[str, type[ServerError]] = {
    "no_leader": NoLeader,
    "condition_failed": ConditionFailed,
    "session_expired": SessionExpired,
    "too_large": TooLarge,
    "unauthorized": Unauthorized,
    "bad_request": BadRequest,
}
"""Exception class per error code; other codes raise ``ServerError`` itself."""

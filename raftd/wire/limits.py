"""Limits on what one client may send, so hostile input costs a node bounded memory and time.

Each limit is answered with a DESIGN.md error code and counted in
``raft_client_rejected_total{reason}``; the connection survives where it can. Where each is
enforced:

- ``max_frame_bytes`` (one request): ``wire.stream.StreamDecoder`` -> ``too_large``, then the
  connection closes (the stream cannot be resynchronised). The server sets it to
  ``[raft] max_entry_bytes`` + 64 KiB.
- ``MAX_NESTING_DEPTH`` (maps and arrays inside one request): ``too_large``. msgpack's own
  limit is ~1024 levels; a value stored that deep would be unreadable (every response wraps it
  in a few more levels), and error messages that repr() it would recurse out of the stack.
- ``wire.client.MAX_KEY_BYTES`` (keys and list prefixes): ``too_large``.
- value size: ``[raft] max_entry_bytes`` for the value (the key and the command's envelope
  come on top) -> ``too_large`` (server).
- ``MAX_CONNECTIONS`` per node: ``overloaded``, then that connection closes.
- ``MAX_PENDING_PER_CONNECTION`` (requests handed to the node, not yet answered):
  ``overloaded`` for each request beyond it; the connection survives.
"""

from __future__ import annotations

from typing import Any, Final

MAX_NESTING_DEPTH: Final = 64
"""Deepest nesting of maps and arrays in one request; the request map itself is level 1 and
an ``append``'s ``data`` map level 2, so a value may nest 62 levels."""
MAX_CONNECTIONS: Final = 1024
"""Client connections one node serves at once (further file descriptors stay free for the
WAL, snapshots and peers)."""
MAX_PENDING_PER_CONNECTION: Final = 1024
"""Requests one connection may have in flight: far above what pipelining clients use (the
client library awaits each request), low enough that one client cannot fill the node."""


def nesting_exceeds(obj: Any, limit: int) -> bool:
    """Whether maps and arrays in ``obj`` nest deeper than ``limit`` levels (iterative: no
    recursion, whatever the depth). Dict keys are not searched: decoded keys are str or
    bytes (``StreamDecoder`` uses ``strict_map_key``)."""
    if type(obj) is not dict and type(obj) is not list:
        return False
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        container, depth = stack.pop()
        if depth > limit:
            return True
        for child in container.values() if type(container) is dict else container:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1))
    return False

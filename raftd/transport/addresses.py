"""Peer addresses: node ids (``host:port``) to socket addresses, looked up off the event loop.

A node id whose host is an IP address is its own socket address. A name is looked up in a
task: ``getaddrinfo`` may block for seconds (a DNS timeout), and the loop that runs it also
sends the heartbeats. Until a name's first answer, ``get`` returns None and the caller drops
the datagram (Raft sends again), so a node starts, and goes on running, while a peer's name
does not resolve yet: containers and Kubernetes pods get their DNS records only once they run.
A failed lookup is tried again after ``retry_s`` (and logged once, until it succeeds); a name
that resolved is looked up again after ``refresh_s`` on its next use, because a peer
rescheduled under the same name may come back at another address. Meanwhile, and when a
later lookup fails, the last answer stays in use.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from raftd.config import format_address, parse_address

log = logging.getLogger(__name__)

Address = tuple[str, int]
Lookup = Callable[[str], Awaitable[list[Address]]]

RETRY_S = 1.0
REFRESH_S = 30.0


async def lookup_name(node: str) -> list[Address]:
    """Every (ip, port) ``node`` resolves to, the preferred one first (off the loop)."""
    host, port = parse_address(node)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    return [(str(info[4][0]), int(info[4][1])) for info in infos]


def literal_address(node: str) -> Address | None:
    """``node``'s socket address when its host is an IP address (no lookup needed)."""
    host, port = parse_address(node)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host, port


@dataclass(slots=True)
class _Entry:
    address: Address | None = None
    checked_at: float = -math.inf
    """Loop time the last lookup finished (+inf: an IP address, never looked up)."""
    task: asyncio.Task[None] | None = None
    failing: bool = False


class PeerAddresses:
    def __init__(
        self, lookup: Lookup = lookup_name, *, retry_s: float = RETRY_S,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.lookup = lookup
        self.retry_s = retry_s
        self.refresh_s = refresh_s
        self.entries: dict[str, _Entry] = {}

    def get(self, node: str) -> Address | None:
        """``node``'s address, or None while it is unknown (a lookup is then under way)."""
        entry = self.entries.get(node)
        if entry is not None and entry.checked_at == math.inf:
            return entry.address  # an IP address (or no valid one): never looked up
        if entry is None:
            entry = self.entries[node] = _Entry()
            try:
                entry.address = literal_address(node)
            except ValueError as e:  # not host:port: a faulty peer's or operator's node id
                log.warning("peer %s has no valid address (%s): nothing is sent to it", node, e)
                entry.checked_at = math.inf
                return None
            if entry.address is not None:
                entry.checked_at = math.inf
                return entry.address
        loop = asyncio.get_running_loop()
        wait = self.refresh_s if entry.address is not None else self.retry_s
        if entry.task is None and loop.time() - entry.checked_at >= wait:
            entry.task = loop.create_task(self._look_up(node, entry))
        return entry.address

    def learn(self, node: str, address: Address) -> None:
        """A fresh answer found elsewhere (add-node's own lookup): no need to ask again."""
        entry = self.entries.setdefault(node, _Entry())
        if entry.task is None:
            entry.address = address
            entry.checked_at = asyncio.get_running_loop().time()

    def close(self) -> None:
        for entry in self.entries.values():
            if entry.task is not None:
                entry.task.cancel()

    async def _look_up(self, node: str, entry: _Entry) -> None:
        try:
            resolved = await self.lookup(node)
            if not resolved:
                raise OSError("no address")
        except (OSError, ValueError) as e:
            if not entry.failing:
                log.warning("peer %s does not resolve (%s): %s; trying again", node,
                            getattr(e, "strerror", None) or e,
                            "still using " + format_address(*entry.address) if entry.address
                            else "datagrams to it are dropped")
            entry.failing = True
        else:
            address = resolved[0]
            if entry.failing or (entry.address is not None and entry.address != address):
                log.info("peer %s resolves to %s", node, format_address(*address))
            entry.address = address
            entry.failing = False
        finally:
            entry.checked_at = asyncio.get_running_loop().time()
            entry.task = None

"""UDP endpoint for peer messages: a thin asyncio DatagramProtocol, no Raft logic."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import cast

log = logging.getLogger(__name__)

SOCKET_BUFFER_BYTES = 8 << 20
"""Asked of the kernel for SO_RCVBUF/SO_SNDBUF: bursts of AppendEntries must not overflow."""

Address = tuple[str, int]


class PeerProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP "port unreachable" from a peer that is down: Raft's retries cover it.
        log.debug("udp error: %s", exc)


def bind_udp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
    sock.bind((host, port))
    sock.setblocking(False)
    log.info(
        "udp %s:%d buffers: rcv %d bytes, snd %d bytes (asked %d)",
        host, port,
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        SOCKET_BUFFER_BYTES,
    )
    return sock

"""TCP endpoint for clients: bytes -> msgpack frames -> requests; responses -> bytes.

A request without ``id`` gets exactly one response and then the connection closes (the seed's
one-shot clients read to EOF); requests with ``id`` may be pipelined on one connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any, cast

from raftd.wire.client import ErrorCode, Request, error, parse_request
from raftd.wire.errors import BadRequest, DecodeError, FrameTooLarge
from raftd.wire.stream import NEED_DATA, StreamDecoder, encode_frame

log = logging.getLogger(__name__)


class ClientConnection(asyncio.Protocol):
    def __init__(
        self,
        on_request: Callable[[ClientConnection, Request], None],
        on_close: Callable[[ClientConnection], None],
        max_frame_bytes: int,
        max_response_bytes: int,
    ) -> None:
        self.on_request = on_request
        self.on_close = on_close
        self.decoder = StreamDecoder(max_frame_bytes)
        self.max_response_bytes = max_response_bytes
        self.transport: asyncio.Transport | None = None
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.on_close(self)

    def data_received(self, data: bytes) -> None:
        self.decoder.feed(data)
        while not self.closing:
            try:
                obj = self.decoder.next()
                if obj is NEED_DATA:
                    return
                request = parse_request(obj)
            except FrameTooLarge as e:
                self.respond(error(ErrorCode.TOO_LARGE, str(e)), None)
                return
            except BadRequest as e:
                self.respond(error(ErrorCode.BAD_REQUEST, str(e)), e.id)
                continue
            except DecodeError as e:
                self.respond(error(ErrorCode.BAD_REQUEST, f"undecodable request: {e}"), None)
                return
            self.on_request(self, request)

    def respond(
        self, response: dict[str, Any], request_id: int | None, *, limit: int | None = None
    ) -> None:
        """Write one response; ``limit`` overrides the size bound (snapshots are big)."""
        if self.closing or self.transport is None:
            return
        if request_id is not None:
            response["id"] = request_id
        frame = encode_frame(response)
        if len(frame) > (limit or self.max_response_bytes):
            frame = encode_frame(
                error(ErrorCode.TOO_LARGE, "response exceeds max_frame_bytes; use list", id=request_id)
                if request_id is not None
                else error(ErrorCode.TOO_LARGE, "response exceeds max_frame_bytes; use list")
            )
        self.transport.write(frame)
        if request_id is None:
            self.closing = True
            self.transport.close()


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock

"""TCP endpoint for clients: bytes -> msgpack frames -> requests; responses -> bytes.

A request without ``id`` gets exactly one response and then the connection closes (the seed's
one-shot clients read to EOF); requests with ``id`` may be pipelined on one connection.

Every connection of a node shares one ``ClientGate``: the client token (when
``[security] client_token_file`` is set, each request must carry it as ``"token"``), the
limits of ``wire.limits`` and the count of what was refused, by reason. Refusals answer with
a DESIGN.md error code; the connection survives where the stream is still in sync and the
request had an ``id``. With ``[security] tls_cert``/``tls_key`` the listener speaks TLS
(``tls_server_context``); the peers' UDP on the same port is not affected.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any, cast

from raftd.config import SecuritySection
from raftd.wire.client import ErrorCode, Request, error, parse_request
from raftd.wire.errors import BadRequest, DecodeError, FieldTooLarge, FrameTooLarge
from raftd.wire.limits import (
    MAX_CONNECTIONS,
    MAX_NESTING_DEPTH,
    MAX_PENDING_PER_CONNECTION,
    nesting_exceeds,
)
from raftd.wire.stream import NEED_DATA, StreamDecoder, encode_frame, frame_encoder

log = logging.getLogger(__name__)

REJECT_REASONS = (
    "unauthorized",
    "frame_too_large",
    "nesting_too_deep",
    "field_too_large",
    "value_too_large",
    "bad_request",
    "undecodable",
    "too_many_connections",
    "too_many_pending",
)
"""Labels of ``raft_client_rejected_total{reason}``."""
MISSING_TOKEN = "this node requires a client token (raftctl --token)"
WRONG_TOKEN = ("wrong client token: it does not match this node's [security] "
               "client_token_file (raftctl --token)")
ENCODER_KEEP_BYTES = 64 << 10
"""A connection's Packer keeps the buffer of the largest frame it packed for as long as it
lives; after a larger response (a whole-state get, a snapshot) it is replaced, so idle
connections do not each hold megabytes."""
LINGER_S = 2.0
"""After refusing a broken stream the node reads and discards what the client still sends,
this long at most, before closing: closing with unread bytes makes the kernel reset the
connection, and the client could lose the refusal (the one answer that explains)."""


class ClientGate:
    """What every client connection of one node shares: token, limits, live set, refusals."""

    def __init__(
        self,
        *,
        max_frame_bytes: int,
        max_response_bytes: int,
        token: bytes | None = None,
        max_connections: int = MAX_CONNECTIONS,
        max_pending: int = MAX_PENDING_PER_CONNECTION,
        max_depth: int = MAX_NESTING_DEPTH,
        too_large_note: str = "",
    ) -> None:
        """``too_large_note``: what a client whose request exceeds ``max_frame_bytes`` is told
        besides that (which limit of the node's config it ran into)."""
        self.max_frame_bytes = max_frame_bytes
        self.too_large_note = too_large_note
        self.max_response_bytes = max_response_bytes
        self.token = token
        self.max_connections = max_connections
        self.max_pending = max_pending
        self.max_depth = max_depth
        self.live: set[ClientConnection] = set()
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)

    def refusal(self, obj: object) -> str | None:
        """Why the request map ``obj`` is unauthorized (no token, a wrong one), or None."""
        if self.token is None:
            return None
        token = obj.get("token") if type(obj) is dict else None
        if token is None:
            return MISSING_TOKEN
        # compare_digest: the time taken must not tell how much of a guess was right.
        if type(token) is str and hmac.compare_digest(token.encode(), self.token):
            return None
        return WRONG_TOKEN


def tls_server_context(security: SecuritySection) -> ssl.SSLContext | None:
    """The TLS context of the client port, or None when ``tls_cert`` is not set.

    Raises ``ValueError`` naming the files when they do not form a usable certificate/key
    (the node then refuses to start).
    """
    if security.tls_cert is None or security.tls_key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(security.tls_cert, security.tls_key)
        if security.tls_ca is not None:
            context.load_verify_locations(cafile=security.tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as e:
        files = f"{security.tls_cert}, {security.tls_key}" + (
            f", {security.tls_ca}" if security.tls_ca is not None else "")
        raise ValueError(f"[security] TLS files unusable ({files}): {e}") from None
    return context


class ClientConnection(asyncio.Protocol):
    def __init__(
        self,
        on_request: Callable[[ClientConnection, Request], None],
        on_close: Callable[[ClientConnection], None],
        gate: ClientGate,
    ) -> None:
        self.on_request = on_request
        self.on_close = on_close
        self.gate = gate
        self.decoder = StreamDecoder(gate.max_frame_bytes)
        self.encode = frame_encoder()
        self.transport: asyncio.Transport | None = None
        self.closing = False
        self.discarding = False
        """The stream broke: what arrives is thrown away until the client closes."""
        self.pending = 0
        """Requests handed to ``on_request`` and not answered yet."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        if len(self.gate.live) >= self.gate.max_connections:
            self._reject("too_many_connections", ErrorCode.OVERLOADED,
                         f"the node serves {self.gate.max_connections} connections already",
                         None)
            return
        self.gate.live.add(self)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.gate.live.discard(self)
        self.on_close(self)

    def pause_writing(self) -> None:
        # A client that sends requests but does not read the answers stops being read, so
        # its answers cannot pile up in memory without bound.
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.closing:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.discarding:
            return
        self.decoder.feed(data)
        while not self.closing:
            try:
                obj = self.decoder.next()
            except FrameTooLarge as e:
                note = self.gate.too_large_note
                self._refuse_stream("frame_too_large", ErrorCode.TOO_LARGE,
                                    f"{e}: {note}" if note else str(e))
                return
            except DecodeError as e:
                self._refuse_stream("undecodable", ErrorCode.BAD_REQUEST,
                                    f"undecodable request: {e}")
                return
            if obj is NEED_DATA:
                return
            self._on_frame(obj)

    def _on_frame(self, obj: Any) -> None:
        rid = obj.get("id") if type(obj) is dict else None
        rid = rid if type(rid) is int and 0 <= rid < 2**63 else None
        gate = self.gate
        refusal = gate.refusal(obj)
        if refusal is not None:
            self._reject("unauthorized", ErrorCode.UNAUTHORIZED, refusal, rid)
            return
        if type(obj) is dict:
            obj.pop("token", None)
        if nesting_exceeds(obj, gate.max_depth):
            self._reject("nesting_too_deep", ErrorCode.TOO_LARGE,
                         f"request nests deeper than {gate.max_depth} levels", rid)
            return
        try:
            request = parse_request(obj)
        except FieldTooLarge as e:
            self._reject("field_too_large", ErrorCode.TOO_LARGE, e.message, e.id)
            return
        except BadRequest as e:
            self._reject("bad_request", ErrorCode.BAD_REQUEST, e.message, e.id)
            return
        if self.pending >= gate.max_pending:
            self._reject("too_many_pending", ErrorCode.OVERLOADED,
                         f"{gate.max_pending} requests already pending on this connection", rid)
            return
        self.pending += 1
        self.on_request(self, request)

    def _refuse_stream(self, reason: str, code: ErrorCode, message: str) -> None:
        """The stream cannot be parsed any further: answer once, then a lingering close."""
        self.gate.rejected[reason] += 1
        assert self.transport is not None
        self.transport.write(encode_frame(error(code, message)))
        self.closing = self.discarding = True
        if self.transport.can_write_eof():
            self.transport.write_eof()  # the client reads the answer, then EOF
        asyncio.get_running_loop().call_later(LINGER_S, self.transport.close)

    def _reject(self, reason: str, code: ErrorCode, message: str, request_id: int | None) -> None:
        """Refuse at the edge (never handed to the node); count it under ``reason``."""
        self.gate.rejected[reason] += 1
        self._write(error(code, message), request_id, None)

    def respond(
        self, response: dict[str, Any], request_id: int | None, *, limit: int | None = None
    ) -> None:
        """Answer a request handed to ``on_request``; ``limit`` overrides the size bound
        (snapshots are big)."""
        self.pending = max(0, self.pending - 1)
        self._write(response, request_id, limit)

    def _write(self, response: dict[str, Any], request_id: int | None, limit: int | None) -> None:
        if self.closing or self.transport is None:
            return
        if request_id is not None:
            response["id"] = request_id
        frame = self.encode(response)
        if len(frame) > ENCODER_KEEP_BYTES:
            self.encode = frame_encoder()  # a Packer keeps its largest buffer: not this one
        if len(frame) > (limit or self.gate.max_response_bytes):
            frame = encode_frame(error(ErrorCode.TOO_LARGE,
                                       "response exceeds max_frame_bytes; use list",
                                       id=request_id))
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

"""transport.clients: the token, each limit and the TLS context, on a scripted transport.

``FakeTransport`` records what the connection writes; ``Harness`` plays a node that keeps
every request pending until told to answer, so the pending limit can be reached at will.
"""

from __future__ import annotations

import asyncio
import io
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from raftctl.connection import tls_context as client_tls_context
from raftctl.errors import RaftctlError
from raftd.config import SecuritySection
from raftd.transport.clients import (
    ENCODER_KEEP_BYTES,
    MISSING_TOKEN,
    WRONG_TOKEN,
    ClientConnection,
    ClientGate,
    tls_server_context,
)
from raftd.wire.client import MAX_KEY_BYTES, Request
from raftd.wire.limits import MAX_NESTING_DEPTH
from tests.unit.security.certs import make_pki

TOKEN = b"sixteen-byte-tok"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.eof = False
        self.reading = True

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.eof = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def frames(self) -> list[Any]:
        return list(msgpack.Unpacker(io.BytesIO(bytes(self.written)), raw=False))


class Harness:
    def __init__(self, **limits: Any) -> None:
        self.gate = ClientGate(max_frame_bytes=limits.pop("max_frame_bytes", 4096),
                               max_response_bytes=1 << 20, **limits)
        self.requests: list[tuple[ClientConnection, Request]] = []

    def connect(self) -> tuple[ClientConnection, FakeTransport]:
        conn = ClientConnection(lambda c, r: self.requests.append((c, r)), lambda c: None,
                                self.gate)
        transport = FakeTransport()
        conn.connection_made(transport)
        return conn, transport


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A current event loop: the lingering close schedules its timer on it."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        yield loop
    finally:
        asyncio.set_event_loop(None)
        loop.close()


def in_loop(loop: asyncio.AbstractEventLoop, feed: Callable[[], None]) -> None:
    """Run ``feed`` as the event loop would: inside a running loop."""
    async def call() -> None:
        feed()

    loop.run_until_complete(call())


def send(conn: ClientConnection, *frames: Any) -> None:
    conn.data_received(b"".join(msgpack.packb(f) for f in frames))


def codes(transport: FakeTransport) -> list[tuple[Any, Any]]:
    return [(f.get("id"), f.get("code")) for f in transport.frames()]


def test_without_a_token_requests_pass_and_a_stray_token_is_ignored() -> None:
    h = Harness()
    conn, transport = h.connect()
    send(conn, {"type": "get", "key": "k", "id": 1, "token": "anything"})
    assert [r.key for _, r in h.requests] == ["k"] and transport.written == b""


def test_a_missing_or_wrong_token_is_unauthorized_and_the_connection_survives() -> None:
    h = Harness(token=TOKEN)
    conn, transport = h.connect()
    send(conn, {"type": "get", "key": "k", "id": 1},
         {"type": "get", "key": "k", "id": 2, "token": "sixteen-byte-toK"},
         {"type": "get", "key": "k", "id": 3, "token": b"sixteen-byte-tok"},  # bin, not str
         {"type": "get", "key": "k", "id": 4, "token": TOKEN.decode()})
    assert codes(transport) == [(1, "unauthorized"), (2, "unauthorized"), (3, "unauthorized")]
    assert [(r.id, r.key) for _, r in h.requests] == [(4, "k")]  # "token" stripped, then parsed
    assert h.gate.rejected["unauthorized"] == 3 and not transport.closed
    send(conn, [1, 2])  # not even a map, and no id: answered, then closed
    assert codes(transport)[-1] == (None, "unauthorized") and transport.closed


def test_the_refusal_tells_a_missing_token_from_a_wrong_one() -> None:
    h = Harness(token=TOKEN)
    conn, transport = h.connect()
    send(conn, {"type": "get", "key": "k", "id": 1},
         {"type": "get", "key": "k", "id": 2, "token": None},
         {"type": "get", "key": "k", "id": 3, "token": "wrongwrongwrong"},
         {"type": "get", "key": "k", "id": 4, "token": b"sixteen-byte-tok"})
    assert [(f["id"], f["message"]) for f in transport.frames()] == [
        (1, MISSING_TOKEN), (2, MISSING_TOKEN), (3, WRONG_TOKEN), (4, WRONG_TOKEN)]
    assert "requires" in MISSING_TOKEN and "wrong client token" in WRONG_TOKEN


def test_nesting_beyond_the_limit_is_too_large_and_the_connection_survives() -> None:
    h = Harness()
    conn, transport = h.connect()
    value: Any = 0
    for _ in range(MAX_NESTING_DEPTH - 2):
        value = [value]
    write = {"type": "append", "id": 1, "data": {"action": "change", "key": "k", "value": value}}
    send(conn, write)
    write = {**write, "id": 2, "data": {**write["data"], "value": [value]}}
    send(conn, write)
    assert len(h.requests) == 1 and codes(transport) == [(2, "too_large")]
    assert h.gate.rejected["nesting_too_deep"] == 1 and not transport.closed


def test_a_key_over_the_limit_is_too_large_a_wrong_type_is_bad_request() -> None:
    h = Harness(max_frame_bytes=1 << 16)
    conn, transport = h.connect()
    send(conn, {"type": "get", "id": 1, "key": "k" * MAX_KEY_BYTES},
         {"type": "get", "id": 2, "key": "é" * (MAX_KEY_BYTES // 2 + 1)},  # chars fit, bytes do not
         {"type": "list", "id": 3, "prefix": "p" * (MAX_KEY_BYTES + 1)},
         {"type": "get", "id": 4, "key": ["k"]})
    assert len(h.requests) == 1
    assert codes(transport) == [(2, "too_large"), (3, "too_large"), (4, "bad_request")]
    assert (h.gate.rejected["field_too_large"], h.gate.rejected["bad_request"]) == (2, 1)


def test_a_frame_over_the_limit_is_too_large_then_a_lingering_close(
    loop: asyncio.AbstractEventLoop,
) -> None:
    h = Harness(max_frame_bytes=100)
    conn, transport = h.connect()
    in_loop(loop, lambda: send(conn, {"type": "append", "id": 1, "data": {
        "action": "change", "key": "k", "value": "x" * 200}}))
    assert codes(transport) == [(None, "too_large")]
    assert transport.eof and not transport.closed  # the client reads the answer, then EOF
    written = len(transport.written)
    send(conn, {"type": "get", "key": "k", "id": 2})  # discarded: the stream is broken
    assert len(transport.written) == written and h.requests == []
    assert h.gate.rejected["frame_too_large"] == 1


def test_garbage_is_bad_request_then_a_lingering_close(loop: asyncio.AbstractEventLoop) -> None:
    h = Harness()
    conn, transport = h.connect()
    in_loop(loop, lambda: conn.data_received(b"\xc1garbage"))
    assert codes(transport) == [(None, "bad_request")] and transport.eof
    assert h.gate.rejected["undecodable"] == 1


def test_pending_requests_beyond_the_limit_are_overloaded_until_answered() -> None:
    h = Harness(max_pending=2)
    conn, transport = h.connect()
    send(conn, *({"type": "get", "key": "k", "id": i} for i in range(1, 5)))
    assert [r.id for _, r in h.requests] == [1, 2]
    assert codes(transport) == [(3, "overloaded"), (4, "overloaded")]
    assert all(f["retryable"] for f in transport.frames())
    conn.respond({"type": "result", "success": True}, 1)  # one answered: room for one more
    send(conn, {"type": "get", "key": "k", "id": 5}, {"type": "get", "key": "k", "id": 6})
    assert [r.id for _, r in h.requests] == [1, 2, 5]
    assert codes(transport)[-1] == (6, "overloaded")
    assert h.gate.rejected["too_many_pending"] == 3


def test_connections_beyond_the_limit_are_overloaded_and_closed() -> None:
    h = Harness(max_connections=2)
    (first, _), (_, t2) = h.connect(), h.connect()
    third, t3 = h.connect()
    assert codes(t3) == [(None, "overloaded")] and t3.closed and not t2.closed
    third.connection_lost(None)
    first.connection_lost(None)  # a slot frees up
    _, t4 = h.connect()
    assert not t4.closed and len(h.gate.live) == 2
    assert h.gate.rejected["too_many_connections"] == 1


def test_a_client_that_does_not_read_stops_being_read() -> None:
    h = Harness()
    conn, transport = h.connect()
    conn.pause_writing()
    assert not transport.reading
    conn.resume_writing()
    assert transport.reading


def test_a_large_response_does_not_stay_in_the_connections_encoder() -> None:
    # A msgpack Packer keeps the buffer of the largest frame it packed: a connection that
    # once answered a whole-state get must not hold that much memory for the rest of its life.
    h = Harness()
    conn, transport = h.connect()
    small_encoder = conn.encode
    conn.respond({"type": "result", "value": "v"}, 1)
    assert conn.encode is small_encoder
    conn.respond({"type": "result", "value": "x" * (2 * ENCODER_KEEP_BYTES)}, 2)
    assert conn.encode is not small_encoder
    assert [f["id"] for f in transport.frames()] == [1, 2]
    assert len(transport.frames()[1]["value"]) == 2 * ENCODER_KEEP_BYTES


def test_tls_context(tmp_path: Path) -> None:
    assert tls_server_context(SecuritySection()) is None
    pki = make_pki(tmp_path)
    context = tls_server_context(SecuritySection(tls_cert=pki.node_cert, tls_key=pki.node_key))
    assert context is not None and context.verify_mode == ssl.CERT_NONE
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    mutual = tls_server_context(SecuritySection(tls_cert=pki.node_cert, tls_key=pki.node_key,
                                                tls_ca=pki.ca))
    assert mutual is not None and mutual.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ValueError, match="TLS files unusable.*node.crt"):
        tls_server_context(SecuritySection(tls_cert=pki.node_cert, tls_key=pki.rogue_key))


def test_client_tls_files_that_do_not_load_are_named_in_plain_words(tmp_path: Path) -> None:
    """Not OpenSSL's "[SSL] PEM lib (_ssl.c:3905)": which file, and what is wrong with it."""
    pki = make_pki(tmp_path)
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate\n")
    with pytest.raises(RaftctlError, match=f"CA certificates {not_pem}: it holds no PEM"):
        client_tls_context(cacert=str(not_pem))
    with pytest.raises(RaftctlError, match="client certificate .*the key does not match"):
        client_tls_context(cacert=str(pki.ca), cert=str(pki.client_cert), key=str(pki.rogue_key))
    context = client_tls_context(cacert=str(pki.ca), cert=str(pki.client_cert),
                                 key=str(pki.client_key))
    assert context is not None and context.verify_mode == ssl.CERT_REQUIRED

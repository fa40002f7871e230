"""Hostile input, generated: every entry point raises only its documented exceptions.

Runs under the CI hypothesis profile (derandomized, no deadline). Complements the per-codec
fuzz tests in tests/unit/wire (random bytes and msgpack values for ``decode_peer``,
``parse_request``, ``StreamDecoder``, the fragment parsers) with what they miss: nesting
deep enough to break ``repr``, the whole client edge (``ClientConnection``) and the whole
peer edge (``PeerLink``: auth, then fragments, then delivery). Longer runs: tests/fuzz/.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftd.transport.peers import PeerLink
from raftd.wire.auth import PeerAuth
from raftd.wire.client import parse_request
from raftd.wire.errors import BadRequest, DecodeError
from raftd.wire.limits import nesting_exceeds
from raftd.wire.peer import decode_peer
from raftd.wire.stream import NEED_DATA, StreamDecoder
from tests.unit.security.test_client_gate import Harness, in_loop
from tests.unit.wire.strategies import msgpack_values

SECRET = b"k" * 32
ME, PEER = "127.0.0.1:7001", "127.0.0.1:7002"


def nest(value: Any, depth: int, as_map: bool) -> Any:
    for _ in range(depth):
        value = {"x": value} if as_map else [value]
    return value


deep_values = st.builds(nest, msgpack_values, st.integers(0, 1020), st.booleans())
"""Values nested up to just below msgpack's own stack limit (~1024)."""
deep_requests = st.one_of(
    st.builds(lambda v: {"type": v, "id": 1}, deep_values),
    st.builds(lambda v: {"type": "get", "key": v, "id": 1}, deep_values),
    st.builds(lambda v: {"type": "append", "id": 1, "data": {"action": "change", "key": "k",
                                                             "value": v}}, deep_values),
    st.builds(lambda v: {"type": "get", "id": 1, "unknown": v}, deep_values),
    st.dictionaries(st.text(max_size=8), deep_values, max_size=3),
)


def naive_depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((naive_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((naive_depth(v) for v in value), default=0)
    return 0


@given(st.builds(nest, msgpack_values, st.integers(0, 200), st.booleans()),
       st.integers(0, 250))
def test_nesting_exceeds_agrees_with_a_naive_depth(value: Any, limit: int) -> None:
    assert nesting_exceeds(value, limit) == (naive_depth(value) > limit)


@settings(max_examples=200)
@given(deep_requests)
def test_parse_request_raises_only_bad_request_however_deep(obj: Any) -> None:
    try:
        parse_request(obj)
    except BadRequest:
        pass


@settings(max_examples=200)
@given(st.builds(lambda v, version: pack({"v": v} if version else {"v": 1, "type": v}),
                 deep_values, st.booleans()))
def test_decode_peer_raises_only_decode_error_however_deep(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_peer(data)


@given(st.integers(1000, 3000), st.booleans())
def test_the_stream_decoder_raises_only_decode_error_past_msgpacks_stack(
    depth: int, as_map: bool
) -> None:
    # Too deep for msgpack.packb: build the bytes by hand (fixmap / fixarray headers).
    head = b"\x81\xa1x" if as_map else b"\x91"
    decoder = StreamDecoder(1 << 20)
    decoder.feed(head * depth + b"\xc0")
    try:
        assert decoder.next() is not NEED_DATA
    except DecodeError:
        pass


def pack(obj: Any) -> bytes:
    """``msgpack.packb``, or past its nesting limit (~1024) a frame just as deep by hand."""
    try:
        return msgpack.packb(obj)
    except ValueError:
        return b"\x81\xa4type" + b"\x91" * 1100 + b"\xc0"


client_input = st.one_of(
    st.lists(st.binary(max_size=300), max_size=6),
    st.lists(deep_requests | msgpack_values, max_size=4).map(lambda objs: [pack(o) for o in objs]),
)


@settings(max_examples=300)
@given(client_input, st.booleans())
def test_the_client_edge_never_raises_and_answers_only_valid_errors(
    chunks: list[bytes], token: bool
) -> None:
    loop = asyncio.new_event_loop()
    try:
        h = Harness(token=SECRET if token else None, max_pending=2)
        conn, transport = h.connect()
        for chunk in chunks:
            in_loop(loop, lambda chunk=chunk: conn.data_received(chunk))  # type: ignore[misc]
        for frame in transport.frames():
            assert frame["type"] == "error" and frame["code"] in {
                "unauthorized", "too_large", "bad_request", "overloaded"}
        assert len(h.requests) <= 2
        if token:
            assert h.requests == []
    finally:
        loop.close()


class FakeUdp:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []

    def close(self) -> None:
        pass

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def peer_link(auth: PeerAuth | None, delivered: list[bytes], datagram: int = 1400) -> PeerLink:
    link = PeerLink(datagram, lambda node: ("127.0.0.1", int(node.rpartition(":")[2])),
                    lambda data, addr: delivered.append(data), lambda *outcome: None, auth=auth)
    link.udp = FakeUdp()  # type: ignore[assignment]
    return link


fragmentish = st.builds(lambda kind, rest: bytes((0xC1, 1, kind, 0)) + rest,
                        st.integers(0, 4), st.binary(max_size=80))


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200) | fragmentish, max_size=10), st.booleans())
def test_the_peer_edge_never_raises_and_counts_what_it_drops(
    datagrams: list[bytes], secret: bool
) -> None:
    loop = asyncio.new_event_loop()
    delivered: list[bytes] = []
    try:
        link = peer_link(PeerAuth(SECRET, ME, 1) if secret else None, delivered)
        for data in datagrams:
            in_loop(loop, lambda data=data: link._on_datagram(  # type: ignore[misc]
                data, ("127.0.0.1", 7002)))
    finally:
        loop.close()
    counted = sum(link.dropped.values())
    if secret:  # nothing random passes authentication
        assert (counted, delivered) == (len(datagrams), [])
    else:  # delivered (for the codec to judge), dropped, or held as a partial fragment
        assert len(delivered) + counted <= len(datagrams)


@settings(max_examples=100)
@given(st.binary(max_size=3000).map(lambda b: msgpack.packb({"data": b})))
def test_sealed_payloads_of_any_size_cross_a_peer_link(payload: bytes) -> None:
    """Sealing happens last: a payload fragmented to fit still arrives whole. (Payloads are
    msgpack maps, as peer messages are: a first byte 0xC1 would mean a fragment.)"""
    sender_delivered: list[bytes] = []
    receiver_delivered: list[bytes] = []
    loop = asyncio.new_event_loop()
    try:
        sender = peer_link(PeerAuth(SECRET, PEER, 2), sender_delivered, datagram=512)
        receiver = peer_link(PeerAuth(SECRET, ME, 3), receiver_delivered)

        async def exchange() -> None:
            sender.send(ME, payload)
            for _ in range(200):
                await asyncio.sleep(0)
                for data, _ in sender.udp.sent:  # type: ignore[union-attr]
                    assert len(data) <= 512
                    receiver._on_datagram(data, ("127.0.0.1", 7002))
                sender.udp.sent.clear()  # type: ignore[union-attr]
                for data, _ in receiver.udp.sent:  # type: ignore[union-attr]
                    sender._on_datagram(data, ("127.0.0.1", 7001))
                receiver.udp.sent.clear()  # type: ignore[union-attr]
                if receiver_delivered:
                    return

        loop.run_until_complete(exchange())
        sender.close()
    finally:
        loop.close()
    assert receiver_delivered == [payload]
    assert sum(receiver.dropped.values()) == sum(sender.dropped.values()) == 0

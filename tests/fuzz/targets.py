"""Fuzz targets: one function per hostile-input entry point, each taking raw bytes.

A target returns normally for any input, or raises ``Crash`` (or any undocumented
exception, which the fuzzer reports as a crash as well). ``tests/fuzz/run.py`` drives them
with atheris (coverage-guided, libFuzzer); ``tests/fuzz/test_targets.py`` runs each on a
small fixed corpus in ``make test`` so the targets never rot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgpack

from raftd.transport.clients import ClientConnection, ClientGate
from raftd.wire.auth import AuthError, PeerAuth
from raftd.wire.client import parse_request
from raftd.wire.errors import BadRequest, DecodeError
from raftd.wire.fragments import FragmentReceiver, FragmentSender, is_ack
from raftd.wire.limits import nesting_exceeds
from raftd.wire.peer import decode_peer
from raftd.wire.stream import NEED_DATA, StreamDecoder

SECRET = b"f" * 32
ME, PEER = "127.0.0.1:7001", "127.0.0.1:7002"


class Crash(AssertionError):
    """A target saw behaviour its contract forbids (not an exception the code raised)."""


def peer(data: bytes) -> None:
    """``decode_peer``: a valid message or ``DecodeError``."""
    try:
        decode_peer(data)
    except DecodeError:
        pass


def stream(data: bytes) -> None:
    """``StreamDecoder`` fed in two pieces, then ``parse_request`` on every frame."""
    decoder = StreamDecoder(4096)
    cut = data[0] if data else 0
    try:
        for piece in (data[1:1 + cut], data[1 + cut:]):
            decoder.feed(piece)
            while (obj := decoder.next()) is not NEED_DATA:
                if not nesting_exceeds(obj, 64):
                    try:
                        parse_request(obj)
                    except BadRequest:
                        pass
    except DecodeError:
        pass


def request(data: bytes) -> None:
    """``parse_request`` on any msgpack object the bytes decode to, however nested."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception:  # noqa: BLE001 - not msgpack: nothing to parse
        return
    try:
        parse_request(obj)
    except BadRequest:
        pass


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


_loop = asyncio.new_event_loop()


def _in_loop(call: Callable[[], None]) -> None:
    async def run() -> None:
        call()

    _loop.run_until_complete(run())


def client(data: bytes) -> None:
    """A whole client connection (token required): only error answers, nothing handed on."""
    handed: list[Any] = []
    gate = ClientGate(max_frame_bytes=2048, max_response_bytes=1 << 20, token=SECRET,
                      max_pending=4)
    conn = ClientConnection(lambda c, r: handed.append(r), lambda c: None, gate)
    transport = _Transport()
    conn.connection_made(transport)
    _in_loop(lambda: conn.data_received(data))
    unpacker = msgpack.Unpacker(raw=False)
    unpacker.feed(bytes(transport.written))
    for frame in unpacker:
        if frame.get("type") != "error":
            raise Crash(f"non-error answer {frame!r}")
    # Without the token nothing may reach the node (the fuzzer cannot guess 32 bytes).
    if handed and SECRET not in data:
        raise Crash(f"request handed on without the token: {handed!r}")


def fragments(data: bytes) -> None:
    """The fragment receiver (DATA) and sender (ACK) parsers: ``DecodeError`` only."""
    receiver: FragmentReceiver[str] = FragmentReceiver(1 << 20, max_transfers_per_peer=4,
                                                       timeout=30.0)
    sender: FragmentSender[str] = FragmentSender(512, window=16, first_transfer_id=0)
    sender.send(PEER, bytes(2000))
    sender.poll(0.0)
    try:
        if is_ack(data):
            sender.on_ack(PEER, data, 1.0)
        else:
            _, payload = receiver.on_data(PEER, data, 1.0)
            if payload is not None and len(payload) > 1 << 20:
                raise Crash("reassembled beyond the per-peer bound")
    except DecodeError:
        pass


_auth = PeerAuth(SECRET, ME, 1)
_sealer = PeerAuth(SECRET, PEER, 7)
_genuine: set[bytes] = set()
"""Datagrams ``seeds()`` sealed with the key: the only ones that may pass (once each)."""


def auth(data: bytes) -> None:
    """``PeerAuth.open``: nothing forged passes (the fuzzer cannot find the tag). A corpus
    given by hand must come from this version's ``seeds()``: a datagram an older version
    sealed with the test key passes too, and is reported."""
    try:
        sender, _ = _auth.open(data)
    except AuthError:
        return
    if data not in _genuine:
        raise Crash(f"a datagram from {sender!r} passed authentication without the key")


def seeds() -> list[bytes]:
    """Starting inputs: a valid example of everything, and a few classic troublemakers."""
    from raftd.core.messages import MsgApp, MsgHeartbeat, MsgSnap, MsgVote
    from raftd.core.state import ConfState, Entry, EntryType, Snapshot, SnapshotMeta
    from raftd.wire.peer import encode_peer

    messages = [
        MsgHeartbeat(term=1, src=PEER, dst=ME, leader_commit=0),
        MsgVote(term=2, src=PEER, dst=ME, last_log_index=3, last_log_term=1),
        MsgApp(term=2, src=PEER, dst=ME, prev_log_index=1, prev_log_term=1,
               entries=(Entry(2, 2, EntryType.NORMAL, b"x"),), leader_commit=1),
        MsgSnap(term=2, src=PEER, dst=ME, snapshot=Snapshot(
            meta=SnapshotMeta(index=5, term=2, conf_state=ConfState(voters=(ME, PEER))),
            data=b"state")),
    ]
    encoded = [encode_peer(m) for m in messages]
    sealed = [_sealer.seal(ME, e) for e in encoded]
    _genuine.update(sealed)
    fragmenter: FragmentSender[str] = FragmentSender(300, window=16, first_transfer_id=9)
    fragmenter.send(ME, encoded[-1] * 3)
    requests = [
        {"type": "get", "key": "k", "id": 1, "token": SECRET.decode()},
        {"type": "append", "id": 2, "token": SECRET.decode(), "data": {
            "action": "change", "key": "k", "value": [1, {"a": b"b"}], "client_id": "c",
            "seq": 1}},
        {"type": "list", "prefix": "p", "limit": 3, "id": 3},
        {"type": "config", "action": "add", "address": "127.0.0.1:7003", "id": 4},
    ]
    return [
        b"",
        b"\xdd\xff\xff\xff\xff",
        b"\x91" * 1000 + b"\xc0",
        *encoded,
        *sealed,
        *(d for _, d in fragmenter.poll(0.0)),
        *(msgpack.packb(r) for r in requests),
        b"".join(msgpack.packb(r) for r in requests),
    ]


TARGETS: dict[str, Callable[[bytes], None]] = {
    "peer": peer,
    "stream": stream,
    "request": request,
    "client": client,
    "fragments": fragments,
    "auth": auth,
}

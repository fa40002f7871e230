"""The atheris targets (tests/fuzz/targets.py) on a fixed corpus, so they never rot; the
long coverage-guided runs are ``python -m tests.fuzz.run`` (see that module)."""

from __future__ import annotations

import msgpack
import pytest

from raftd.core.messages import MsgHeartbeat
from raftd.wire.auth import PeerAuth
from raftd.wire.peer import encode_peer
from tests.fuzz.targets import ME, PEER, SECRET, TARGETS, Crash, seeds

_heartbeat = encode_peer(MsgHeartbeat(term=1, src=PEER, dst=ME, leader_commit=0))
CORPUS = [
    b"",
    b"\xc1",
    b"\xc1\x01\x01\x00" + bytes(40),
    b"\xc1\x01\x02\x00" + bytes(30),
    b"\xdd\xff\xff\xff\xff",
    _heartbeat,
    _heartbeat[:-1],
    msgpack.packb({"type": "get", "key": "k", "id": 1}),
    msgpack.packb({"type": "get", "key": "k", "id": 1, "token": SECRET.decode()}),
    b"\x81\xa4type" + b"\x91" * 1000 + b"\xc0",
    b"\x91" * 2000,
    PeerAuth(b"x" * 32, PEER, 5).seal(ME, _heartbeat),
]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_target_accepts_the_corpus(name: str) -> None:
    for data in CORPUS + seeds():
        TARGETS[name](data)


def test_the_auth_target_flags_a_datagram_that_passes() -> None:
    with pytest.raises(Crash):
        TARGETS["auth"](PeerAuth(SECRET, PEER, 5).seal(ME, _heartbeat))

"""wire.auth: sealing and opening peer datagrams, the replay window, epochs, hostile input."""

from __future__ import annotations

import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftd.wire import auth
from raftd.wire.auth import (
    FOREIGN_CLUSTER,
    REPLAY_WINDOW,
    REPLAYED,
    UNAUTHENTICATED,
    AuthError,
    PeerAuth,
)

SECRET = b"0123456789abcdef0123456789abcdef"
OTHER = b"fedcba9876543210fedcba9876543210"
A, B, C = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"


def pair(epoch: int = 1) -> tuple[PeerAuth, PeerAuth]:
    return PeerAuth(SECRET, A, epoch), PeerAuth(SECRET, B, 99)


def reason(receiver: PeerAuth, datagram: bytes) -> str:
    with pytest.raises(AuthError) as info:
        receiver.open(datagram)
    return info.value.reason


def test_a_sealed_datagram_opens_to_its_sender_and_payload() -> None:
    a, b = pair()
    sealed = a.seal(B, b"hello")
    assert len(sealed) == len(b"hello") + a.overhead
    assert b.open(sealed) == (A, b"hello")
    assert b.open(a.seal(B, b"")) == (A, b"")  # empty payloads are fine too


def test_the_layout_is_the_documented_one() -> None:
    a, _ = pair(epoch=0x1122334455667788)
    sealed = a.seal(B, b"xyz")
    assert sealed[:4] == bytes((0xC1, auth.VERSION, auth.KIND, 0))
    assert sealed[4:12] == a.cluster_id
    assert sealed[12:20] == bytes.fromhex("1122334455667788")
    assert sealed[20:28] == (0).to_bytes(8, "big")
    assert sealed[28] == len(A) and sealed[29:29 + len(A)] == A.encode()
    assert sealed[29 + len(A):-32] == b"xyz"
    mac_key, _ = auth.derive(SECRET)
    body = sealed[:-32]
    expected = hmac.new(mac_key, body + bytes((len(B),)) + B.encode(), "sha256").digest()
    assert sealed[-32:] == expected


def test_counters_count_per_destination() -> None:
    a, _ = pair()
    assert [a.seal(B, b"")[20:28] for _ in range(3)] == [n.to_bytes(8, "big") for n in range(3)]
    assert a.seal(C, b"")[20:28] == (0).to_bytes(8, "big")


def test_plain_messages_are_unauthenticated() -> None:
    _, b = pair()
    assert reason(b, b"\x85\xa1v\x01") == UNAUTHENTICATED  # a msgpack map: a plain peer message
    assert reason(b, b"") == UNAUTHENTICATED


def test_a_wrong_secret_is_another_cluster() -> None:
    rogue = PeerAuth(OTHER, A, 5)
    _, b = pair()
    assert reason(b, rogue.seal(B, b"vote for me")) == FOREIGN_CLUSTER


def test_a_forged_tag_or_altered_byte_is_unauthenticated() -> None:
    a, b = pair()
    sealed = a.seal(B, b"payload")
    for i in range(4, len(sealed)):
        if 4 <= i < 12:
            continue  # the cluster id: "foreign", tested above
        altered = bytearray(sealed)
        altered[i] ^= 0x01
        assert reason(b, bytes(altered)) == UNAUTHENTICATED, i
    assert b.open(sealed) == (A, b"payload")  # the failures did not consume the counter


def test_a_datagram_sealed_for_another_node_fails() -> None:
    a, _ = pair()
    c = PeerAuth(SECRET, C, 7)
    assert reason(c, a.seal(B, b"for B")) == UNAUTHENTICATED


def test_replays_are_dropped_reordering_within_the_window_is_not() -> None:
    a, b = pair()
    sealed = [a.seal(B, bytes([i % 256])) for i in range(REPLAY_WINDOW + 10)]
    assert b.open(sealed[5])[1] == bytes([5])
    assert reason(b, sealed[5]) == REPLAYED
    for i in (0, 3, 4, 6, 9):  # late but within the window: delivered once
        b.open(sealed[i])
        assert reason(b, sealed[i]) == REPLAYED
    b.open(sealed[REPLAY_WINDOW + 9])
    assert reason(b, sealed[9]) == REPLAYED  # seen
    assert reason(b, sealed[7]) == REPLAYED  # never seen, but now older than the window
    b.open(sealed[10])  # exactly at the window's far edge: still accepted
    assert reason(b, sealed[10]) == REPLAYED


def test_a_restarted_peer_is_heard_at_once_and_its_old_epoch_is_not_confused() -> None:
    a1, b = pair(epoch=1)
    old = [a1.seal(B, b"old") for _ in range(3)]
    b.open(old[2])
    a2 = PeerAuth(SECRET, A, 2)  # the restart: counters start again from 0
    assert b.open(a2.seal(B, b"new")) == (A, b"new")
    assert reason(b, old[2]) == REPLAYED
    b.open(old[1])  # a late datagram of the previous incarnation, never seen: harmless


def test_retired_epochs_stay_refused() -> None:
    _, b = pair()
    first = PeerAuth(SECRET, A, 1000)
    captured = [first.seal(B, b"x") for _ in range(2)]
    b.open(captured[0])
    for epoch in range(auth.LIVE_EPOCHS):  # restarts push epoch 1000 out of the live ones
        b.open(PeerAuth(SECRET, A, epoch).seal(B, b"y"))
    assert reason(b, captured[1]) == REPLAYED


def test_a_counter_jump_past_the_window_does_not_blow_up() -> None:
    a, b = pair()
    b.open(a.seal(B, b"0"))
    a._counters[B] = 2**64 - 1
    b.open(a.seal(B, b"far"))
    assert b._senders[A].live[1].seen == 1


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        PeerAuth(b"short", A, 1)
    with pytest.raises(ValueError):
        PeerAuth(SECRET, A, -1)
    with pytest.raises(ValueError):
        PeerAuth(SECRET, "x" * 256, 1)


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_auth_error(data: bytes) -> None:
    _, b = pair()
    with pytest.raises(AuthError):
        b.open(data)


@given(st.binary(max_size=64), st.data())
def test_truncated_and_mutated_datagrams_raise_only_auth_error(
    payload: bytes, data: st.DataObject
) -> None:
    a, b = pair()
    sealed = a.seal(B, payload)
    cut = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    with pytest.raises(AuthError):
        b.open(sealed[:cut])
    index = data.draw(st.integers(min_value=0, max_value=len(sealed) - 1))
    flip = data.draw(st.integers(min_value=1, max_value=255))
    mutated = bytearray(sealed)
    mutated[index] ^= flip
    with pytest.raises(AuthError):
        b.open(bytes(mutated))
    assert b.open(sealed) == (A, payload)


@given(st.lists(st.integers(min_value=0, max_value=3 * REPLAY_WINDOW), max_size=60))
def test_the_window_accepts_each_counter_at_most_once(order: list[int]) -> None:
    """Oracle: a counter is accepted iff never accepted before and within the window."""
    a, b = pair()
    sealed = {}
    accepted: set[int] = set()
    top = -1
    for counter in order:
        if counter not in sealed:
            a._counters[B] = counter
            sealed[counter] = a.seal(B, b"")
        expect = counter not in accepted and counter > top - REPLAY_WINDOW
        try:
            b.open(sealed[counter])
            got = True
        except AuthError as e:
            assert e.reason == REPLAYED
            got = False
        assert got == expect, (counter, top)
        if got:
            accepted.add(counter)
            top = max(top, counter)

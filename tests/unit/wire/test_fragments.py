"""raftd.wire.fragments: transfers over a seeded lossy in-memory network, bounds, hostile input.

``Net`` is a deterministic discrete-event link (virtual time, no sleeps): every datagram may be
lost, duplicated or delayed out of order by a ``random.Random(seed)``; the seed is in each
test id and assertion message.
"""

from __future__ import annotations

import heapq
import random
import struct
import zlib
from dataclasses import dataclass, field

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftd.core.messages import MsgHeartbeat
from raftd.wire.errors import DecodeError
from raftd.wire.fragments import (
    ACK,
    ACK_HEADER_BYTES,
    ACK_REQUESTED,
    DATA,
    DATA_HEADER_BYTES,
    MAGIC,
    MAX_ACK_BYTES,
    REFUSED,
    VERSION,
    FragmentReceiver,
    FragmentSender,
    is_ack,
    is_fragment,
)
from raftd.wire.peer import encode_peer

SRC = "sender"
DATA_FORMAT = struct.Struct(">BBBBQIIQI")
ACK_FORMAT = struct.Struct(">BBBBQII")


def data_datagram(tid: int, index: int, count: int, payload: bytes, *, flags: int = 0,
                  crc: int | None = None) -> bytes:
    """Fragment ``index`` of ``payload`` cut in ``count``, built from the documented format."""
    chunk = -(-len(payload) // count)
    crc = zlib.crc32(payload) if crc is None else crc
    header = DATA_FORMAT.pack(MAGIC, VERSION, DATA, flags, tid, index, count, len(payload), crc)
    return header + payload[index * chunk:(index + 1) * chunk]


def ack_fields(datagram: bytes) -> tuple[int, int, int, int, bytes]:
    """(flags, transfer id, count, cumulative, bitmap) of an ACK."""
    magic, version, kind, flags, tid, count, cum = ACK_FORMAT.unpack_from(datagram)
    assert (magic, version, kind) == (MAGIC, VERSION, ACK)
    return flags, tid, count, cum, datagram[ACK_HEADER_BYTES:]


@dataclass
class Net:
    """One sender, receivers by destination name, a seeded faulty link both ways."""

    seed: int
    sender: FragmentSender[str]
    receivers: dict[str, FragmentReceiver[str]]
    loss: float = 0.0
    dup: float = 0.0
    reorder: float = 0.0
    delay: float = 0.001
    now: float = 0.0
    rng: random.Random = field(init=False)
    heap: list[tuple[float, int, str, str, bytes]] = field(default_factory=list)
    sent: int = 0
    delivered: dict[str, list[bytes]] = field(default_factory=dict)
    completed: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def put(self, direction: str, peer: str, datagram: bytes) -> None:
        limit = self.sender.max_chunk + DATA_HEADER_BYTES if direction == "data" else MAX_ACK_BYTES
        assert len(datagram) <= limit, f"seed {self.seed}: {len(datagram)}-byte {direction}"
        self.sent += 1
        if self.rng.random() < self.loss:
            return
        for _ in range(2 if self.rng.random() < self.dup else 1):
            due = self.now + self.delay  # a FIFO link, but for the datagrams held back
            if self.rng.random() < self.reorder:
                due += self.delay * self.rng.random() * 20
            heapq.heappush(self.heap, (due, self.sent, direction, peer, datagram))

    def pump(self) -> None:
        for dst, datagram in self.sender.poll(self.now):
            self.put("data", dst, datagram)
        self.completed += self.sender.completed()
        self.failed += self.sender.failed()

    def run(self, transfers: int, time_limit: float = 600.0) -> None:
        """Advance virtual time until ``transfers`` outcomes are known."""
        self.pump()
        while len(self.completed) + len(self.failed) < transfers:
            deadline = self.sender.next_deadline()
            due = min(self.heap[0][0] if self.heap else float("inf"),
                      float("inf") if deadline is None else deadline)
            assert due < time_limit, f"seed {self.seed}: stuck at t={self.now:.3f}"
            self.now = max(self.now, due)
            while self.heap and self.heap[0][0] <= self.now:
                _, _, direction, peer, datagram = heapq.heappop(self.heap)
                if direction == "data":
                    acks, payload = self.receivers[peer].on_data(SRC, datagram, self.now)
                    for ack in acks:
                        self.put("ack", peer, ack)
                    if payload is not None:
                        self.delivered.setdefault(peer, []).append(payload)
                else:
                    self.sender.on_ack(peer, datagram, self.now)
                self.pump()
            self.pump()


def payload_of(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def make_net(seed: int, *, max_datagram_bytes: int = 1400, dsts: tuple[str, ...] = ("r",),
             loss: float = 0.0, dup: float = 0.0, reorder: float = 0.0) -> Net:
    sender: FragmentSender[str] = FragmentSender(max_datagram_bytes, window=64)
    receivers = {dst: FragmentReceiver[str](8 << 20) for dst in dsts}
    return Net(seed, sender, receivers, loss=loss, dup=dup, reorder=reorder)


# -- the format -------------------------------------------------------------------------------


def test_fragments_are_told_apart_from_peer_messages_by_their_first_byte() -> None:
    regular = encode_peer(MsgHeartbeat(term=1, src="a:1", dst="b:2", leader_commit=0))
    assert not is_fragment(regular) and not is_fragment(b"")
    with pytest.raises(msgpack.exceptions.FormatError):
        msgpack.unpackb(bytes([MAGIC]))  # 0xC1 is "never used" in msgpack
    sender: FragmentSender[str] = FragmentSender(400)
    sender.send("r", b"x" * 1000)
    datagrams = [d for _, d in sender.poll(0.0)]
    assert all(is_fragment(d) and not is_ack(d) for d in datagrams)
    acks, _ = FragmentReceiver[str](1 << 20).on_data(SRC, datagrams[-1], 0.0)
    assert acks and all(is_fragment(a) and is_ack(a) for a in acks)


def test_data_datagrams_follow_the_documented_layout() -> None:
    payload = payload_of(1, 1000)
    sender: FragmentSender[str] = FragmentSender(DATA_HEADER_BYTES + 300, first_transfer_id=77)
    assert sender.send("r", payload) == 77
    datagrams = [d for _, d in sender.poll(0.0)]
    # ceil(1000 / 300) = 4 fragments of ceil(1000 / 4) = 250 bytes
    assert datagrams == [
        data_datagram(77, i, 4, payload, flags=ACK_REQUESTED if i == 3 else 0) for i in range(4)
    ]


def test_acks_are_cumulative_and_selective() -> None:
    payload = payload_of(2, 10_000)
    receiver = FragmentReceiver[str](1 << 20)
    acks, _ = receiver.on_data(SRC, data_datagram(5, 0, 10, payload), 0.0)
    assert acks == []  # in order: acknowledged later, in bulk
    acks, _ = receiver.on_data(SRC, data_datagram(5, 3, 10, payload), 0.0)
    assert ack_fields(acks[0]) == (0, 5, 10, 1, bytes([0b10]))  # 0 arrived; 1 missing; 3 arrived
    acks, _ = receiver.on_data(SRC, data_datagram(5, 1, 10, payload), 0.0)
    assert ack_fields(acks[0]) == (0, 5, 10, 2, bytes([0b1]))
    acks, _ = receiver.on_data(SRC, data_datagram(5, 2, 10, payload, flags=ACK_REQUESTED), 0.0)
    assert ack_fields(acks[0]) == (0, 5, 10, 4, b"")


# -- transfers over a faulty network ----------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("loss", [0.1, 0.3])
def test_reassembly_under_loss_duplication_and_reordering(seed: int, loss: float) -> None:
    net = make_net(seed, loss=loss, dup=0.05, reorder=0.1)
    payloads = [payload_of(seed * 10 + i, size) for i, size in enumerate((150_000, 1401, 20_000))]
    ids = [net.sender.send("r", p) for p in payloads]
    net.run(len(ids))
    assert net.failed == [], f"seed {seed}"
    assert net.completed == [("r", i) for i in ids], f"seed {seed}"
    assert net.delivered["r"] == payloads, f"seed {seed}"
    assert net.receivers["r"].buffered_bytes == 0


@pytest.mark.parametrize("seed", [4, 5])
def test_one_mib_in_1200_byte_datagrams_at_one_percent_loss(seed: int) -> None:
    net = make_net(seed, max_datagram_bytes=1200, loss=0.01, reorder=0.01)
    payload = payload_of(seed, 1 << 20)
    tid = net.sender.send("r", payload)
    net.run(1)
    assert net.completed == [("r", tid)] and net.delivered["r"] == [payload], f"seed {seed}"
    fragments = -(-len(payload) // (1200 - DATA_HEADER_BYTES))
    assert net.sender.retransmissions < fragments // 10, f"seed {seed}: whole-message retries?"


def test_transfers_to_several_destinations_interleave() -> None:
    net = make_net(6, dsts=("r1", "r2"), loss=0.05, reorder=0.05)
    sent = {dst: [payload_of(n * 10 + i, 30_000 + i) for i in range(3)]
            for n, dst in enumerate(("r1", "r2"))}
    for i in range(3):
        for dst in ("r1", "r2"):
            net.sender.send(dst, sent[dst][i])
    net.run(6)
    assert net.failed == [] and net.delivered == sent


def test_window_bounds_fragments_in_flight_and_a_timeout_restarts_from_one() -> None:
    sender: FragmentSender[str] = FragmentSender(1400, window=4, rto_initial=0.5)
    sender.send("r", bytes(100_000))
    assert len(sender.poll(0.0)) == 4
    assert sender.poll(0.1) == []  # nothing acknowledged, nothing new
    assert sender.next_deadline() == 0.5
    retransmitted = sender.poll(0.5)
    assert len(retransmitted) == 1 and sender.retransmissions == 1
    assert sender.next_deadline() == 0.5 + 1.0  # backed off


# -- failure, superseding, queue bounds -------------------------------------------------------


def test_a_transfer_fails_after_max_retries_when_the_receiver_is_gone() -> None:
    sender: FragmentSender[str] = FragmentSender(1400, rto_initial=0.1, rto_max=1.0,
                                                 max_retries=5)
    first = sender.send("gone", bytes(50_000))
    second = sender.send("gone", bytes(50_000))
    datagrams = len(sender.poll(0.0))
    timeouts = []
    while not (failed := sender.failed()):
        deadline = sender.next_deadline()
        assert deadline is not None
        timeouts.append(round(deadline, 6))
        datagrams += len(sender.poll(deadline))
    # five retransmissions backed off 0.1, 0.2, 0.4, 0.8, 1.0 (capped); given up at the sixth
    assert timeouts == [0.1, 0.3, 0.7, 1.5, 2.5, 3.5]
    assert failed == [("gone", first), ("gone", second)]  # the queue behind it fails too
    assert datagrams == 10 + 5  # the initial window, then one fragment per timeout
    assert sender.next_deadline() is None and sender.completed() == []


def test_a_refusing_receiver_fails_the_transfer_at_once() -> None:
    net = make_net(7)
    net.receivers["r"] = FragmentReceiver[str](10_000)
    big = net.sender.send("r", bytes(20_000))
    small = net.sender.send("r", b"s" * 5000)
    net.run(2)
    assert net.failed == [("r", big)] and net.completed == [("r", small)]
    assert net.now < 0.1


def test_a_superseding_send_abandons_the_older_one_silently() -> None:
    net = make_net(8, loss=0.05)
    old = net.sender.send("r", b"old" * 20_000, supersede=True)
    app = net.sender.send("r", b"app" * 1000)
    net.pump()  # the old snapshot is partly on its way
    new = net.sender.send("r", b"new" * 20_000, supersede=True)
    assert new != old
    net.run(2)
    assert net.completed == [("r", app), ("r", new)] and net.failed == []
    assert net.delivered["r"] == [b"app" * 1000, b"new" * 20_000]


def test_sends_beyond_the_queue_bound_fail_at_once() -> None:
    sender: FragmentSender[str] = FragmentSender(1400, max_transfers_per_dst=2)
    ids = [sender.send("r", b"x" * 2000) for _ in range(3)]
    assert sender.failed() == [("r", ids[2])]


# -- receiver bounds, CRC, expiry, duplicates -------------------------------------------------


def test_crc_mismatch_is_rejected_and_fails_the_sender() -> None:
    payload = payload_of(9, 3000)
    sender: FragmentSender[str] = FragmentSender(1400)
    receiver = FragmentReceiver[str](1 << 20)
    tid = sender.send("r", payload)
    datagrams = [bytearray(d) for _, d in sender.poll(0.0)]
    datagrams[1][-1] ^= 0xFF
    acks: list[bytes] = []
    results = []
    for d in datagrams:
        a, delivered = receiver.on_data(SRC, bytes(d), 0.0)
        acks += a
        results.append(delivered)
    assert results == [None, None, None]
    assert ack_fields(acks[-1])[0] == REFUSED
    sender.on_ack("r", acks[-1], 0.0)
    assert sender.failed() == [("r", tid)] and receiver.buffered_bytes == 0


def test_memory_is_bounded_per_peer_and_in_total() -> None:
    receiver = FragmentReceiver[str](10_000, max_transfers_per_peer=2, max_total_bytes=25_000)
    for tid in range(100):  # a hostile peer opens transfers and never finishes them
        acks, _ = receiver.on_data("evil", data_datagram(tid, 0, 3, bytes(6000)), 0.0)
        assert receiver.buffered_bytes <= 10_000
    acks, _ = receiver.on_data("evil", data_datagram(1000, 0, 20, bytes(20_000)), 0.0)
    assert ack_fields(acks[0])[0] == REFUSED  # larger than a peer may ever hold
    # newest wins: a peer's latest transfer survives its own churn
    receiver.on_data("evil", data_datagram(99, 1, 3, bytes(6000)), 0.0)
    _, delivered = receiver.on_data("evil", data_datagram(99, 2, 3, bytes(6000)), 0.0)
    assert delivered == bytes(6000)
    for peer in range(10):  # many source addresses: the total bound evicts the least recent
        receiver.on_data(f"spoofed{peer}", data_datagram(1, 0, 3, bytes(9000)), float(peer))
        assert receiver.buffered_bytes <= 25_000
    assert receiver.buffered_bytes == 18_000
    receiver.on_data("spoofed9", data_datagram(1, 1, 3, bytes(9000)), 10.0)
    _, delivered = receiver.on_data("spoofed9", data_datagram(1, 2, 3, bytes(9000)), 10.0)
    assert delivered == bytes(9000)


def test_stale_transfers_expire() -> None:
    receiver = FragmentReceiver[str](1 << 20, timeout=30.0)
    receiver.on_data(SRC, data_datagram(1, 0, 2, bytes(2000)), 0.0)
    assert receiver.expire(29.0) == 0 and receiver.buffered_bytes == 2000
    assert receiver.expire(30.0) == 1 and receiver.buffered_bytes == 0
    receiver.on_data(SRC, data_datagram(2, 0, 2, bytes(2000)), 31.0)
    receiver.on_data(SRC, data_datagram(3, 0, 2, bytes(2000)), 100.0)  # sweeps lazily
    assert receiver.buffered_bytes == 2000


def test_late_duplicates_of_a_completed_transfer_are_reacknowledged() -> None:
    payload = payload_of(11, 2500)
    receiver = FragmentReceiver[str](1 << 20)
    receiver.on_data(SRC, data_datagram(4, 0, 2, payload), 0.0)
    _, delivered = receiver.on_data(SRC, data_datagram(4, 1, 2, payload), 0.0)
    assert delivered == payload
    acks, delivered = receiver.on_data(SRC, data_datagram(4, 0, 2, payload), 1.0)
    assert delivered is None and ack_fields(acks[0])[:4] == (0, 4, 2, 2)
    assert receiver.buffered_bytes == 0


def test_a_restarted_sender_reusing_an_id_replaces_the_stale_reassembly() -> None:
    before, after = payload_of(12, 4000), payload_of(13, 4000)
    receiver = FragmentReceiver[str](1 << 20)
    receiver.on_data(SRC, data_datagram(0, 0, 3, before), 0.0)
    receiver.on_data(SRC, data_datagram(0, 1, 3, before), 0.0)
    for i in (2, 0, 1):
        _, delivered = receiver.on_data(SRC, data_datagram(0, i, 3, after), 1.0)
    assert delivered == after and receiver.buffered_bytes == 0


# -- hostile input ----------------------------------------------------------------------------


@given(st.binary(max_size=200))
def test_on_data_raises_only_decode_error_on_random_bytes(junk: bytes) -> None:
    receiver = FragmentReceiver[str](1 << 16, 2)
    for datagram in (junk, bytes([MAGIC, VERSION, DATA]) + junk):
        try:
            receiver.on_data(SRC, datagram, 0.0)
        except DecodeError:
            pass


@given(st.lists(st.tuples(
    st.integers(0, 255), st.integers(0, 3), st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 300),
    st.sampled_from(["a", "b", "c"]),
), max_size=30))
def test_on_data_with_forged_headers_stays_within_bounds(
    forged: list[tuple[int, int, int, int, int, int, str]],
) -> None:
    receiver = FragmentReceiver[str](5000, 2, max_total_bytes=8000)
    for flags, tid, index, count, total, size, src in forged:
        header = DATA_FORMAT.pack(MAGIC, VERSION, DATA, flags, tid, index % (count + 1), count,
                                  total % 20_000, 0)
        try:
            acks, _ = receiver.on_data(src, header + bytes(size), float(tid))
        except DecodeError:
            continue
        assert all(len(a) <= MAX_ACK_BYTES for a in acks)
        assert receiver.buffered_bytes <= 8000


@given(st.binary(max_size=300), st.integers(0, 255), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.binary(max_size=300))
def test_on_ack_raises_only_decode_error(junk: bytes, flags: int, count: int, cum: int,
                                         bitmap: bytes) -> None:
    sender: FragmentSender[str] = FragmentSender(1400)
    tid = sender.send("r", bytes(100_000))
    sender.poll(0.0)
    forged = ACK_FORMAT.pack(MAGIC, VERSION, ACK, flags, tid, count, cum) + bitmap
    for datagram in (junk, bytes([MAGIC, VERSION, ACK]) + junk, forged):
        try:
            sender.on_ack("r", datagram, 0.01)
        except DecodeError:
            pass
        sender.poll(0.02)

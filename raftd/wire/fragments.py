"""Fragmentation of peer messages larger than one UDP datagram (sans-IO).

Theory of operation
-------------------
A peer message (``wire.peer`` bytes) longer than ``max_datagram_bytes`` travels as a
*transfer*: the payload is cut into ``count`` fragments, sent under a bounded, loss-adaptive
window and acknowledged selectively, so a lost datagram costs one retransmitted fragment, never
the whole message. This module only turns calls into datagrams: the runtime feeds it received
datagrams and the time (``now``, seconds), and transmits what ``FragmentSender.poll`` returns.

Datagrams. Byte 0 is ``MAGIC`` = 0xC1, the one byte msgpack never uses, so a fragment is told
apart from a regular peer message (a msgpack map: 0x80-0x8f, 0xde, 0xdf) by its first byte.
All integers are big-endian::

    DATA  magic u8 | version u8 | kind=1 u8 | flags u8 | transfer u64 | index u32 | count u32
          | total u64 | crc32 u32 | bytes of the fragment               (32-byte header)
    ACK   magic u8 | version u8 | kind=2 u8 | flags u8 | transfer u64 | count u32
          | cumulative u32 | selective bitmap                           (20-byte header)

- Fragment ``index`` covers payload bytes ``[index * chunk, min((index + 1) * chunk, total))``
  with ``chunk = ceil(total / count)``; every fragment is non-empty. ``crc32`` (zlib) is the
  CRC of the whole payload, checked once reassembled.
- An ACK says: fragments ``< cumulative`` arrived, and bit ``j`` of the little-endian bitmap
  says fragment ``cumulative + 1 + j`` arrived. ``cumulative == count`` means complete.
  Flag ``REFUSED`` means the receiver gave the transfer up (no memory for it, or its CRC did
  not match): the sender fails it at once instead of retrying until it gives up.
- DATA flag ``ACK_REQUESTED`` asks for an immediate ack. The receiver otherwise acks every
  ``ACK_EVERY`` fragments arriving in sequence, and at once on a fragment that opens or fills
  a gap, a duplicate or the last fragment. So a sender with at least ``ACK_EVERY`` fragments
  in flight always hears back; it sets the flag only where it could otherwise wait for
  nothing: on retransmissions, and on the last fragment of a burst when its window is smaller
  than ``ACK_EVERY`` or it has nothing more to send. (Flagging every burst would turn into one
  ack per datagram.)
- Both ends refuse to look further than ``MAX_SPAN`` fragments past the first missing one, so
  the bitmap never exceeds ``MAX_SPAN / 8`` bytes: an ACK is at most ``MAX_ACK_BYTES``.

What identifies a transfer. The receiver keys a transfer by (source address, transfer id) and
additionally requires ``count``, ``total`` and ``crc32`` to match: a restarted sender whose new
ids collide with remembered ones replaces the stale reassembly, or, if the payload is
byte-identical, is told it already arrived, which is true. The sender draws ids sequentially
from ``first_transfer_id`` (the runtime seeds it with random bits, so collisions are rare too).

Sender (per destination, a *flow*). Transfers to one destination queue FIFO; only the head is
sent, so the flow's window and its loss state belong to one transfer at a time. In-flight
fragments are kept in send order, each with a sequence number; loss is detected the RACK way
(an unacked fragment sent ``REORDER_TOLERANCE`` sends before an acknowledged one is lost) and
by the retransmission timer (RFC 6298 estimator, Karn's rule, exponential backoff capped at
``rto_max``; any newly acknowledged fragment ends the backoff). The window is a congestion
window (slow start, then additive increase; cut by ``LOSS_BETA`` once per loss episode,
reset to 1 on a timeout) capped at ``window`` fragments: Raft's heartbeats share the path and
must not drown behind a 100 MB snapshot. A transfer fails when ``max_retries`` timeouts in a
row brought no newly acknowledged fragment (a count, not a duration: at 30% loss one round trip
in two fails, and a time limit would give up on a slow but live peer); the transfers queued
behind it to that destination fail with it (the peer is gone).

Superseding (the choice made for snapshots). ``send(..., supersede=True)`` abandons every
queued or active transfer to the same destination that was itself sent with ``supersede=True``
*without reporting it*: a newer MsgSnap makes the older one useless, and reporting its failure
would make the leader's Progress (now tracking the newer one) abort the newer transfer. Other
transfers (large MsgApps) are never superseded: dropping one would open a gap in the log.
Invariant: every other transfer id ``send`` returns appears exactly once in ``completed()`` or
``failed()``.

Receiver. Each transfer reassembles into one preallocated buffer of ``total`` bytes, counted
against ``max_bytes_per_peer`` (declared size, not received size, so memory is bounded up
front) and ``max_total_bytes``. A transfer larger than the per-peer bound is refused; one that
does not fit evicts the same peer's least recently active transfers first (newest wins: an
older one was superseded or belongs to a dead incarnation), then anyone's. A transfer idle for
``timeout`` seconds is dropped. Completed ids are remembered for ``timeout`` seconds, so late
duplicates are re-acknowledged instead of starting a reassembly.

Hostile input: the parsers raise ``DecodeError`` and nothing else.
"""

from __future__ import annotations

import struct
import zlib
from collections import OrderedDict, deque
from collections.abc import Hashable
from typing import Generic, TypeVar

from raftd.wire.errors import DecodeError

MAGIC = 0xC1
"""First byte of every fragment datagram: never the first byte of a msgpack object."""
VERSION = 1
"""Fragment format version; a datagram with another one is refused."""

DATA = 1
ACK = 2
ACK_REQUESTED = 0x01
"""DATA flag: the sender is about to wait, acknowledge now."""
REFUSED = 0x01
"""ACK flag: the receiver dropped the transfer; retrying it is pointless."""
ACK_EVERY = 8
"""A receiver acknowledges at least every that many fragments arriving in sequence (senders
rely on it: a protocol constant, not a setting)."""

# magic, version, kind, flags, transfer, index, count, total, crc32
_DATA = struct.Struct(">BBBBQIIQI")
_ACK = struct.Struct(">BBBBQII")  # magic, version, kind, flags, transfer, count, cumulative
DATA_HEADER_BYTES = _DATA.size
ACK_HEADER_BYTES = _ACK.size

MAX_SPAN = 2048
"""Fragments beyond the first missing one that a sender may send and a receiver accepts."""
MAX_ACK_BYTES = ACK_HEADER_BYTES + MAX_SPAN // 8
REORDER_TOLERANCE = 3
"""Sends after which an unacknowledged fragment, overtaken by an acknowledged one, is lost."""
INITIAL_CWND = 10.0
LOSS_BETA = 0.7
"""The window is multiplied by this once per loss episode (CUBIC's factor, RFC 9438: a random
1% loss costs much less throughput than Reno's 0.5, and a congested path still drains)."""
REMEMBERED_COMPLETIONS = 1024
"""Completed transfer ids a receiver remembers (across peers) to re-acknowledge duplicates."""
_U64 = (1 << 64) - 1

P = TypeVar("P", bound=Hashable)
"""How the runtime names a peer (a node id for the sender, a UDP address for the receiver)."""


def is_fragment(datagram: bytes) -> bool:
    """True when ``datagram`` is a fragment (DATA or ACK), not a regular peer message."""
    return len(datagram) > 0 and datagram[0] == MAGIC


def is_ack(datagram: bytes) -> bool:
    """True when ``datagram`` is a fragment ACK (for the sender), not DATA (for the receiver)."""
    return len(datagram) > 2 and datagram[0] == MAGIC and datagram[2] == ACK


def _check_prefix(datagram: bytes, kind: int, header_bytes: int) -> None:
    if len(datagram) < header_bytes:
        raise DecodeError(f"fragment datagram of {len(datagram)} bytes is shorter than its header")
    if datagram[0] != MAGIC:
        raise DecodeError("not a fragment datagram")
    if datagram[1] != VERSION:
        raise DecodeError(f"unsupported fragment format version {datagram[1]}")
    if datagram[2] != kind:
        raise DecodeError(f"fragment kind {datagram[2]} where {kind} was expected")


def _trailing_ones(bits: int) -> int:
    return (~bits & (bits + 1)).bit_length() - 1


def _ack(transfer_id: int, count: int, cumulative: int, above: int, flags: int = 0) -> bytes:
    """An ACK; ``above`` has bit j set when fragment ``cumulative + 1 + j`` arrived."""
    bitmap = above.to_bytes((above.bit_length() + 7) // 8, "little")
    return _ACK.pack(MAGIC, VERSION, ACK, flags, transfer_id, count, cumulative) + bitmap


# -- sender ----------------------------------------------------------------------------------


class _Outgoing:
    """One payload being sent.

    Invariant: each fragment index is in exactly one of: acknowledged (``< cum`` or set in
    ``sacked``), ``in_flight``, ``lost`` (awaiting retransmission) or unsent (``>= next_new``);
    ``lost`` may also hold stale indexes acknowledged since, which are skipped.
    """

    __slots__ = ("chunk", "count", "crc", "cum", "id", "in_flight", "lost", "next_new",
                 "retries", "sacked", "supersede", "total", "view")

    def __init__(self, transfer_id: int, payload: bytes, max_chunk: int, supersede: bool) -> None:
        self.id = transfer_id
        self.view = memoryview(payload)
        self.total = len(payload)
        self.count = -(-self.total // max_chunk)
        self.chunk = -(-self.total // self.count)
        self.crc = zlib.crc32(payload)
        self.supersede = supersede
        self.cum = 0
        """Fragments below this index are all acknowledged."""
        self.sacked = 0
        """Bit k: fragment ``cum + k`` is acknowledged (so bit 0 is clear while incomplete)."""
        self.next_new = 0
        """Lowest index never sent."""
        self.in_flight: OrderedDict[int, tuple[int, float, bool]] = OrderedDict()
        """index -> (send sequence, sent at, is a retransmission), oldest send first."""
        self.lost: deque[int] = deque()
        self.retries = 0
        """Timeouts since the destination last acknowledged something new."""

    def is_acked(self, index: int) -> bool:
        return index < self.cum or bool((self.sacked >> (index - self.cum)) & 1)

    def datagram(self, index: int, flags: int) -> bytes:
        start = index * self.chunk
        header = _DATA.pack(MAGIC, VERSION, DATA, flags, self.id, index, self.count, self.total,
                            self.crc)
        return header + self.view[start:start + self.chunk]


class _Flow:
    """Transfers queued for one destination, and the path's congestion and RTT state."""

    __slots__ = ("cwnd", "highest_acked_seq", "next_seq", "recovery_seq", "rto", "rttvar",
                 "srtt", "ssthresh", "transfers")

    def __init__(self, rto_initial: float) -> None:
        self.transfers: deque[_Outgoing] = deque()
        """FIFO; only the head is being sent."""
        self.cwnd = INITIAL_CWND
        self.ssthresh = float("inf")
        self.srtt: float | None = None
        self.rttvar = 0.0
        self.rto = rto_initial
        self.next_seq = 0
        """Sequence number of the last transmission (fragments sent later have greater ones)."""
        self.recovery_seq = 0
        """The window was last cut when ``next_seq`` was this: older losses do not cut it again."""
        self.highest_acked_seq = 0


class FragmentSender(Generic[P]):
    """Sends payloads as fragments with selective acks, a congestion window and retransmission.

    The runtime calls ``send`` to start a transfer, ``on_ack`` with every ACK datagram,
    ``poll(now)`` after either of those and when ``next_deadline()`` is reached, and transmits
    what ``poll`` returns; it drains ``completed()`` and ``failed()`` after ``on_ack`` and
    ``poll``.
    """

    def __init__(
        self,
        max_datagram_bytes: int,
        *,
        window: int = 256,
        rto_initial: float = 0.2,
        rto_min: float = 0.05,
        rto_max: float = 1.0,
        max_retries: int = 15,
        max_transfers_per_dst: int = 8,
        first_transfer_id: int = 0,
    ) -> None:
        """``window``: at most that many fragments in flight per destination (1..MAX_SPAN).

        ``max_retries``: timeouts in a row without a newly acknowledged fragment after which a
        transfer fails (with the defaults a silent peer is given up after 13 to 15 s).
        ``max_transfers_per_dst``: active plus queued; a ``send`` beyond it fails at once.
        """
        if max_datagram_bytes < MAX_ACK_BYTES:  # the receiver's acks must fit too
            raise ValueError(f"max_datagram_bytes must be at least {MAX_ACK_BYTES}")
        if not 1 <= window <= MAX_SPAN:
            raise ValueError(f"window must be in 1..{MAX_SPAN}")
        if max_transfers_per_dst < 1:
            raise ValueError("max_transfers_per_dst must be at least 1")
        self.max_chunk = max_datagram_bytes - DATA_HEADER_BYTES
        self.window = window
        self.rto_initial = rto_initial
        self.rto_min = rto_min
        self.rto_max = rto_max
        self.max_retries = max_retries
        self.max_transfers_per_dst = max_transfers_per_dst
        self.retransmissions = 0
        """Fragments sent again, for metrics."""
        self._next_id = first_transfer_id & _U64
        self._flows: dict[P, _Flow] = {}
        self._completed: list[tuple[P, int]] = []
        self._failed: list[tuple[P, int]] = []

    # -- inputs --------------------------------------------------------------------------------
    def send(self, dst: P, payload: bytes, *, supersede: bool = False) -> int:
        """Queue ``payload`` for ``dst``; returns its transfer id (see module doc: superseding)."""
        if not payload:
            raise ValueError("an empty payload needs no fragmentation")
        transfer_id = self._next_id
        self._next_id = (transfer_id + 1) & _U64
        flow = self._flows.get(dst)
        if flow is None:
            flow = self._flows[dst] = _Flow(self.rto_initial)
        if supersede:
            flow.transfers = deque(t for t in flow.transfers if not t.supersede)
        if len(flow.transfers) >= self.max_transfers_per_dst:
            self._failed.append((dst, transfer_id))
        else:
            flow.transfers.append(_Outgoing(transfer_id, payload, self.max_chunk, supersede))
        return transfer_id

    def on_ack(self, src: P, datagram: bytes, now: float) -> None:
        """Take an ACK from ``src``; raises ``DecodeError`` on a malformed one.

        An ACK for a transfer that is not the one being sent to ``src`` (a late ack of a
        finished or abandoned transfer) is ignored.
        """
        _check_prefix(datagram, ACK, ACK_HEADER_BYTES)
        _, _, _, flags, transfer_id, count, cumulative = _ACK.unpack_from(datagram)
        bitmap = datagram[ACK_HEADER_BYTES:]
        if flags & ~REFUSED:
            raise DecodeError(f"unknown fragment ack flags {flags:#x}")
        if count == 0 or cumulative > count:
            raise DecodeError(f"fragment ack of {cumulative} out of {count} fragments")
        if len(bitmap) > MAX_SPAN // 8:
            raise DecodeError(f"fragment ack bitmap of {len(bitmap)} bytes")
        flow = self._flows.get(src)
        if flow is None or flow.transfers[0].id != transfer_id:
            return
        t = flow.transfers[0]
        if flags & REFUSED:
            self._finish(src, flow, self._failed)
            return
        if count != t.count:
            raise DecodeError(f"fragment ack counts {count} fragments, the transfer has {t.count}")
        above = int.from_bytes(bitmap, "little")
        cumulative = min(cumulative, t.next_new)  # beyond what was sent: a lie, and a huge shift
        if cumulative >= t.cum:
            acked = ((1 << (cumulative - t.cum)) - 1) | (above << (cumulative + 1 - t.cum))
        else:  # an ack overtaken by a newer one
            acked = above >> (t.cum - cumulative - 1)
        newly = acked & ((1 << (t.next_new - t.cum)) - 1) & ~t.sacked  # never-sent ones: lies
        if not newly:
            return
        t.sacked |= newly
        t.retries = 0
        self._on_newly_acked(flow, t, newly, now)
        ones = _trailing_ones(t.sacked)
        t.cum += ones
        t.sacked >>= ones
        if t.cum == t.count:
            self._finish(src, flow, self._completed)

    def _on_newly_acked(self, flow: _Flow, t: _Outgoing, newly: int, now: float) -> None:
        """RTT sample, window growth and loss detection for the fragments ``newly`` acked."""
        sample: float | None = None
        acked = 0
        while newly:
            low = newly & -newly
            newly ^= low
            acked += 1
            entry = t.in_flight.pop(t.cum + low.bit_length() - 1, None)
            if entry is not None:
                seq, sent_at, retransmitted = entry
                flow.highest_acked_seq = max(flow.highest_acked_seq, seq)
                if not retransmitted:  # Karn: a retransmission's ack is ambiguous
                    sample = now - sent_at
        if sample is not None:
            if flow.srtt is None:
                flow.srtt, flow.rttvar = sample, sample / 2
            else:
                flow.rttvar = 0.75 * flow.rttvar + 0.25 * abs(flow.srtt - sample)
                flow.srtt = 0.875 * flow.srtt + 0.125 * sample
        if flow.srtt is not None:  # progress ends any backoff
            flow.rto = min(max(flow.srtt + 4 * flow.rttvar, self.rto_min), self.rto_max)
        if flow.cwnd < flow.ssthresh:
            flow.cwnd += acked
        else:
            flow.cwnd += acked / flow.cwnd
        flow.cwnd = min(flow.cwnd, float(self.window))
        while t.in_flight:
            index, (seq, _, _) = next(iter(t.in_flight.items()))
            if seq + REORDER_TOLERANCE >= flow.highest_acked_seq:
                break
            del t.in_flight[index]
            t.lost.append(index)
            if seq > flow.recovery_seq:  # first loss of this episode: cut the window once
                flow.ssthresh = max(flow.cwnd * LOSS_BETA, 2.0)
                flow.cwnd = flow.ssthresh
                flow.recovery_seq = flow.next_seq

    # -- outputs -------------------------------------------------------------------------------
    def poll(self, now: float) -> list[tuple[P, bytes]]:
        """Datagrams to transmit now: due retransmissions and new fragments within the window."""
        out: list[tuple[P, bytes]] = []
        for dst, flow in list(self._flows.items()):
            t = flow.transfers[0]
            if t.in_flight:
                _, sent_at, _ = next(iter(t.in_flight.values()))
                if now >= sent_at + flow.rto:
                    if t.retries >= self.max_retries:
                        self._fail_flow(dst, flow)
                        continue
                    self._on_timeout(flow, t)
            self._transmit(dst, flow, t, now, out)
        return out

    def _on_timeout(self, flow: _Flow, t: _Outgoing) -> None:
        """RTO: everything in flight is presumed lost; back off, restart from one fragment."""
        flow.ssthresh = max(flow.cwnd * LOSS_BETA, 2.0)
        flow.cwnd = 1.0
        flow.rto = min(flow.rto * 2, self.rto_max)
        flow.recovery_seq = flow.next_seq
        t.retries += 1
        t.lost = deque(sorted({*t.lost, *t.in_flight}))
        t.in_flight.clear()

    def _transmit(self, dst: P, flow: _Flow, t: _Outgoing, now: float,
                  out: list[tuple[P, bytes]]) -> None:
        limit = min(int(flow.cwnd), self.window)
        burst: list[tuple[int, bool]] = []
        will_wait = limit < ACK_EVERY
        while len(t.in_flight) < limit:
            index = self._next_index(t)
            if index is None:
                will_wait = True
                break
            retransmit = index < t.next_new
            if retransmit:
                self.retransmissions += 1
            else:
                t.next_new += 1
            flow.next_seq += 1
            t.in_flight[index] = (flow.next_seq, now, retransmit)
            burst.append((index, retransmit))
        for n, (index, retransmit) in enumerate(burst, 1):
            flags = ACK_REQUESTED if retransmit or (will_wait and n == len(burst)) else 0
            out.append((dst, t.datagram(index, flags)))

    @staticmethod
    def _next_index(t: _Outgoing) -> int | None:
        while t.lost:
            index = t.lost.popleft()
            if not t.is_acked(index):
                return index
        if t.next_new < t.count and t.next_new < t.cum + MAX_SPAN:
            return t.next_new
        return None

    def next_deadline(self) -> float | None:
        """When ``poll`` must run next (a retransmission timer), or None when nothing waits.

        A flow with nothing in flight has not been polled since ``send``/``on_ack`` queued
        work; its deadline is 0.0 (already due).
        """
        deadline: float | None = None
        for flow in self._flows.values():
            in_flight = flow.transfers[0].in_flight
            if in_flight:
                _, sent_at, _ = next(iter(in_flight.values()))
                due = sent_at + flow.rto
            else:
                due = 0.0
            deadline = due if deadline is None else min(deadline, due)
        return deadline

    def completed(self) -> list[tuple[P, int]]:
        """Drain (dst, transfer id) of transfers the destination acknowledged whole."""
        done, self._completed = self._completed, []
        return done

    def failed(self) -> list[tuple[P, int]]:
        """Drain (dst, transfer id) of transfers given up (retries, refusal, queue bound)."""
        failed, self._failed = self._failed, []
        return failed

    def _finish(self, dst: P, flow: _Flow, outcome: list[tuple[P, int]]) -> None:
        outcome.append((dst, flow.transfers.popleft().id))
        if not flow.transfers:
            del self._flows[dst]

    def _fail_flow(self, dst: P, flow: _Flow) -> None:
        self._failed.extend((dst, t.id) for t in flow.transfers)
        del self._flows[dst]


# -- receiver --------------------------------------------------------------------------------


class _Incoming:
    """One payload being reassembled. Invariant: bit 0 of ``above_cum`` is clear."""

    __slots__ = ("above_cum", "buf", "chunk", "count", "crc", "cum", "last_active", "total",
                 "unacked")

    def __init__(self, count: int, total: int, crc: int, chunk: int, now: float) -> None:
        self.count = count
        self.total = total
        self.crc = crc
        self.chunk = chunk
        self.buf = bytearray(total)
        self.cum = 0
        """Fragments below this index all arrived."""
        self.above_cum = 0
        """Bit k: fragment ``cum + k`` arrived."""
        self.unacked = 0
        """Fragments taken in sequence since the last ack."""
        self.last_active = now


class FragmentReceiver(Generic[P]):
    """Reassembles transfers under memory bounds; answers DATA with ACKs.

    ``on_data`` per DATA datagram; ``expire(now)`` now and then (it also runs lazily from
    ``on_data``) to free the memory of transfers whose sender went away.
    """

    def __init__(
        self,
        max_bytes_per_peer: int,
        max_transfers_per_peer: int = 4,
        timeout: float = 30.0,
        *,
        max_total_bytes: int | None = None,
    ) -> None:
        """``timeout``: idle seconds before a partial transfer is dropped; also how long a
        completed id is remembered (keep it above the time a sender takes to give up).
        ``max_total_bytes`` (default four peers' worth) bounds all peers together."""
        if max_bytes_per_peer < 1 or max_transfers_per_peer < 1:
            raise ValueError("fragment receiver bounds must be positive")
        self.max_bytes_per_peer = max_bytes_per_peer
        self.max_transfers_per_peer = max_transfers_per_peer
        self.timeout = timeout
        self.max_total_bytes = (4 * max_bytes_per_peer if max_total_bytes is None
                                else max_total_bytes)
        self.buffered_bytes = 0
        """Bytes reserved by partial transfers, all peers (Invariant: <= max_total_bytes)."""
        self._transfers: OrderedDict[tuple[P, int], _Incoming] = OrderedDict()
        """Least recently active first."""
        self._bytes_of: dict[P, int] = {}
        self._count_of: dict[P, int] = {}
        self._completed: OrderedDict[tuple[P, int], tuple[int, int, int, float]] = OrderedDict()
        """(src, id) -> (count, total, crc, forget at), oldest first."""
        self._next_sweep = 0.0

    def on_data(self, src: P, datagram: bytes, now: float) -> tuple[list[bytes], bytes | None]:
        """Take one DATA datagram from ``src``: (ACKs to send back to ``src``, a payload).

        The payload is returned once, when its last fragment arrives and its CRC matches.
        Raises ``DecodeError`` (and nothing else) on a malformed datagram.
        """
        _check_prefix(datagram, DATA, DATA_HEADER_BYTES)
        _, _, _, flags, transfer_id, index, count, total, crc = _DATA.unpack_from(datagram)
        if flags & ~ACK_REQUESTED:
            raise DecodeError(f"unknown fragment flags {flags:#x}")
        if not 0 < count <= total:
            raise DecodeError(f"fragment count {count} for {total} bytes")
        chunk = -(-total // count)
        if (count - 1) * chunk >= total or index >= count:
            raise DecodeError(f"fragment {index} of {count} for {total} bytes")
        start = index * chunk
        size = min(chunk, total - start)
        if len(datagram) - DATA_HEADER_BYTES != size:
            raise DecodeError(f"fragment {index} carries {len(datagram) - DATA_HEADER_BYTES} "
                              f"bytes where {size} were expected")
        if now >= self._next_sweep:
            self.expire(now)
        key = (src, transfer_id)
        r = self._transfers.get(key)
        if r is not None and (r.count, r.total, r.crc) != (count, total, crc):
            self._drop(key)  # a restarted sender reused the id for another payload
            r = None
        if r is None:
            remembered = self._completed.get(key)
            if remembered is not None and remembered[:3] == (count, total, crc):
                return [_ack(transfer_id, count, count, 0)], None
            if total > min(self.max_bytes_per_peer, self.max_total_bytes):
                return [_ack(transfer_id, count, 0, 0, REFUSED)], None
            self._make_room(src, total)
            r = self._transfers[key] = _Incoming(count, total, crc, chunk, now)
            self._bytes_of[src] = self._bytes_of.get(src, 0) + total
            self._count_of[src] = self._count_of.get(src, 0) + 1
            self.buffered_bytes += total
        else:
            self._transfers.move_to_end(key)
            r.last_active = now
        offset = index - r.cum
        if offset < 0 or (r.above_cum >> offset) & 1:  # a duplicate: our ack may have been lost
            return [_ack(transfer_id, count, r.cum, r.above_cum >> 1)], None
        if offset >= MAX_SPAN:
            return [], None  # no conforming sender goes that far ahead
        r.buf[start:start + size] = memoryview(datagram)[DATA_HEADER_BYTES:]
        in_sequence = offset == r.above_cum.bit_length()  # neither opens nor fills a gap
        r.above_cum |= 1 << offset
        ones = _trailing_ones(r.above_cum)
        r.cum += ones
        r.above_cum >>= ones
        if r.cum == count:
            self._drop(key)
            payload = bytes(r.buf)
            if zlib.crc32(payload) != crc:
                return [_ack(transfer_id, count, 0, 0, REFUSED)], None
            self._completed[key] = (count, total, crc, now + self.timeout)
            if len(self._completed) > REMEMBERED_COMPLETIONS:
                self._completed.popitem(last=False)
            return [_ack(transfer_id, count, count, 0)], payload
        r.unacked += 1
        if flags & ACK_REQUESTED or not in_sequence or r.unacked >= ACK_EVERY:
            r.unacked = 0
            return [_ack(transfer_id, count, r.cum, r.above_cum >> 1)], None
        return [], None

    def expire(self, now: float) -> int:
        """Drop transfers idle for ``timeout`` and forget old completions; returns drops."""
        stale = [key for key, r in self._transfers.items() if now - r.last_active >= self.timeout]
        for key in stale:
            self._drop(key)
        while self._completed and next(iter(self._completed.values()))[3] <= now:
            self._completed.popitem(last=False)
        self._next_sweep = now + self.timeout / 4
        return len(stale)

    def _make_room(self, src: P, total: int) -> None:
        """Evict until a new ``total``-byte transfer from ``src`` fits every bound."""
        while (self._count_of.get(src, 0) >= self.max_transfers_per_peer
               or self._bytes_of.get(src, 0) + total > self.max_bytes_per_peer):
            self._drop(next(key for key in self._transfers if key[0] == src))
        while self.buffered_bytes + total > self.max_total_bytes:
            self._drop(next(iter(self._transfers)))

    def _drop(self, key: tuple[P, int]) -> None:
        r = self._transfers.pop(key)
        src = key[0]
        self.buffered_bytes -= r.total
        self._bytes_of[src] -= r.total
        self._count_of[src] -= 1
        if not self._count_of[src]:
            del self._bytes_of[src], self._count_of[src]

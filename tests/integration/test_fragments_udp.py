"""raftd.wire.fragments over real UDP sockets on 127.0.0.1, with 1% of data datagrams dropped.

``Endpoint`` is the test's asyncio adapter, shaped like the one ``server.py`` gets: datagrams
in -> ``on_ack``/``on_data`` -> ``poll`` -> ``sendto``, and one timer re-armed to
``next_deadline()``. Both endpoints send at once, so each plays sender and receiver.
"""

from __future__ import annotations

import asyncio
import random
from typing import cast

from raftd.transport.peers import Address, bind_udp
from raftd.wire.fragments import FragmentReceiver, FragmentSender, is_ack, is_fragment

MAX_DATAGRAM_BYTES = 1400
DEADLINE_S = 60.0


class Endpoint(asyncio.DatagramProtocol):
    """One UDP socket driving a FragmentSender and a FragmentReceiver."""

    def __init__(self, drop: float, seed: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.sender: FragmentSender[Address] = FragmentSender(MAX_DATAGRAM_BYTES)
        self.receiver: FragmentReceiver[Address] = FragmentReceiver(64 << 20)
        self.drop = drop
        self.rng = random.Random(seed)
        self.dropped = 0
        self.transport: asyncio.DatagramTransport | None = None
        self.timer: asyncio.Handle | None = None
        self.timer_at = 0.0
        self.payloads: asyncio.Queue[bytes] = asyncio.Queue()
        self.outcomes: asyncio.Queue[tuple[int, bool]] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # not a subclass, in fact

    def datagram_received(self, data: bytes, addr: Address) -> None:
        assert self.transport is not None and is_fragment(data)
        now = self.loop.time()
        if is_ack(data):
            self.sender.on_ack(addr, data, now)
        elif self.rng.random() < self.drop:
            self.dropped += 1
            return
        else:
            acks, payload = self.receiver.on_data(addr, data, now)
            for ack in acks:
                self.transport.sendto(ack, addr)
            if payload is not None:
                self.payloads.put_nowait(payload)
        self.flush()

    def send(self, dst: Address, payload: bytes) -> int:
        tid = self.sender.send(dst, payload)
        self.flush()
        return tid

    def flush(self) -> None:
        """Transmit what is due, report outcomes, keep the one timer no later than needed."""
        assert self.transport is not None
        for dst, datagram in self.sender.poll(self.loop.time()):
            self.transport.sendto(datagram, dst)
        for ok, outcomes in ((True, self.sender.completed()), (False, self.sender.failed())):
            for _, tid in outcomes:
                self.outcomes.put_nowait((tid, ok))
        deadline = self.sender.next_deadline()
        # A timer firing early is harmless (poll finds nothing due), so re-arm only when the
        # deadline moved earlier: most acks move it later, and a heap push per ack is waste.
        if deadline is not None and (self.timer is None or deadline < self.timer_at):
            if self.timer is not None:
                self.timer.cancel()
            # uvloop returns a plain Handle (no .when()) for a deadline already past
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline

    def _on_timer(self) -> None:
        self.timer = None
        self.flush()


async def open_endpoint(drop: float, seed: int) -> tuple[Endpoint, Address]:
    loop = asyncio.get_running_loop()
    sock = bind_udp("127.0.0.1", 0)  # production buffer sizes, a free port
    _, endpoint = await loop.create_datagram_endpoint(lambda: Endpoint(drop, seed), sock=sock)
    host, port = sock.getsockname()[:2]
    return endpoint, (host, port)


async def transfer_both_ways(big: bytes, small: bytes) -> None:
    a, a_addr = await open_endpoint(drop=0.01, seed=1)
    b, b_addr = await open_endpoint(drop=0.01, seed=2)
    try:
        to_b = a.send(b_addr, big)
        to_a = b.send(a_addr, small)
        async with asyncio.timeout(DEADLINE_S):
            assert await b.payloads.get() == big
            assert await a.payloads.get() == small
            assert await a.outcomes.get() == (to_b, True)
            assert await b.outcomes.get() == (to_a, True)
        assert b.dropped > 0 and a.sender.retransmissions >= b.dropped
        assert a.receiver.buffered_bytes == b.receiver.buffered_bytes == 0
    finally:
        for endpoint in (a, b):
            if endpoint.timer is not None:
                endpoint.timer.cancel()
            assert endpoint.transport is not None
            endpoint.transport.close()


def test_five_megabytes_cross_lossy_udp_both_ways() -> None:
    rng = random.Random(5)
    asyncio.run(transfer_both_ways(rng.randbytes(5 << 20), rng.randbytes(1 << 20)))

"""Benchmark: one large payload through raftd.wire.fragments between two processes on loopback.

    .venv/bin/python -m tests.perf.fragments_bench [--size-mb 100] [--datagram 65000 1400]
        [--loss 0 0.01] [--window N] [--asyncio]

For each (datagram size, loss) pair a receiver process binds 127.0.0.1 (production socket
buffers, ``transport.peers.bind_udp``), drops that fraction of data datagrams on arrival, and
acknowledges; the sending process times ``send`` to the final acknowledgement (the time a
leader would wait before ``report_snapshot``) and prints MB/s (1 MB = 10**6 bytes). Both run
uvloop like raftd unless --asyncio. Not collected by pytest (no ``test_`` prefix).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import time
import zlib
from multiprocessing.connection import Connection
from typing import cast

import uvloop

from raftd.transport.peers import Address, bind_udp
from raftd.wire.fragments import FragmentReceiver, FragmentSender, is_ack

HOST = "127.0.0.1"
DEADLINE_S = 600.0


def default_window(max_datagram_bytes: int) -> int:
    """About 4 MiB in flight, 16 to 512 fragments: what loopback socket buffers absorb."""
    return max(16, min(512, (4 << 20) // max_datagram_bytes))


class Endpoint(asyncio.DatagramProtocol):
    """The adapter raftd's server uses, reduced to one sender and one receiver."""

    def __init__(self, sender: FragmentSender[Address], receiver: FragmentReceiver[Address],
                 loss: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.sender = sender
        self.receiver = receiver
        self.loss = loss
        self.rng = random.Random(1)
        self.dropped = 0
        self.transport = cast(asyncio.DatagramTransport, None)
        self.timer: asyncio.Handle | None = None
        self.timer_at = 0.0
        self.done: asyncio.Future[bytes | bool] = self.loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        now = self.loop.time()
        if is_ack(data):
            self.sender.on_ack(addr, data, now)
        elif self.loss and self.rng.random() < self.loss:
            self.dropped += 1
        else:
            acks, payload = self.receiver.on_data(addr, data, now)
            for ack in acks:
                self.transport.sendto(ack, addr)
            if payload is not None and not self.done.done():
                self.done.set_result(payload)
        self.flush()

    def flush(self) -> None:
        for dst, datagram in self.sender.poll(self.loop.time()):
            self.transport.sendto(datagram, dst)
        for ok, outcomes in ((True, self.sender.completed()), (False, self.sender.failed())):
            if outcomes and not self.done.done():
                self.done.set_result(ok)
        deadline = self.sender.next_deadline()
        if deadline is not None and (self.timer is None or deadline < self.timer_at):
            if self.timer is not None:
                self.timer.cancel()
            # uvloop returns a plain Handle (no .when()) for a deadline already past
            self.timer = self.loop.call_at(deadline, self._on_timer)
            self.timer_at = deadline

    def _on_timer(self) -> None:
        self.timer = None
        self.flush()


async def open_endpoint(max_datagram_bytes: int, window: int, max_bytes: int,
                        loss: float) -> tuple[Endpoint, Address]:
    sock = bind_udp(HOST, 0)
    sender: FragmentSender[Address] = FragmentSender(max_datagram_bytes, window=window)
    receiver: FragmentReceiver[Address] = FragmentReceiver(max_bytes)
    _, endpoint = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: Endpoint(sender, receiver, loss), sock=sock)
    return endpoint, cast(Address, sock.getsockname()[:2])


async def receive(conn: Connection, size: int, loss: float, max_datagram_bytes: int) -> None:
    endpoint, addr = await open_endpoint(max_datagram_bytes, 8, size + (1 << 20), loss)
    conn.send(addr)
    payload = await endpoint.done
    assert isinstance(payload, bytes)
    conn.send((len(payload), zlib.crc32(payload), endpoint.dropped))
    # keep acknowledging late duplicates until the sender has heard the last ack
    await asyncio.get_running_loop().run_in_executor(None, conn.recv)
    endpoint.transport.close()


def receiver_main(conn: Connection, size: int, loss: float, max_datagram_bytes: int,
                  use_uvloop: bool) -> None:
    main = receive(conn, size, loss, max_datagram_bytes)
    uvloop.run(main) if use_uvloop else asyncio.run(main)


async def send(payload: bytes, dst: Address, max_datagram_bytes: int,
               window: int) -> tuple[float, bool, int, int]:
    endpoint, _ = await open_endpoint(max_datagram_bytes, window, 1, 0.0)
    start = time.perf_counter()
    endpoint.sender.send(dst, payload)
    endpoint.flush()
    async with asyncio.timeout(DEADLINE_S):
        ok = await endpoint.done
    elapsed = time.perf_counter() - start
    if endpoint.timer is not None:
        endpoint.timer.cancel()
    endpoint.transport.close()
    fragments = -(-len(payload) // endpoint.sender.max_chunk)
    return elapsed, bool(ok), fragments, endpoint.sender.retransmissions


def run_one(payload: bytes, max_datagram_bytes: int, loss: float, window: int,
            use_uvloop: bool) -> None:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=receiver_main,
                       args=(child, len(payload), loss, max_datagram_bytes, use_uvloop))
    proc.start()
    try:
        dst = parent.recv()
        main = send(payload, dst, max_datagram_bytes, window)
        elapsed, ok, fragments, retransmissions = (uvloop.run(main) if use_uvloop
                                                   else asyncio.run(main))
        size, crc, dropped = parent.recv()
        assert ok and size == len(payload) and crc == zlib.crc32(payload), "corrupt transfer"
        parent.send("stop")
        print(f"{len(payload) / 1e6:7.1f} MB  datagram {max_datagram_bytes:5d}  loss {loss:4.0%}"
              f"  window {window:4d}  {elapsed:7.2f} s  {len(payload) / 1e6 / elapsed:8.1f} MB/s"
              f"  fragments {fragments}  dropped {dropped}  retransmitted {retransmissions}",
              flush=True)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=float, default=100.0)
    parser.add_argument("--datagram", type=int, nargs="+", default=[65000, 1400])
    parser.add_argument("--loss", type=float, nargs="+", default=[0.0, 0.01])
    parser.add_argument("--window", type=int, help="fragments in flight (default: ~4 MiB)")
    parser.add_argument("--asyncio", action="store_true", help="plain asyncio, not uvloop")
    args = parser.parse_args()
    payload = os.urandom(int(args.size_mb * 1e6))
    for max_datagram_bytes in args.datagram:
        for loss in args.loss:
            window = args.window or default_window(max_datagram_bytes)
            run_one(payload, max_datagram_bytes, loss, window, not args.asyncio)


if __name__ == "__main__":
    main()

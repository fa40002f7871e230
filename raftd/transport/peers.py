"""UDP for peer messages: datagrams in and out, fragmenting whatever exceeds one datagram.

``PeerLink`` is the thin asyncio side of ``raftd.wire.fragments``: a message that fits
``max_datagram_bytes`` goes out as one datagram; a larger one (a snapshot, a batch carrying a
1 MiB value) is handed to the ``FragmentSender``, whose fragments a timer pumps out *between*
runtime turns, so outcomes (``on_snapshot_outcome``) arrive as ordinary inputs. Received
fragments are reassembled and then delivered like any other datagram. No Raft logic here.

With a cluster secret (``auth``, a ``wire.auth.PeerAuth``) every datagram out, fragments and
their acks included, is sealed last, and every datagram in is opened first: payloads and
fragments are sized ``auth.overhead`` bytes below ``max_datagram_bytes`` so sealed datagrams
still fit. Datagrams that fail are dropped and counted in ``dropped`` by reason. Without a
secret, sealed datagrams are dropped as ``sealed``. Drops that betray a misconfigured node (a
secret on one side only, or a different one) are also logged, at most once a minute each.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import cast

from raftd.config import format_address
from raftd.transport.addresses import Address
from raftd.wire.auth import (
    FOREIGN_CLUSTER,
    REASONS,
    UNAUTHENTICATED,
    AuthError,
    PeerAuth,
    is_sealed,
)
from raftd.wire.errors import DecodeError
from raftd.wire.fragments import FragmentReceiver, FragmentSender, is_ack, is_fragment

log = logging.getLogger(__name__)

SOCKET_BUFFER_BYTES = 8 << 20
"""Asked of the kernel for SO_RCVBUF/SO_SNDBUF: bursts of AppendEntries must not overflow."""
FRAGMENT_MAX_BYTES_PER_PEER = 1 << 30
"""Largest message (a snapshot) a peer may send us in fragments; larger ones are refused."""
FRAGMENT_TIMEOUT_S = 30.0
"""A partial message idle this long is dropped; above the sender's ~15 s give-up."""
FRAGMENT_WINDOW_BYTES = 4 << 20
"""Fragments in flight per peer, in bytes: enough for loopback speed, not a flood."""


class PeerProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP "port unreachable" from a peer that is down: Raft's retries cover it.
        log.debug("udp error: %s", exc)


BAD_FRAGMENT = "bad_fragment"
UNRESOLVED = "unresolved"
"""Drop reason of a datagram to a peer whose name has no address (yet)."""
SEALED = "sealed"
"""Drop reason of a sealed (authenticated) datagram at a node without a cluster secret."""
WARN_EVERY_S = 60.0
"""At most one warning per reason this often: a misconfigured peer sends many per second."""
_HINTS = {
    SEALED: "peers send authenticated datagrams (from %s) and this node has no [cluster] "
            "secret_file: it drops them all; give it the cluster's secret_file",
    UNAUTHENTICATED: "a peer sends unauthenticated datagrams (from %s): is its [cluster] "
                     "secret_file missing? They are dropped",
    FOREIGN_CLUSTER: "a peer sends datagrams sealed with another cluster's secret (from %s): "
                     "does its [cluster] secret_file hold another key? They are dropped",
}


class PeerLink:
    """Sends encoded peer messages to node ids; delivers received ones to ``on_message``."""

    def __init__(
        self,
        max_datagram_bytes: int,
        resolve: Callable[[str], Address | None],
        on_message: Callable[[bytes, Address], None],
        on_transfer_outcome: Callable[[str, int, bool], None],
        auth: PeerAuth | None = None,
    ) -> None:
        self.auth = auth
        self.limit = max_datagram_bytes - (auth.overhead if auth is not None else 0)
        """Largest payload sent as one datagram (before sealing)."""
        self.resolve = resolve
        self.on_message = on_message
        self.on_transfer_outcome = on_transfer_outcome
        self.udp: asyncio.DatagramTransport | None = None
        self.fragments_out: FragmentSender[str] = FragmentSender(
            self.limit,
            window=max(16, min(512, FRAGMENT_WINDOW_BYTES // self.limit)),
            first_transfer_id=int.from_bytes(os.urandom(8), "big"),
        )
        self.fragments_in: FragmentReceiver[Address] = FragmentReceiver(
            FRAGMENT_MAX_BYTES_PER_PEER, max_transfers_per_peer=4, timeout=FRAGMENT_TIMEOUT_S
        )
        self.peer_of_address: dict[Address, str] = {}
        self.timer: asyncio.Handle | None = None
        self.timer_at = 0.0
        self.dropped: dict[str, int] = dict.fromkeys(
            (BAD_FRAGMENT, UNRESOLVED, *(REASONS if auth is not None else (SEALED,))), 0)
        """Datagrams dropped here, by reason (merged into the server's metrics)."""
        self.warned_at: dict[str, float] = {}
        """Monotonic time of the last warning logged per drop reason."""

    async def open(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_datagram_endpoint(
            lambda: PeerProtocol(self._on_datagram), sock=bind_udp(host, port)
        )
        self.udp = protocol.transport

    def close(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.udp is not None:
            self.udp.close()

    def address_of(self, node: str) -> Address | None:
        address = self.resolve(node)
        if address is not None:
            self.peer_of_address[address] = node  # fragment acks name their sender by address
        return address

    # -- out -------------------------------------------------------------------------------
    def send(self, dst: str, data: bytes, *, supersede: bool = False) -> int | None:
        """Send one encoded message; returns a transfer id when it had to be fragmented.

        ``supersede``: a newer large message to ``dst`` replaces an older one still in flight
        (used for snapshots, which make their predecessors useless).
        """
        assert self.udp is not None
        if len(data) <= self.limit:
            self._sendto(dst, data)
            return None
        transfer = self.fragments_out.send(dst, data, supersede=supersede)
        self._arm_timer()  # polled on the next loop iteration, outside the runtime's turn
        return transfer

    def _sendto(self, dst: str, datagram: bytes) -> None:
        assert self.udp is not None
        address = self.address_of(dst)
        if address is None:
            self.dropped[UNRESOLVED] += 1  # its name is being looked up: Raft sends again
            return
        if self.auth is not None:
            datagram = self.auth.seal(dst, datagram)
        self.udp.sendto(datagram, address)

    def _pump(self) -> None:
        assert self.udp is not None
        loop = asyncio.get_running_loop()
        for peer, datagram in self.fragments_out.poll(loop.time()):
            self._sendto(peer, datagram)
        for ok, outcomes in ((True, self.fragments_out.completed()),
                             (False, self.fragments_out.failed())):
            for peer, transfer in outcomes:
                self.on_transfer_outcome(peer, transfer, ok)
        self._arm_timer()

    def _arm_timer(self) -> None:
        deadline = self.fragments_out.next_deadline()
        # Early firing is harmless (poll finds nothing due): re-arm only for an earlier deadline.
        if deadline is None or (self.timer is not None and deadline >= self.timer_at):
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_at(deadline, self._on_timer)
        self.timer_at = deadline

    def _on_timer(self) -> None:
        self.timer = None
        self._pump()

    # -- in --------------------------------------------------------------------------------
    def expire(self) -> None:
        self.fragments_in.expire(asyncio.get_running_loop().time())

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        sender: str | None = None
        if self.auth is not None:
            try:
                sender, data = self.auth.open(data)
            except AuthError as e:
                self.dropped[e.reason] += 1
                log.debug("dropped datagram from %s: %s", addr, e)
                # A bad tag on a sealed datagram is a forgery, not a peer's missing secret.
                if e.reason != UNAUTHENTICATED or not is_sealed(data):
                    self._warn(e.reason, addr)
                return
        if is_fragment(data):  # (sealed datagrams share the fragments' first byte)
            if sender is None and is_sealed(data):
                self.dropped[SEALED] += 1
                self._warn(SEALED, addr)
                return
            reassembled = self._on_fragment(data, addr, sender)
            if reassembled is None:
                return
            data = reassembled
        self.on_message(data, addr)

    def _warn(self, reason: str, addr: Address) -> None:
        hint = _HINTS.get(reason)
        if hint is None:
            return  # e.g. replayed: no configuration mistake to point at
        now = time.monotonic()
        last = self.warned_at.get(reason)
        if last is not None and now - last < WARN_EVERY_S:
            return
        self.warned_at[reason] = now
        log.warning(hint, format_address(addr[0], addr[1]))

    def _on_fragment(self, data: bytes, addr: Address, sender: str | None) -> bytes | None:
        """``sender``: the authenticated sender, if any; else acks are matched by address."""
        now = asyncio.get_running_loop().time()
        try:
            if is_ack(data):
                peer = sender if sender is not None else self.peer_of_address.get(addr)
                if peer is None:
                    self.dropped[BAD_FRAGMENT] += 1
                    return None
                self.fragments_out.on_ack(peer, data, now)
                self._pump()
                return None
            acks, payload = self.fragments_in.on_data(addr, data, now)
        except DecodeError as e:
            self.dropped[BAD_FRAGMENT] += 1
            log.debug("dropped bad fragment from %s: %s", addr, e)
            return None
        for ack in acks:
            self._ack(ack, addr, sender)
        return payload

    def _ack(self, ack: bytes, addr: Address, sender: str | None) -> None:
        assert self.udp is not None
        if self.auth is not None and sender is not None:  # with auth, sender is always known
            ack = self.auth.seal(sender, ack)
        self.udp.sendto(ack, addr)


def bind_udp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
    sock.bind((host, port))
    sock.setblocking(False)
    log.info(
        "udp %s:%d buffers: rcv %d bytes, snd %d bytes (asked %d)",
        host, port,
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
        SOCKET_BUFFER_BYTES,
    )
    return sock

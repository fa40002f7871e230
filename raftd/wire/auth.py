"""Authentication of peer datagrams with a shared cluster secret (sans-IO, stdlib ``hmac``).

Theory of operation
-------------------
Without a secret, anyone who can send UDP to a node's port can speak Raft to it: ``src`` is
just a field, so a stranger could vote, append entries or call an election with a huge term.
With ``[cluster] secret_file`` set, every datagram a node sends (regular messages and fragment
DATA/ACK datagrams alike) is sealed by ``PeerAuth.seal`` and every datagram it receives must
pass ``PeerAuth.open``; anything else is dropped, counted by reason, before any decoding.

Keys. Two keys are derived from the secret with HMAC-SHA256 under fixed labels (one block of
HKDF-Expand, RFC 5869, without the extract step: the secret file already holds 256 random
bits): the MAC key and the 8-byte *cluster id*. The cluster id travels in clear so that a
datagram of another cluster (another secret) is told apart from a forgery and counted as
``foreign_cluster``; it reveals nothing of the key.

Datagram layout (integers big-endian)::

    magic 0xC1 | version u8 | kind=3 u8 | flags u8 | cluster id 8 bytes | epoch u64
    | counter u64 | sender length u8 | sender (UTF-8) | payload | tag (32 bytes)

- 0xC1 is the one byte msgpack never uses, shared with ``wire.fragments`` whose kinds are 1
  and 2: a node without a secret tells a sealed datagram by its kind (``is_sealed``) and
  drops it.
- ``tag`` = HMAC-SHA256(MAC key, everything before the tag, then the receiver's node id with
  its length). The receiver's id is not sent: each node uses its own, so a datagram sealed for
  one node fails at every other (it cannot be replayed across nodes).
- ``epoch`` is drawn at random (64 bits) by each process at start; ``counter`` counts the
  datagrams sent to each destination during that epoch, from 0.

Replay. The receiver keeps, per (sender, epoch), the highest counter seen and a bitmap of the
``REPLAY_WINDOW`` counters below it (RFC 6479's sliding window, as IPsec and WireGuard):
a counter seen before, or older than the window, is ``replayed``. A restarted peer draws a new
epoch and is heard again at once, with a fresh window. Up to ``LIVE_EPOCHS`` epochs per
sender keep their windows (least recently heard evicted first); an evicted epoch is
*retired*: its datagrams are refused from then on, since which of them were seen is
forgotten. The last ``RETIRED_EPOCHS`` retired epochs are remembered per sender. Windows are
created and advanced only after the tag verified, so a stranger cannot move them.

NB: the shared secret proves membership of the cluster, not which member sent a datagram:
every holder of the secret can claim any sender id. Raft itself already tolerates delayed,
duplicated and lost datagrams; the replay window stops a stranger from re-injecting captured
ones (a captured MsgTimeoutNow would otherwise trigger an election every time it is replayed).
The windows live in memory only: after the *receiver* restarts, a datagram captured from a
sender's still-current epoch passes once more. That is one more stale duplicate, which Raft
tolerates as it does the network's own; persisting windows would cost a write per datagram.

Hostile input: ``open`` raises ``AuthError`` (a ``DecodeError`` carrying the drop reason)
and nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict, deque
from typing import Final

from raftd.wire.errors import DecodeError

MAGIC: Final = 0xC1
VERSION: Final = 1
KIND: Final = 3
"""Sealed datagram; ``wire.fragments`` uses kinds 1 (DATA) and 2 (ACK) under the same magic."""

TAG_BYTES: Final = 32
CLUSTER_ID_BYTES: Final = 8
MIN_SECRET_BYTES: Final = 16
"""A shorter secret is refused: it could be guessed offline from one captured datagram."""
MAX_SENDER_BYTES: Final = 255
REPLAY_WINDOW: Final = 4096
"""Counters below the highest one seen that are still accepted once (reordering tolerance):
a burst of fragments is at most a few hundred datagrams."""
_WINDOW_MASK: Final = (1 << REPLAY_WINDOW) - 1
LIVE_EPOCHS: Final = 4
RETIRED_EPOCHS: Final = 1024
MAX_SENDERS: Final = 1024
"""Senders remembered (least recently heard forgotten first); only key holders create them."""

# Drop reasons, as counted in ``raft_datagrams_dropped{reason}``.
UNAUTHENTICATED: Final = "unauthenticated"
FOREIGN_CLUSTER: Final = "foreign_cluster"
REPLAYED: Final = "replayed"
REASONS: Final = (UNAUTHENTICATED, FOREIGN_CLUSTER, REPLAYED)

_HEAD = struct.Struct(">BBBB8sQQB")  # magic, version, kind, flags, cluster, epoch, counter, len
HEADER_BYTES: Final = _HEAD.size


def is_sealed(datagram: bytes) -> bool:
    """Whether ``datagram`` has the header of a sealed one (checks no tag: nothing to trust)."""
    return len(datagram) > 2 and datagram[0] == MAGIC and datagram[2] == KIND


class AuthError(DecodeError):
    """A datagram failed authentication; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def derive(secret: bytes) -> tuple[bytes, bytes]:
    """The MAC key and the cluster id of ``secret`` (see the module docstring)."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"the cluster secret must hold at least {MIN_SECRET_BYTES} bytes")
    mac_key = hmac.new(secret, b"rafty peer mac key v1\x01", hashlib.sha256).digest()
    cluster = hmac.new(secret, b"rafty cluster id v1\x01", hashlib.sha256).digest()
    return mac_key, cluster[:CLUSTER_ID_BYTES]


def _node_id_bytes(node: str) -> bytes:
    data = node.encode()
    if not 0 < len(data) <= MAX_SENDER_BYTES:
        raise ValueError(f"a node id must be 1-{MAX_SENDER_BYTES} UTF-8 bytes: {node!r}")
    return data


class _Window:
    """Counters seen from one (sender, epoch): the highest, and a bitmap of those below it.

    Invariant: bit ``k`` of ``seen`` is set iff counter ``top - k`` was accepted, for
    ``0 <= k < REPLAY_WINDOW``; ``top == -1`` until the first counter.
    """

    __slots__ = ("seen", "top")

    def __init__(self) -> None:
        self.top = -1
        self.seen = 0

    def is_fresh(self, counter: int) -> bool:
        if counter > self.top:
            return True
        behind = self.top - counter
        return behind < REPLAY_WINDOW and not (self.seen >> behind) & 1

    def accept(self, counter: int) -> None:
        if counter > self.top:
            shift = counter - self.top
            # NB: a jump past the window clears it without shifting by a 64-bit count.
            self.seen = 1 if shift >= REPLAY_WINDOW else (
                ((self.seen << shift) | 1) & _WINDOW_MASK)
            self.top = counter
        else:
            self.seen |= 1 << (self.top - counter)


class _Sender:
    """The epochs of one sender: live ones with their windows, and retired ones."""

    __slots__ = ("live", "retired", "retired_order")

    def __init__(self) -> None:
        self.live: OrderedDict[int, _Window] = OrderedDict()
        self.retired: set[int] = set()
        self.retired_order: deque[int] = deque()

    def window(self, epoch: int) -> _Window | None:
        """The window of ``epoch`` (a new one for an unknown epoch); None if retired."""
        window = self.live.get(epoch)
        if window is not None:
            return window
        return None if epoch in self.retired else _Window()

    def accept(self, epoch: int, window: _Window, counter: int) -> None:
        window.accept(counter)
        self.live[epoch] = window
        self.live.move_to_end(epoch)
        while len(self.live) > LIVE_EPOCHS:
            old, _ = self.live.popitem(last=False)
            self.retired.add(old)
            self.retired_order.append(old)
            if len(self.retired_order) > RETIRED_EPOCHS:
                self.retired.discard(self.retired_order.popleft())


class PeerAuth:
    """Seals the datagrams one node sends and opens the ones it receives.

    ``node`` is this node's id (its advertised ``host:port``); ``epoch`` must be fresh random
    bits at every process start (the caller draws them: this module does no I/O).
    """

    def __init__(self, secret: bytes, node: str, epoch: int) -> None:
        if not 0 <= epoch < 1 << 64:
            raise ValueError("epoch must be a 64-bit unsigned int")
        self._mac_key, self.cluster_id = derive(secret)
        self.node = node
        self._node_bytes = _node_id_bytes(node)
        self._receiver_suffix = bytes((len(self._node_bytes),)) + self._node_bytes
        self.epoch = epoch
        self._counters: dict[str, int] = {}
        self._senders: OrderedDict[str, _Sender] = OrderedDict()

    @property
    def overhead(self) -> int:
        """Bytes ``seal`` adds to a payload: senders size their payloads to fit a datagram."""
        return HEADER_BYTES + len(self._node_bytes) + TAG_BYTES

    def seal(self, dst: str, payload: bytes) -> bytes:
        """``payload`` wrapped for the node ``dst``, with the next counter towards it."""
        counter = self._counters.get(dst, 0)
        self._counters[dst] = counter + 1
        head = _HEAD.pack(MAGIC, VERSION, KIND, 0, self.cluster_id, self.epoch, counter,
                          len(self._node_bytes))
        body = b"".join((head, self._node_bytes, payload))
        dst_bytes = _node_id_bytes(dst)
        tag = hmac.new(self._mac_key, body, hashlib.sha256)
        tag.update(bytes((len(dst_bytes),)) + dst_bytes)
        return body + tag.digest()

    def open(self, datagram: bytes) -> tuple[str, bytes]:
        """The sender's node id and the payload of a sealed datagram addressed to this node.

        Raises ``AuthError`` (reason ``unauthenticated``, ``foreign_cluster`` or ``replayed``)
        and nothing else; only a datagram that passes advances the replay window.
        """
        if len(datagram) < HEADER_BYTES + 1 + TAG_BYTES:
            raise AuthError(UNAUTHENTICATED, "not a sealed datagram (too short)")
        magic, version, kind, flags, cluster, epoch, counter, sender_len = _HEAD.unpack_from(
            datagram
        )
        if magic != MAGIC or kind != KIND:
            raise AuthError(UNAUTHENTICATED, "not a sealed datagram")
        if version != VERSION or flags != 0:
            raise AuthError(UNAUTHENTICATED, f"sealed datagram version {version} flags {flags}")
        if not hmac.compare_digest(cluster, self.cluster_id):
            raise AuthError(FOREIGN_CLUSTER, f"datagram of another cluster ({cluster.hex()})")
        body_end = len(datagram) - TAG_BYTES
        payload_start = HEADER_BYTES + sender_len
        if sender_len == 0 or payload_start > body_end:
            raise AuthError(UNAUTHENTICATED, "sealed datagram with a bad sender length")
        expected = hmac.new(self._mac_key, memoryview(datagram)[:body_end], hashlib.sha256)
        expected.update(self._receiver_suffix)
        if not hmac.compare_digest(expected.digest(), datagram[body_end:]):
            raise AuthError(UNAUTHENTICATED, "bad authentication tag")
        # Past the tag, the sender holds the secret: what it says can be believed.
        try:
            sender = datagram[HEADER_BYTES:payload_start].decode()
        except UnicodeDecodeError:
            raise AuthError(UNAUTHENTICATED, "sender id is not UTF-8") from None
        state = self._senders.get(sender)
        if state is None:
            state = _Sender()
        window = state.window(epoch)
        if window is None or not window.is_fresh(counter):
            raise AuthError(REPLAYED, f"replayed datagram from {sender} (epoch {epoch:#x}, "
                                      f"counter {counter})")
        state.accept(epoch, window, counter)
        self._senders[sender] = state
        self._senders.move_to_end(sender)
        if len(self._senders) > MAX_SENDERS:
            self._senders.popitem(last=False)
        return sender, datagram[payload_start:body_end]

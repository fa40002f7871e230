"""Server: the asyncio (uvloop) runtime of one node. It moves bytes and time; Replica decides.

One UDP socket (peers) and one TCP listener (clients) share the node's port. Every input
(datagram, client request, tick) only feeds the Replica and schedules one ``_process`` call with
``call_soon``; everything that arrived during a loop iteration is therefore handled in that one
turn: one batch of proposals, one AppendEntries per follower, one fsync.

An fsync error, a corrupt log or a broken invariant ends the process at once with a non-zero
status: after a failed fsync the kernel may have dropped the dirty pages, so retrying could
acknowledge writes that are not on disk.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import uvloop

from raftd.config import NodeConfig, parse_address
from raftd.core import (
    Config,
    ConfChange,
    ConfChangeType,
    ConfState,
    Message,
    RawNode,
    StateRole,
)
from raftd.core.messages import MsgApp
from raftd.core.state import ENTRY_OVERHEAD_BYTES
from raftd.replica import BATCH_HEADER_BYTES, Replica, Token
from raftd.statemachine import DELETE, SET, DictStateMachine, encode_command
from raftd.storage.disk import DiskStorage
from raftd.storage.files import OsFileSystem
from raftd.transport.clients import ClientConnection, bind_tcp
from raftd.transport.peers import Address, PeerProtocol, bind_udp
from raftd.wire.client import (
    AppendRequest,
    ConfigRequest,
    DiagnosticRequest,
    ErrorCode,
    GetRequest,
    ListRequest,
    Request,
    TransferLeaderRequest,
    error,
    result,
)
from raftd.wire.errors import DecodeError
from raftd.wire.peer import decode_peer, encode_peer

log = logging.getLogger("raftd")

REQUEST_TIMEOUT_MS = 3000
"""Below the client library's default deadline, so a client hears "timeout" and can retry."""
MAX_RESPONSE_BYTES = 64 << 20
STATS_SECONDS = 10


def peer_header_bytes(members: Sequence[str]) -> int:
    """Worst-case bytes of a MsgApp besides its entries (two node ids and the numbers)."""
    longest = max((len(m.encode()) for m in members), default=0)
    return 128 + 2 * longest


class RateStats:
    """Per-second counts over the last STATS_SECONDS seconds, as the seed's diagnostic shows."""

    def __init__(self) -> None:
        self.series: dict[str, deque[list[int]]] = {
            name: deque(maxlen=STATS_SECONDS) for name in ("reads", "writes", "append")
        }
        self._last: dict[str, int] = {}

    def sample(self, now_s: int, totals: dict[str, int]) -> None:
        for name, total in totals.items():
            previous = self._last.get(name, total)
            self.series[name].append([now_s, total - previous])
            self._last[name] = total

    def as_dict(self) -> dict[str, list[list[int]]]:
        return {name: list(points) for name, points in self.series.items()}


class Server:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.id = config.node.address
        raft = config.raft
        members = tuple(config.cluster.members)
        self.storage = DiskStorage(
            OsFileSystem(),
            str(config.node.data_dir),
            conf_state=ConfState(voters=members),
            fsync=raft.fsync,
        )
        max_msg_bytes = raft.max_datagram_bytes - peer_header_bytes(members + (self.id,))
        core_config = Config(
            id=self.id,
            election_ticks=raft.election_ticks,
            heartbeat_ticks=raft.heartbeat_ticks,
            rng=random.Random(os.urandom(16)),
            max_msg_bytes=max_msg_bytes,
            promote_lag_entries=raft.promote_lag_entries,
        )
        self.node = RawNode(core_config, self.storage)
        self.max_entry_bytes = min(raft.max_entry_bytes, max_msg_bytes - ENTRY_OVERHEAD_BYTES)
        self.replica = Replica(
            self.node,
            self.storage,
            DictStateMachine(),
            max_entry_bytes=self.max_entry_bytes,
            request_timeout_ticks=REQUEST_TIMEOUT_MS // raft.tick_ms,
        )
        self.max_command_bytes = self.max_entry_bytes - BATCH_HEADER_BYTES
        self.tick_s = raft.tick_ms / 1000
        self.addresses: dict[str, Address] = {}
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.base_events.Server | None = None
        self.connections: set[ClientConnection] = set()
        self.requests: dict[Token, tuple[ClientConnection, int | None]] = {}
        self.next_token = 0
        self.scheduled = False
        self.stopping: asyncio.Event | None = None
        self.stats = RateStats()
        self.append_messages = 0
        self.dropped_datagrams = 0

    # -- lifecycle -------------------------------------------------------------------------
    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        host, port = parse_address(self.config.node.listen)
        for member in set(self.config.cluster.members) | {self.id}:
            self._address_of(member)
        _, protocol = await loop.create_datagram_endpoint(
            lambda: PeerProtocol(self._on_datagram), sock=bind_udp(host, port)
        )
        self.udp = protocol.transport
        max_frame = self.config.raft.max_entry_bytes + (64 << 10)
        self.tcp = await loop.create_server(
            lambda: ClientConnection(self._on_request, self.connections.discard, max_frame,
                                     MAX_RESPONSE_BYTES),
            sock=bind_tcp(host, port),
        )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        hs, _ = self.storage.initial_state()
        log.info(
            "raftd %s serving on %s (udp peers, tcp clients); data %s; members %s; fsync %s%s",
            self.id, self.config.node.listen, self.config.node.data_dir,
            ",".join(self.config.cluster.members), "on" if self.config.raft.fsync else "OFF",
            "; blank data dir" if hs is None else "",
        )
        next_tick = loop.time() + self.tick_s
        loop.call_at(next_tick, self._on_tick, next_tick)
        loop.call_later(1.0, self._on_stats_timer)
        await self.stopping.wait()
        await self._hand_over_leadership()
        self._shutdown()

    def _on_stop_signal(self) -> None:
        assert self.stopping is not None
        if self.stopping.is_set():
            log.warning("second stop signal: exiting without handing over leadership")
            self._shutdown()
            os._exit(0)
        self.stopping.set()

    async def _hand_over_leadership(self) -> None:
        """A leader that stops hands over first, so a rolling restart waits for no election."""
        raft = self.node.raft
        if raft.role is not StateRole.LEADER or len(raft.voters) < 2:
            return
        target = max((v for v in raft.voters if v != self.id),
                     key=lambda v: (raft.progress[v].match_index, v))
        log.info("handing leadership to %s before stopping", target)
        self.node.transfer_leader(target)
        self._schedule()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.raft.election_timeout_ms[1] / 1000
        while raft.role is StateRole.LEADER and raft.lead_transferee and loop.time() < deadline:
            await asyncio.sleep(self.tick_s)
        log.info("leadership %s", "handed over" if raft.role is not StateRole.LEADER
                 else "transfer did not complete; stopping anyway")

    def _shutdown(self) -> None:
        log.info("shutting down")
        self.replica.fail_all(
            _Outbox(self), error(ErrorCode.SHUTTING_DOWN, "the node is shutting down")
        )
        if self.tcp is not None:
            self.tcp.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        if self.udp is not None:
            self.udp.close()
        self.storage.sync()
        self.storage.close()

    def _fatal(self, what: str, exc: BaseException) -> None:
        log.critical("%s: %s; exiting", what, exc, exc_info=exc)
        logging.shutdown()
        os._exit(1)  # no cleanup: nothing more may reach the disk or the network

    # -- inputs ----------------------------------------------------------------------------
    def _on_tick(self, due: float) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.replica.tick(_Outbox(self))
        except Exception as e:  # noqa: BLE001 - any failure in the core is fatal
            self._fatal("tick failed", e)
        self._schedule()
        # Skip ticks missed during a stall instead of bursting them: a late election is safe.
        due = max(due + self.tick_s, loop.time())
        loop.call_at(due, self._on_tick, due)

    def _on_stats_timer(self) -> None:
        self.stats.sample(int(time.time()), {
            "reads": self.replica.served_reads,
            "writes": self.replica.applied_writes,
            "append": self.append_messages,
        })
        asyncio.get_running_loop().call_later(1.0, self._on_stats_timer)

    def _on_datagram(self, data: bytes, addr: Address) -> None:
        try:
            msg = decode_peer(data)
        except DecodeError as e:
            self.dropped_datagrams += 1
            log.debug("dropped undecodable datagram from %s: %s", addr, e)
            return
        if msg.dst != self.id or not self._is_peer(msg.src):
            self.dropped_datagrams += 1
            return
        if isinstance(msg, MsgApp):
            self.append_messages += 1
        try:
            self.replica.step(msg)
        except Exception as e:  # noqa: BLE001
            self._fatal(f"stepping {type(msg).__name__} from {msg.src} failed", e)
        self._schedule()

    def _on_request(self, conn: ClientConnection, req: Request) -> None:
        self.connections.add(conn)
        if isinstance(req, DiagnosticRequest):
            conn.respond(self.diagnostic(), req.id)
            return
        token = self.next_token
        self.next_token += 1
        self.requests[token] = (conn, req.id)
        if isinstance(req, AppendRequest):
            packed = encode_command(
                SET if req.action == "change" else DELETE,
                req.key,
                req.value,
                client_id=req.client_id,
                seq=req.seq,
                first_unacked_seq=req.first_unacked_seq,
                if_revision=req.if_revision,
                if_absent=req.if_absent,
            )
            if len(packed) > self.max_command_bytes:
                self.requests.pop(token)
                conn.respond(
                    error(ErrorCode.TOO_LARGE,
                          f"write of {len(packed)} bytes exceeds {self.max_command_bytes}"),
                    req.id,
                )
                return
            self.replica.submit_write(token, packed)
        elif isinstance(req, GetRequest | ListRequest):
            self.replica.submit_read(token, req, _Outbox(self))
        elif isinstance(req, ConfigRequest):
            self.replica.submit_conf_change(token, _conf_change(req))
        elif isinstance(req, TransferLeaderRequest):
            self.replica.submit_transfer(token, req.address, _Outbox(self))
        self._schedule()

    # -- the turn --------------------------------------------------------------------------
    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._process)

    def _process(self) -> None:
        self.scheduled = False
        try:
            self.replica.process(_Outbox(self), time.time_ns() // 1_000_000)
        except Exception as e:  # noqa: BLE001 - fsync errors included: never retried
            self._fatal("handling the log failed", e)

    def send(self, messages: Sequence[Message]) -> None:
        assert self.udp is not None
        limit = self.config.raft.max_datagram_bytes
        for m in messages:
            data = encode_peer(m)
            if len(data) > limit:
                log.error("refusing to send a %d-byte %s (limit %d)", len(data),
                          type(m).__name__, limit)
                continue
            self.udp.sendto(data, self._address_of(m.dst))

    def _is_peer(self, node: str) -> bool:
        """Current members, and the configured ones (a blank node knows only those)."""
        return node in self.node.raft.members or node in self.config.cluster.members

    def _address_of(self, node: str) -> Address:
        address = self.addresses.get(node)
        if address is None:
            address = self.addresses[node] = _resolve(node)
        return address

    def respond(self, token: Token, response: dict[str, Any]) -> None:
        conn, request_id = self.requests.pop(token, (None, None))
        if conn is not None:
            conn.respond(response, request_id)

    # -- diagnostic ------------------------------------------------------------------------
    def diagnostic(self) -> dict[str, Any]:
        st = self.node.status()
        role = "learner" if self.id in st.learners else st.role.value
        return result(
            status=role,
            persist={"votedFor": st.voted_for or None, "currentTerm": st.term},
            volatile={
                "leaderId": st.leader_id or None,
                "cluster": list(st.voters) + list(st.learners),
                "voters": list(st.voters),
                "learners": list(st.learners),
                "address": self.id,
            },
            log={
                "commitIndex": st.commit_index,
                "appliedIndex": st.applied_index,
                "lastLogIndex": st.last_index,
                "lastLogTerm": st.last_term,
                "firstIndex": st.first_index,
            },
            stats=self.stats.as_dict(),
            catchingUp=st.catching_up,
            probing=st.probing,
            fsync=self.config.raft.fsync,
            matchIndex=st.match_index if st.role is StateRole.LEADER else {},
            keys=len(self.replica.sm.data),
            revision=self.replica.sm.revision,
            droppedDatagrams=self.dropped_datagrams,
        )


def _conf_change(req: ConfigRequest) -> ConfChange:
    if req.action == "add":
        return ConfChange(type=ConfChangeType.ADD_LEARNER, node_id=req.address,
                          auto_promote=not req.learner)
    kind = ConfChangeType.PROMOTE if req.action == "promote" else ConfChangeType.REMOVE
    return ConfChange(type=kind, node_id=req.address)


class _Outbox:
    """Adapts the Server to the Replica's Outbox protocol."""

    __slots__ = ("server",)

    def __init__(self, server: Server) -> None:
        self.server = server

    def send(self, messages: Sequence[Message]) -> None:
        self.server.send(messages)

    def respond(self, token: Token, response: dict[str, Any]) -> None:
        self.server.respond(token, response)


def _resolve(address: str) -> Address:
    host, port = parse_address(address)
    info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    sockaddr = info[0][4]
    return (str(sockaddr[0]), int(sockaddr[1]))


def run(config: NodeConfig) -> int:
    """Run the node until SIGTERM/SIGINT; returns the process exit status."""
    try:
        server = Server(config)
    except Exception as e:  # noqa: BLE001 - startup errors are reported in one line
        log.error("cannot start: %s", e)
        return 1
    try:
        uvloop.run(server.serve())
    except OSError as e:
        log.error("cannot serve on %s: %s", config.node.listen, e.strerror or e)
        return 1
    return 0


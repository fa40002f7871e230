"""Server: the asyncio (uvloop) runtime of one node. It moves bytes and time; Replica decides.

One UDP socket (peers) and one TCP listener (clients) share the node's port. Every input
(datagram, client request, tick) only feeds the Replica and schedules one ``_process`` call with
``call_soon``; everything that arrived during a loop iteration is therefore handled in that one
turn: one batch of proposals, one AppendEntries per follower, one fsync.

An fsync error, a corrupt log or a broken invariant ends the process at once with a non-zero
status: after a failed fsync the kernel may have dropped the dirty pages, so retrying could
acknowledge writes that are not on disk.

A full disk does not (see ``raftd.storage.disk``): while ``storage.no_space()``, a leader
answers client writes with ``no_space`` and hands leadership to the most caught-up voter; any
node drops InstallSnapshot and the AppendEntries whose entries ``storage.can_append`` refuses
(the leader retries them); a timer calls ``storage.retry_space()`` every second.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import random
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgpack
import uvloop

from raftd.apps import APP_SETTINGS, hosted_apps
from raftd.config import NodeConfig, parse_address
from raftd.core import (
    ConfChange,
    ConfChangeType,
    Config,
    ConfState,
    Message,
    RawNode,
    StateRole,
)
from raftd.core.messages import MsgApp, MsgSnap
from raftd.core.state import ENTRY_OVERHEAD_BYTES, Entry, HardState, Snapshot, SnapshotMeta
from raftd.metrics import Metrics, RateStats, Sample
from raftd.replica import Replica, Token
from raftd.snapshotter import SnapshotPolicy, Snapshotter
from raftd.statemachine import (
    APP,
    DELETE,
    SET,
    Capture,
    DictStateMachine,
    encode_command,
    value_bytes,
)
from raftd.storage.disk import DiskStorage
from raftd.storage.files import OsFileSystem
from raftd.transport.addresses import PeerAddresses, lookup_name
from raftd.transport.clients import ClientConnection, ClientGate, bind_tcp, tls_server_context
from raftd.transport.peers import Address, PeerLink
from raftd.wire.auth import PeerAuth
from raftd.wire.client import (
    AppendRequest,
    AppRequest,
    ConfigRequest,
    DiagnosticRequest,
    ErrorCode,
    GetRequest,
    HealthRequest,
    ListRequest,
    Request,
    SnapshotRequest,
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
MAX_SNAPSHOT_RESPONSE_BYTES = 2 << 30


def peer_header_bytes(members: Sequence[str]) -> int:
    """Worst-case bytes of a MsgApp besides its entries (two node ids and the numbers)."""
    longest = max((len(m.encode()) for m in members), default=0)
    return 128 + 2 * longest


Reply = Callable[[dict[str, Any]], None]


class ServerApp(Protocol):
    """An application hosted inside raftd (federated learning), beside the key-value store.

    Its replicated state is a ``statemachine.AppStateMachine`` registered on the state
    machine; this side is the node-local part: it answers its ``AppRequest`` types and learns
    of role changes. It proposes commands with ``Server.propose_app``.
    """

    def handle(self, request: AppRequest, reply: Reply) -> None: ...

    def long_polls(self, request: AppRequest) -> bool:
        """Whether ``request`` waits on purpose for news: its latency is not measured."""
        ...

    def on_role_change(self, role: StateRole, term: int) -> None: ...

    def close(self) -> None: ...


class MeteredStorage:
    """The Replica's write side of DiskStorage, timing each fsync for the metrics."""

    def __init__(self, storage: DiskStorage, metrics: Metrics | None) -> None:
        self.storage = storage
        self.metrics = metrics

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self.storage.apply_snapshot(snapshot)

    def append(self, entries: Sequence[Entry]) -> None:
        self.storage.append(tuple(entries))

    def set_hard_state(self, hs: HardState) -> None:
        self.storage.set_hard_state(hs)

    def conf_index(self) -> int:
        return self.storage.conf_index()

    def set_conf_state(self, conf: ConfState, index: int) -> None:
        self.storage.set_conf_state(conf, index)

    def sync(self) -> None:
        if self.metrics is None:
            self.storage.sync()
            return
        started = time.perf_counter()
        self.storage.sync()
        self.metrics.fsync_seconds.observe(time.perf_counter() - started)


class Server:
    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.id = config.node.address
        raft = config.raft
        members = tuple(config.cluster.members)
        fs = OsFileSystem()
        # Zero-filling the WAL's next segment takes tens of ms: not on the event loop.
        self.wal_thread = concurrent.futures.ThreadPoolExecutor(1, "raftd-wal")
        self.storage = DiskStorage(
            fs, str(config.node.data_dir), conf_state=ConfState(voters=members),
            fsync=raft.fsync, background=self.wal_thread,
        )
        # With a cluster secret every datagram is sealed (wire.auth), which costs some bytes.
        secret = config.cluster.secret
        self.peer_auth = (PeerAuth(secret, self.id, epoch=int.from_bytes(os.urandom(8), "big"))
                          if secret is not None else None)
        datagram_bytes = raft.max_datagram_bytes - (
            self.peer_auth.overhead if self.peer_auth is not None else 0)
        # Batches are cut to fit one datagram; a single larger entry travels fragmented.
        batch_bytes = datagram_bytes - peer_header_bytes(members + (self.id,))
        core_config = Config(
            id=self.id,
            election_ticks=raft.election_ticks,
            heartbeat_ticks=raft.heartbeat_ticks,
            rng=random.Random(os.urandom(16)),
            max_msg_bytes=batch_bytes,
            promote_lag_entries=raft.promote_lag_entries,
        )
        self.node = RawNode(core_config, self.storage)
        state_machine = DictStateMachine()
        self.metrics = Metrics(self._metrics_sample) if config.metrics.address else None
        self.replica = Replica(
            self.node,
            MeteredStorage(self.storage, self.metrics),
            state_machine,
            # An entry of a batch alone in its MsgApp still fits the datagram.
            max_entry_bytes=batch_bytes - ENTRY_OVERHEAD_BYTES,
            request_timeout_ticks=REQUEST_TIMEOUT_MS // raft.tick_ms,
        )
        self.snapshotter = Snapshotter(
            self.replica, self.storage, fs, str(config.node.data_dir),
            SnapshotPolicy(raft.snapshot_every, raft.snapshot_min_log_bytes,
                           raft.snapshot_trailing_entries),
            on_fatal=self._fatal, on_done=self._on_snapshot_done,
        )
        # max_entry_bytes bounds the value; the key and the command's fields come on top.
        self.max_value_bytes = raft.max_entry_bytes
        self.tick_s = raft.tick_ms / 1000
        self.addresses = PeerAddresses()
        self.member_resolutions: dict[str, set[Address]] = {}
        """Every address each member's name resolves to (add-node refuses aliases)."""
        self.lookups: set[asyncio.Task[None]] = set()
        """add-node requests whose names are being looked up."""
        self.peers = PeerLink(raft.max_datagram_bytes, self.addresses.get, self._on_peer_message,
                              self._on_transfer_outcome, auth=self.peer_auth)
        self.snapshot_transfers: dict[str, int] = {}
        """peer -> transfer id of the MsgSnap on its way there (a newer one supersedes it)."""
        self.tcp: asyncio.base_events.Server | None = None
        self.clients = ClientGate(max_frame_bytes=raft.max_entry_bytes + (64 << 10),
                                  max_response_bytes=MAX_RESPONSE_BYTES,
                                  too_large_note="a value may have up to max_entry_bytes "
                                                 f"({raft.max_entry_bytes} bytes)",
                                  token=config.security.client_token)
        self.tls = tls_server_context(config.security)  # bad files: the node does not start
        self.connections: set[ClientConnection] = set()
        self.requests: dict[Token, tuple[ClientConnection, int | None, str, float]] = {}
        self.next_token = 0
        self.scheduled = False
        self.closed = False
        """Set by ``_shutdown``: the loop may still run a queued turn while it winds down
        (asyncio.Runner.close), and that must not touch the closed log."""
        self.timers: dict[str, asyncio.TimerHandle] = {}
        """The tick and the stats timer, each re-armed by itself: ``_shutdown`` cancels them."""
        self.pack = msgpack.Packer(use_bin_type=True).pack
        """Packs client commands (a Packer of our own: ``packb`` builds one per call). It
        keeps a buffer as large as the largest command, at most about ``max_entry_bytes``."""
        self.stopping: asyncio.Event | None = None
        self.stats = RateStats()
        self.append_sent = 0
        self.append_received = 0
        self.dropped: dict[str, int] = {"undecodable": 0, "misaddressed": 0, "not_a_member": 0,
                                        "no_space": 0}
        self.answered: dict[tuple[str, str], int] = {}
        self.last_heard: dict[str, float] = {}
        """Monotonic time of the last datagram from each peer (status' CONTACT column)."""
        self.callbacks: dict[Token, Reply] = {}
        """Tokens of commands proposed by hosted applications, with their reply."""
        self.role = self.node.raft.role
        self.apps: dict[str, ServerApp] = hosted_apps(self)
        snapshot = self.storage.snapshot()
        if snapshot.meta.index:  # after hosted_apps registered their replicated state
            state_machine.restore(snapshot.data)

    # -- lifecycle -------------------------------------------------------------------------
    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()
        host, port = parse_address(self.config.node.listen)
        for member in self.config.cluster.members:
            self.addresses.get(member)  # names: their lookups start now, off the loop
        await self.peers.open(host, port)
        self.tcp = await loop.create_server(
            lambda: ClientConnection(self._on_request, self.connections.discard, self.clients),
            sock=bind_tcp(host, port),
            ssl=self.tls,
        )
        if self.metrics is not None and self.config.metrics.address:
            metrics_host, metrics_port = parse_address(self.config.metrics.address)
            self.metrics.serve(metrics_host, metrics_port)
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_stop_signal)
        hs, _ = self.storage.initial_state()
        log.info(
            "raftd %s serving on %s (udp peers%s, tcp clients%s%s); data %s; members %s; "
            "fsync %s%s%s",
            self.id, self.config.node.listen,
            " authenticated" if self.peer_auth is not None else "",
            " over TLS" if self.tls is not None else "",
            " with a token" if self.clients.token is not None else "",
            self.config.node.data_dir,
            ",".join(self.node.raft.members), "on" if self.config.raft.fsync else "OFF",
            "; blank data dir" if hs is None else "",
            f"; metrics on {self.config.metrics.address}" if self.metrics is not None else "",
        )
        next_tick = loop.time() + self.tick_s
        self.timers["tick"] = loop.call_at(next_tick, self._on_tick, next_tick)
        self.timers["stats"] = loop.call_later(1.0, self._on_stats_timer)
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
        if raft.role is not StateRole.LEADER or len(raft.voters) < 2 or self.id not in raft.voters:
            return
        target = raft.most_caught_up_voter()
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
        self.closed = True
        for timer in self.timers.values():
            timer.cancel()
        self.replica.fail_all(
            _Outbox(self), error(ErrorCode.SHUTTING_DOWN, "the node is shutting down")
        )
        if self.tcp is not None:
            self.tcp.close()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.close()
        for app in self.apps.values():
            app.close()
        self.peers.close()
        self.addresses.close()
        self.storage.sync()
        self.storage.close()
        self.wal_thread.shutdown()

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
        self.timers["tick"] = loop.call_at(due, self._on_tick, due)

    def _on_stats_timer(self) -> None:
        self.stats.sample(int(time.time()), {
            "reads": self.replica.served_reads,
            "writes": self.replica.applied_writes,
            "append": self.append_sent + self.append_received,
        })
        self.peers.expire()
        try:
            self.storage.retry_space()
        except Exception as e:  # noqa: BLE001 - only a failure other than ENOSPC gets here
            self._fatal("preallocating the next WAL segment failed", e)
        self.timers["stats"] = asyncio.get_running_loop().call_later(1.0, self._on_stats_timer)

    def _refuses_for_space(self) -> bool:
        """Whether a write must be answered ``no_space``: this node leads and its disk is full.
        If so, it hands leadership to the most caught-up other voter (again at the next
        refused write, should a transfer fail)."""
        raft = self.node.raft
        if not self.storage.no_space() or raft.role is not StateRole.LEADER:
            return False
        target = raft.most_caught_up_voter()
        if target and not raft.lead_transferee:
            log.warning("disk full: handing leadership to %s", target)
            self.node.transfer_leader(target)
            self._schedule()
        return True

    def _on_peer_message(self, data: bytes, addr: Address) -> None:
        try:
            msg = decode_peer(data)
        except DecodeError as e:
            self.dropped["undecodable"] += 1
            log.debug("dropped undecodable datagram from %s: %s", addr, e)
            return
        if msg.dst != self.id:
            self.dropped["misaddressed"] += 1
            return
        if not self._is_peer(msg.src):
            self.dropped["not_a_member"] += 1
            return
        if (isinstance(msg, MsgApp) and not self.storage.can_append(msg.entries)) or (
            isinstance(msg, MsgSnap) and self.storage.no_space()
        ):
            self.dropped["no_space"] += 1  # the disk is full: the leader sends them again
            return
        if isinstance(msg, MsgApp):
            self.append_received += 1
        self.last_heard[msg.src] = time.monotonic()
        try:
            self.replica.step(msg)
        except Exception as e:  # noqa: BLE001
            self._fatal(f"stepping {type(msg).__name__} from {msg.src} failed", e)
        self._schedule()

    def _report_sent(self, peer: str) -> None:
        self.node.report_snapshot(peer, ok=True)
        self._schedule()

    def _on_transfer_outcome(self, peer: str, transfer: int, ok: bool) -> None:
        if self.snapshot_transfers.get(peer) != transfer:
            return  # a large MsgApp: its loss is Raft's ordinary retry business
        del self.snapshot_transfers[peer]
        log.info("snapshot to %s %s", peer, "delivered" if ok else "failed")
        try:
            self.node.report_snapshot(peer, ok=ok)
        except Exception as e:  # noqa: BLE001
            self._fatal(f"reporting the snapshot to {peer} failed", e)
        self._schedule()

    def _on_request(self, conn: ClientConnection, req: Request) -> None:
        self.connections.add(conn)
        if isinstance(req, DiagnosticRequest):
            self._answer(conn, req.id, "diagnostic", time.perf_counter(), self.diagnostic())
            return
        if isinstance(req, AppRequest):
            # Counted under the application's name: its request types come from clients, and
            # a metric label per type a client made up would grow without bound.
            started = time.perf_counter()
            app = self.apps.get(req.app)
            if app is None:
                setting = APP_SETTINGS.get(req.app)
                hint = f" (its config needs {setting})" if setting else ""
                self._answer(conn, req.id, req.app, started, error(
                    ErrorCode.BAD_REQUEST,
                    f"application {req.app!r} is not enabled on this node{hint}"))
                return
            timed = not app.long_polls(req)  # a wait on purpose would blur the histogram
            app.handle(req, lambda response: self._answer(conn, req.id, req.app, started,
                                                          response, timed=timed))
            return
        token = self.next_token
        self.next_token += 1
        kind = _KINDS[type(req)]
        self.requests[token] = (conn, req.id, kind, time.perf_counter())
        outbox = _Outbox(self)
        if isinstance(req, AppendRequest):
            if self._refuses_for_space():
                self.respond(token, error(ErrorCode.NO_SPACE, f"the disk of {self.id} is full"))
                return
            packed = encode_command(
                SET if req.action == "change" else DELETE,
                req.key,
                req.value,
                client_id=req.client_id,
                seq=req.seq,
                first_unacked_seq=req.first_unacked_seq,
                if_revision=req.if_revision,
                if_absent=req.if_absent,
                pack=self.pack,
            )
            # The value is no bigger than its command: only a large one needs measuring.
            if len(packed) > self.max_value_bytes and (
                    (size := value_bytes(req.value)) > self.max_value_bytes):
                self.clients.rejected["value_too_large"] += 1
                self.respond(token, error(
                    ErrorCode.TOO_LARGE,
                    f"a value of {size} bytes exceeds max_entry_bytes"
                    f" ({self.max_value_bytes})",
                ))
                return
            self.replica.submit_write(token, packed)
        elif isinstance(req, GetRequest | ListRequest | SnapshotRequest):
            self.replica.submit_read(token, req, outbox)
        elif isinstance(req, HealthRequest):
            self.replica.submit_health(token, outbox)
        elif isinstance(req, ConfigRequest) and req.action == "add":
            # Name lookups may take seconds: never on the loop that sends the heartbeats.
            task = asyncio.get_running_loop().create_task(self._add_node(token, req))
            self.lookups.add(task)
            task.add_done_callback(self.lookups.discard)
            return
        elif isinstance(req, ConfigRequest):
            self.replica.submit_conf_change(token, _conf_change(req))
        elif isinstance(req, TransferLeaderRequest):
            self.replica.submit_transfer(token, req.address, outbox)
        self._schedule()

    async def _add_node(self, token: Token, req: ConfigRequest) -> None:
        problem = await self._cannot_add(req.address)
        if problem is not None:
            self.respond(token, error(ErrorCode.BAD_REQUEST, problem))
            return
        self.replica.submit_conf_change(token, _conf_change(req))
        self._schedule()

    async def _cannot_add(self, address: str) -> str | None:
        """Why ``address`` cannot join, or None.

        It must resolve: a member that cannot be reached would be committed for good. And it
        must not be a member under another name (``localhost:7001`` for ``127.0.0.1:7001``):
        a node answers only to its own id, so the alias would be a voter that never answers.
        """
        try:
            resolved = await lookup_name(address)
        except (OSError, ValueError) as e:
            return f"cannot resolve {address}: {e}"
        self.addresses.learn(address, resolved[0])  # its first datagram needs no lookup
        target = set(resolved)
        for member in self.node.raft.members:
            if member == address:
                continue
            known = self.member_resolutions.get(member)
            if known is None:
                try:  # every resolution: "localhost" may name ::1 first and 127.0.0.1 after
                    # Cached: members rarely change address.
                    known = self.member_resolutions[member] = set(await lookup_name(member))
                except (OSError, ValueError):
                    continue  # a member that no longer resolves is no one's alias
            if known & target:
                return f"{address} is the member {member} under another name"
        return None

    # -- the turn --------------------------------------------------------------------------
    def _schedule(self) -> None:
        if not self.scheduled:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._process)

    def _process(self) -> None:
        self.scheduled = False
        if self.closed:
            return
        try:
            self.replica.process(_Outbox(self), time.time_ns() // 1_000_000)
            if self.replica.wants_turn():
                self._schedule()  # call_soon: the loop polls the sockets before that turn
            if self.snapshotter.due():
                self.snapshotter.start()
        except Exception as e:  # noqa: BLE001 - fsync errors included: never retried
            self._fatal("handling the log failed", e)
        raft = self.node.raft
        if raft.role is not self.role:
            self.role = raft.role
            for app in self.apps.values():
                app.on_role_change(raft.role, raft.current_term)

    def transfer_leader(self, target: str) -> None:
        """Start handing leadership to ``target`` now (the TimeoutNow leaves this turn).

        Raises ``raftd.core.ProposalDropped`` when it cannot start (not the leader, not a voter).
        """
        self.node.transfer_leader(target)
        self._schedule()

    def propose_app(self, app: str, payload: Any, reply: Reply) -> None:
        """Replicate an application command; ``reply`` gets its result once applied (or an
        error such as a redirect when this node is not the leader)."""
        if self._refuses_for_space():
            reply(error(ErrorCode.NO_SPACE, f"the disk of {self.id} is full"))
            return
        token = self.next_token
        self.next_token += 1
        self.callbacks[token] = reply
        self.replica.submit_write(token, encode_command(APP, app, payload))
        self._schedule()

    def send(self, messages: Sequence[Message]) -> None:
        for m in messages:
            if isinstance(m, MsgApp):
                self.append_sent += 1
            snapshot = isinstance(m, MsgSnap)
            transfer = self.peers.send(m.dst, encode_peer(m), supersede=snapshot)
            if snapshot and transfer is not None:
                self.snapshot_transfers[m.dst] = transfer
            elif snapshot:
                # It fitted one datagram: no transfer will report; the leader then waits for
                # the follower's ack (or re-sends after a heartbeat), never stuck in SNAPSHOT.
                asyncio.get_running_loop().call_soon(self._report_sent, m.dst)

    def _is_peer(self, node: str) -> bool:
        return self.replica.accepts_from(node, self.config.cluster.members)

    def respond(self, token: Token, response: dict[str, Any]) -> None:
        callback = self.callbacks.pop(token, None)
        if callback is not None:
            callback(response)
            return
        conn, request_id, kind, started = self.requests.pop(token, (None, None, "", 0.0))
        if conn is not None:
            self._answer(conn, request_id, kind, started, response)

    def _answer(self, conn: ClientConnection, request_id: int | None, kind: str,
                started: float, response: dict[str, Any], limit: int | None = None,
                timed: bool = True) -> None:
        """Answer one client request, counting it by type and outcome for the metrics (and
        its latency unless not ``timed``)."""
        outcome = response.get("code", "ok") if response["type"] == "error" else (
            "redirect" if response["type"] == "redirect" else "ok")
        self.answered[(kind, outcome)] = self.answered.get((kind, outcome), 0) + 1
        if self.metrics is not None and timed:
            self.metrics.request_seconds.labels(kind).observe(time.perf_counter() - started)
        conn.respond(response, request_id, limit=limit)

    def respond_capture(self, token: Token, meta: SnapshotMeta, capture: Capture) -> None:
        """Serialize a state capture in a worker thread, then answer with it."""
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, lambda: b"".join(capture.chunks()))

        def done(f: asyncio.Future[bytes]) -> None:
            capture.release()
            try:
                data = f.result()
            except Exception as e:  # noqa: BLE001 - answered, never left hanging
                log.error("serializing a snapshot for a client failed: %s", e)
                self.respond(token, error(ErrorCode.TIMEOUT, f"snapshot failed: {e}"))
                return
            conf = meta.conf_state
            response = result(index=meta.index, term=meta.term, voters=list(conf.voters),
                              learners=list(conf.learners), data=data)
            conn, request_id, kind, started = self.requests.pop(token, (None, None, "", 0.0))
            if conn is not None:
                self._answer(conn, request_id, kind, started, response,
                             limit=MAX_SNAPSHOT_RESPONSE_BYTES)

        future.add_done_callback(done)

    # -- observability ---------------------------------------------------------------------
    def _on_snapshot_done(self, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.snapshot_seconds.observe(seconds)

    def _role(self) -> str:
        raft = self.node.raft
        return "learner" if self.id in raft.learners else raft.role.value

    def _metrics_sample(self) -> Sample:
        raft = self.node.raft
        return Sample(
            role=self._role(),
            term=raft.current_term,
            commit_index=raft.log.commit_index,
            applied_index=raft.log.applied_index,
            last_log_index=raft.log.last_index(),
            proposals=self.replica.proposed_entries,
            committed_entries=self.replica.applied_entries,
            append_sent=self.append_sent,
            append_received=self.append_received,
            dropped={**self.dropped, **self.peers.dropped},
            requests=dict(self.answered),
            client_rejected=dict(self.clients.rejected),
            client_connections=len(self.clients.live),
            snapshots=self.snapshotter.count,
        )

    def _last_contact_ms(self) -> dict[str, int | None]:
        now = time.monotonic()
        heard = self.last_heard
        return {
            m: (round((now - heard[m]) * 1000) if m in heard else None)
            for m in self.node.raft.members if m != self.id
        }

    def diagnostic(self) -> dict[str, Any]:
        st = self.node.status()
        snap = self.storage.snapshot_meta()
        return result(
            status=self._role(),
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
            snapshot={"index": snap.index, "term": snap.term,
                      "bytes": self.storage.snapshot_size()},
            stats=self.stats.as_dict(),
            catchingUp=st.catching_up,
            probing=st.probing,
            fsync=self.config.raft.fsync,
            noSpace=self.storage.no_space(),
            matchIndex=st.match_index if st.role is StateRole.LEADER else {},
            lastContactMs=self._last_contact_ms() if st.role is StateRole.LEADER else {},
            keys=self.replica.sm.key_count(),
            revision=self.replica.sm.revision,
            stateHash=self.replica.sm.digest(),
            droppedDatagrams={**self.dropped, **self.peers.dropped},
            clientRejected=dict(self.clients.rejected),
            clientConnections=len(self.clients.live),
            fragmentRetransmissions=self.peers.fragments_out.retransmissions,
        )


_KINDS: dict[type, str] = {
    AppendRequest: "write",
    GetRequest: "read",
    ListRequest: "list",
    HealthRequest: "health",
    ConfigRequest: "config",
    TransferLeaderRequest: "transfer_leader",
    SnapshotRequest: "snapshot",
}


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

    def respond_capture(self, token: Token, meta: SnapshotMeta, capture: Capture) -> None:
        self.server.respond_capture(token, meta, capture)


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

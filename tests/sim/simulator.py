"""The deterministic simulator (our VOPR): one seed, one scenario, one trace.

Theory of operation. ``Simulator(seed)`` draws the whole scenario from ``random.Random(seed)``
("swarm testing": every seed enables a different mix of faults, so rare combinations get
their turn), then gives every component its own ``random.Random(prng.getrandbits(64))`` so that
adding a draw in one component does not shift the others' streams. Nothing reads a clock,
spawns a thread or touches a socket or a file: time is an integer tick count, the disk is
``tests.sim.disk.SimFileSystem``, the network is ``tests.sim.network.SimNetwork``.

The nodes run the production code, wired as ``raftd.server`` wires it: ``DiskStorage`` over the
node's own file system, ``RawNode`` with the real ``Config`` (election 15-30 ticks, heartbeat 3,
the datagram-derived ``max_msg_bytes``), ``Replica`` and ``DictStateMachine``. A restart builds
all of them anew over the same file system, which is exactly the production recovery path; a
wipe replaces the file system with an empty one. Every node starts blank, so the fresh-cluster
bootstrap of ``raftd.core.bootstrap`` runs every time.

One tick: deliver the due datagrams (``Replica.step``, after ``raftd.server``'s filter that
drops datagrams from nodes neither members nor configured), tick every up node (some skip
ticks: clock jitter), let the clients and the membership operator (``tests.sim.membership``:
add, promote, remove, remove the leader, replace, rejoin) send, run one ``Replica.process``
turn per node (or one after every datagram), take snapshots as ``raftd.snapshotter`` would,
then roll the faults: crashes, wipes, partitions, stalls, and an operator's leadership
transfers. Crashes come in two kinds: at a tick boundary, or *armed* (``SimFileSystem.crash_after``)
so that the node dies at its k-th next disk operation, in the middle of a turn: between a WAL
write and its fsync, halfway through a hard-state rename, or after the leader shipped entries
it has not yet made durable itself. A slow fsync (``SlowDiskOptions``) blocks its node as the
runtime's event loop blocks in fsync: like a stall, but it starts mid-turn, and what the turn
does after the fsync (acks, answers) goes out only when the fsync returns. The checkers
(``tests.sim.checker``) run after every input.

Two phases, as in TigerBeetle's VOPR: *safety* (faults on, workload and membership changes
running, a fixed number of ticks), then *liveness* (heal partitions, stop loss, restart every
node the operator did not stop, stop faults and membership changes): within a bounded number of
ticks every request must be answered, and the *final* configuration (the one the committed log
ends with, whatever it is now) must have a leader among its voters that committed everything,
and every one of its members must have applied the same entries into the same state, which
must equal the checker's model. Then, for ``QUIET_TICKS``, no member's term may move: a
removed node left running, or a blank node never added, must not disrupt the cluster.

Membership changes are drawn last, from a stream of their own (``scenario``), so a seed whose
scenario has none runs exactly as it did before they existed; slow disks come after them, the
same way.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, fields, replace
from functools import partial
from typing import Any

from raftd.core import (
    ConfChange,
    Config,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    RawNode,
    Snapshot,
    StateRole,
)
from raftd.core.messages import MsgSnap, MsgTimeoutNow, MsgVote
from raftd.core.state import ENTRY_OVERHEAD_BYTES, SnapshotMeta
from raftd.replica import Replica
from raftd.server import REQUEST_TIMEOUT_MS, peer_header_bytes
from raftd.statemachine import Capture, DictStateMachine
from raftd.storage import snapshots
from raftd.storage.disk import DiskStorage
from raftd.storage.wal import DEFAULT_SEGMENT_BYTES
from raftd.wire.client import GetRequest
from tests.sim.checker import SafetyChecker, Violation, members
from tests.sim.disk import SimFileSystem, SimulatedCrash
from tests.sim.membership import (
    MAX_NODE_IDS,
    NO_MEMBERSHIP,
    ChangeToken,
    MembershipOptions,
    Operator,
    draw_membership,
)
from tests.sim.network import NetworkOptions, SimNetwork, describe
from tests.sim.workload import Workload, WorkloadOptions, wire

TICK_MS = 10
ELECTION_TICKS = (15, 30)
HEARTBEAT_TICKS = 3
DATA_DIR = "/var/lib/raftd"
ARMED_CRASH_MAX_OPS = 8
"""An armed crash hits one of the next 0..8 disk operations: a hard-state save is five (create,
write, fsync, rename, fsync_dir), a WAL batch one write and one fsync."""
QUIET_TICKS = 2 * ELECTION_TICKS[1]
"""After convergence, ticks during which no member's term may change (nobody disrupts)."""

Trace = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class SlowDiskOptions:
    """Slow fsyncs. The runtime's event loop blocks in fsync, so a node whose sync is slow
    does nothing else meanwhile: datagrams queue, ticks are missed (``raftd.server`` skips
    them), and what the turn sends after the fsync waits for it."""

    slow: float = 0.0
    """Chance that a Ready's fsync is slow."""
    slow_ticks: tuple[int, int] = (1, 1)
    stall: float = 0.0
    """Chance that a Ready's fsync stalls (a saturated or failing disk): long enough for the
    others to elect a new leader while it is stuck."""
    stall_ticks: tuple[int, int] = (1, 1)


NO_SLOW_DISK = SlowDiskOptions()


def draw_slow_disk(prng: random.Random) -> SlowDiskOptions:
    """Slow fsyncs for half the seeds (the chances are per fsync: a node syncs about every 30
    ticks), and for two thirds of those stalls of up to six election timeouts."""
    if prng.random() < 0.5:
        return NO_SLOW_DISK
    longest = ELECTION_TICKS[1]
    return SlowDiskOptions(
        slow=prng.choice((0.05, 0.2, 0.5)),
        slow_ticks=(1, prng.choice((3, 10, longest))),
        stall=prng.choice((0.0, 0.01, 0.03)),
        stall_ticks=(longest, prng.choice((3, 6)) * longest),
    )


@dataclass(frozen=True, slots=True)
class Options:
    """Everything a seed decides. Printed on failure, so a reader sees the scenario at once."""

    nodes: int
    network: NetworkOptions
    workload: WorkloadOptions
    partition_modes: tuple[str, ...]
    """Kinds of partition drawn from: "isolate" one node, random "halves", one "link"."""
    partition_symmetric: float
    """Chance a partition cuts both directions; otherwise only one direction is cut."""
    partition_gap: tuple[int, int]
    """Ticks of health between partitions."""
    partition_ticks: tuple[int, int]
    crash_rate: float
    """Per up node and tick."""
    armed_crash: float
    """Share of crashes that strike in the middle of a turn, at a disk operation."""
    down_ticks: tuple[int, int]
    wipe_rate: float
    """Share of crashes that also lose the whole disk (at most one wiped node at a time)."""
    cluster_crash_rate: float
    """Per tick, the chance that every node crashes at once."""
    tick_skip: float
    """Each node skips each tick with its own probability drawn from [0, tick_skip]."""
    pause_rate: float
    """Per up node and tick, the chance that its process stalls for ``pause_ticks``."""
    pause_ticks: tuple[int, int]
    turn_per_message: bool
    """Run a ``Replica.process`` turn after every datagram (a lightly loaded server) instead of
    once per tick (a busy one that batches everything it received)."""
    segment_bytes: int
    max_datagram_bytes: int
    """Writes are batched into entries that fit one datagram (``raftd.server``)."""
    snapshot_every: int
    """Entries applied since the last snapshot before the next one (0: never snapshot)."""
    snapshot_trailing: int
    """Entries kept behind a snapshot for followers slightly behind."""
    snapshot_ticks: tuple[int, int]
    """Ticks between capturing the state and adopting the written file (a worker thread)."""
    transfer_rate: float
    """Per tick, the chance that an operator asks the leader to hand leadership over."""
    request_timeout_ticks: int
    safety_ticks: int
    liveness_ticks: int
    membership: MembershipOptions = NO_MEMBERSHIP
    """Drawn by ``scenario`` after ``swarm``, which leaves it off."""
    slow_disk: SlowDiskOptions = NO_SLOW_DISK
    """Drawn by ``scenario`` last, from a stream of its own; ``swarm`` leaves it off."""

    def describe(self) -> str:
        parts: list[str] = []
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, NetworkOptions | WorkloadOptions | MembershipOptions
                          | SlowDiskOptions):
                parts.extend(_field(g.name, getattr(value, g.name)) for g in fields(value))
            else:
                parts.append(_field(f.name, value))
        return " ".join(parts)


def _field(name: str, value: object) -> str:
    return f"{name}={value:.3g}" if isinstance(value, float) else f"{name}={value!r}"


def swarm(prng: random.Random) -> Options:
    """Draw a scenario. Each fault is off in a good share of seeds, so its absence is tested too."""

    def sometimes(p: float, value: float) -> float:
        return value if prng.random() < p else 0.0

    nodes = prng.choice((1, 3, 3, 5, 5))
    request_timeout = prng.choice((60, 150, REQUEST_TIMEOUT_MS // TICK_MS))
    delay_lo = prng.randint(1, 3)
    network = NetworkOptions(
        loss_max=sometimes(0.7, prng.uniform(0.0, 0.3)),
        duplicate=sometimes(0.3, prng.uniform(0.0, 0.1)),
        delay=(delay_lo, delay_lo + prng.choice((0, 1, 3, 8))),
        reorder=prng.random() < 0.5,
    )
    requests = prng.randint(40, 160)
    safety_ticks = prng.randint(1500, 3000)
    clients = prng.randint(1, 5)
    workload = WorkloadOptions(
        clients=clients,
        requests=requests,
        read_ratio=prng.uniform(0.1, 0.5),
        shared_keys=prng.choice((0, 1, 3)),
        delete_ratio=sometimes(0.5, 0.3),
        pipeline=prng.choice((1, 1, 2, 4)),
        issue_rate=min(1.0, 2.0 * requests / (clients * safety_ticks)),
        attempt_timeout=request_timeout + 20,
    )
    crash_rate = sometimes(0.7, prng.choice((0.001, 0.003, 0.01)))
    return Options(
        nodes=nodes,
        network=network,
        workload=workload,
        partition_modes=tuple(m for m in ("isolate", "halves", "link") if prng.random() < 0.6),
        partition_symmetric=prng.random(),
        partition_gap=(prng.randint(10, 100), prng.randint(100, 400)),
        partition_ticks=(prng.randint(10, 60), prng.randint(60, 300)),
        crash_rate=crash_rate,
        armed_crash=prng.random(),
        down_ticks=(prng.randint(1, 50), prng.randint(50, 300)),
        wipe_rate=sometimes(0.4, prng.uniform(0.1, 0.5)) if nodes > 1 else 0.0,
        cluster_crash_rate=sometimes(0.3, 0.002) if crash_rate else 0.0,
        tick_skip=sometimes(0.5, prng.choice((0.1, 0.3, 0.7))),
        pause_rate=sometimes(0.3, prng.choice((0.001, 0.003))),
        pause_ticks=(prng.randint(5, 30), prng.randint(30, 120)),
        turn_per_message=prng.random() < 0.3,
        segment_bytes=prng.choice((DEFAULT_SEGMENT_BYTES, 2048)),
        max_datagram_bytes=prng.choice((512, 1400)),
        snapshot_every=prng.choice((0, 5, 20, 50)),
        snapshot_trailing=prng.choice((0, 2, 10)),
        snapshot_ticks=(0, prng.choice((0, 3, 20))),
        transfer_rate=sometimes(0.3, 0.002) if nodes > 1 else 0.0,
        request_timeout_ticks=request_timeout,
        safety_ticks=safety_ticks,
        liveness_ticks=3000,
    )


@dataclass(frozen=True, slots=True)
class Streams:
    """One random stream per component, so that a draw in one does not shift the others."""

    crash: random.Random
    partition: random.Random
    clock: random.Random
    disk: random.Random
    node: random.Random
    net: random.Random
    workload: random.Random
    operator: random.Random
    membership: random.Random
    """Drawn after the others: they are those of the simulator before membership changes."""
    sync: random.Random
    """Slow fsyncs, drawn last for the same reason."""


def scenario(seed: int) -> tuple[Options, Streams]:
    """What a seed decides: the options (faults by ``swarm``, then the membership changes and
    the slow disks, each drawn from its own stream) and every component's stream."""
    prng = random.Random(seed)
    options = swarm(prng)
    streams = Streams(*(random.Random(prng.getrandbits(64)) for _ in fields(Streams)))
    membership = draw_membership(streams.membership, options.nodes)
    slow_disk = draw_slow_disk(streams.sync)
    return replace(options, membership=membership, slow_disk=slow_disk), streams


@dataclass(frozen=True, slots=True)
class RunResult:
    seed: int
    ticks: int
    committed: int
    """Entries in the global committed sequence."""
    leaders: dict[int, str]
    """Term -> leader, for every term that had one."""
    messages: int
    crashes: int
    wipes: int
    snapshots: int
    conf_changes: int
    """Committed configuration entries that changed the configuration."""
    procedures: int
    """Membership procedures the operator started."""
    members: tuple[str, ...]
    """The final configuration (voters, then learners)."""
    stray: int
    """Datagrams from removed nodes that members handled (but a removed leader's hand-off)."""
    disruptions: int
    """Of those, the ones that raised the term of a member that was following another leader
    heard from within that leader's lease (``Config.lease_ticks``)."""
    not_a_member: int
    """Datagrams dropped as from a node neither member nor configured (``raftd.server``)."""
    slow_syncs: int
    """Slow or stalled fsyncs."""


@dataclass(frozen=True, slots=True)
class OperatorToken:
    """The token of an operator's request (a leadership transfer), not a client's."""

    number: int


class _Outbox:
    """``raftd.replica.Outbox`` of one node: datagrams to the network, answers to the clients."""

    __slots__ = ("_node", "_sim")

    def __init__(self, sim: Simulator, node: SimNode) -> None:
        self._sim = sim
        self._node = node

    def send(self, messages: Sequence[Message]) -> None:
        sim = self._sim
        node = self._node
        storage = node.storage
        hs = storage.initial_state()[0] if storage is not None else None
        voters = node.replica.node.raft.voters if node.replica is not None else ()
        sim.checker.on_send(node.id, messages, hs.current_term if hs is not None else 0, voters)
        if node.held is not None:  # decided now, sent once the slow fsync returns
            node.held.append(partial(self._transmit, tuple(messages)))
        else:
            self._transmit(messages)

    def _transmit(self, messages: Sequence[Message]) -> None:
        self._sim.network.send(messages, self._sim.now)

    def respond_capture(self, token: Hashable, meta: SnapshotMeta, capture: Capture) -> None:
        """Only a client's ``snapshot save`` gets this answer; the simulated ones never ask."""
        raise Violation(f"a snapshot capture at {meta.index} answered request {token!r}")

    def respond(self, token: Hashable, response: dict[str, Any]) -> None:
        if self._node.held is not None:
            self._node.held.append(partial(self._respond, token, response))
        else:
            self._respond(token, response)

    def _respond(self, token: Hashable, response: dict[str, Any]) -> None:
        if isinstance(token, OperatorToken):
            self._sim._emit(f"{self._node.id} -> operator: transfer {response}")
            return
        if isinstance(token, ChangeToken):
            self._sim.operator.on_response(token, wire(response))
            return
        self._sim.workload.on_response(token, response, self._sim.now)


class _Storage:
    """The Replica's write side of ``DiskStorage`` (like ``raftd.server.MeteredStorage``),
    telling the checker when a leader's snapshot replaces the node's log and state."""

    __slots__ = ("_disk", "_node", "_sim")

    def __init__(self, sim: Simulator, node: SimNode, disk: DiskStorage) -> None:
        self._sim = sim
        self._node = node
        self._disk = disk

    def apply_snapshot(self, snapshot: Snapshot) -> None:
        self._disk.apply_snapshot(snapshot)
        self._sim.checker.on_install(self._node.id, snapshot)
        self._sim._emit(f"{self._node.id} installs a snapshot at {snapshot.meta.index}/"
                        f"{snapshot.meta.term} ({len(snapshot.data)} bytes)")

    def append(self, entries: Sequence[Entry]) -> None:
        entries = tuple(entries)
        if entries:  # checked before the write: a crash inside it may keep part of it
            prev_term = self._disk.term(entries[0].index - 1)
            self._sim.checker.on_append(self._node.id, entries, prev_term)
        self._disk.append(entries)

    def set_hard_state(self, hs: HardState) -> None:
        self._disk.set_hard_state(hs)

    def conf_index(self) -> int:
        return self._disk.conf_index()

    def set_conf_state(self, conf: ConfState, index: int) -> None:
        self._disk.set_conf_state(conf, index)

    def sync(self) -> None:
        self._disk.sync()
        self._sim.slow_sync(self._node)


@dataclass(frozen=True, slots=True)
class SnapshotJob:
    """A snapshot being written "in a worker thread": captured now, adopted at ``finish_at``."""

    meta: SnapshotMeta
    capture: Capture
    finish_at: int


class SimNode:
    """One server: its disk outlives its process (``replica``), unless wiped."""

    def __init__(
        self, sim: Simulator, node_id: str, tick_skip: float, configured: tuple[str, ...]
    ) -> None:
        self.id = node_id
        self.configured = configured
        """``[cluster] members`` of its config file: the initial voters, for a node added
        later too (the README's add-node example lists them). A blank node starts with these
        as its voters, i.e. as the configuration the log's first entries apply to, and
        ``raftd.server`` accepts datagrams only from them and the current members."""
        self.fs = SimFileSystem()
        self.storage: DiskStorage | None = None
        self.replica: Replica | None = None
        self.restart_at = 0
        self.armed = False
        self.wiped = False
        """Restarted blank and not yet caught up: no other node may be wiped meanwhile."""
        self.without_data = True
        """Blank (from the start, or wiped) and not yet caught up, whether up or down now: two
        such members in a quorum are a majority without its data, which raftd waits out."""
        self.tick_skip = tick_skip
        self.seen: tuple[StateRole, int, str] | None = None
        """Role, term and leader last traced (verbose runs only)."""
        self.outbox = _Outbox(sim, self)
        self.paused_until = 0
        """While ``now`` is below it the process is stalled (a GC pause, a frozen VM)."""
        self.backlog: list[Message] = []
        """Datagrams that arrived while paused, in arrival order."""
        self.held: list[Callable[[], None]] | None = None
        """While blocked in a slow fsync, the datagrams and answers it produced after the fsync
        (sent when it returns); None otherwise."""
        self.snapshot_job: SnapshotJob | None = None
        self.retired = False
        """Stopped by the operator after its removal: not restarted, not a client endpoint."""
        self.dropped = 0
        """Datagrams it dropped as from a node neither member nor configured."""

    @property
    def up(self) -> bool:
        return self.replica is not None


class Simulator:
    def __init__(
        self,
        seed: int,
        *,
        trace: Trace | None = None,
        adjust: Callable[[Options], Options] | None = None,
    ) -> None:
        """``adjust`` lets a scenario test change the drawn options (the streams stay put)."""
        self.seed = seed
        options, streams = scenario(seed)
        self.options = adjust(options) if adjust is not None else options
        self._adjust = adjust
        opts = self.options
        self._crash_rng = streams.crash
        self._partition_rng = streams.partition
        self._clock_rng = streams.clock
        self._disk_rng = streams.disk
        self._node_rng = streams.node
        self._operator_rng = streams.operator
        self._sync_rng = streams.sync
        self._trace = trace
        self.now = 0
        self.ids = tuple(f"n{i}" for i in range(1, opts.nodes + 1))
        """The initial voters, which every node's config lists as ``[cluster] members``."""
        self.spare_ids = tuple(
            f"n{i}" for i in range(opts.nodes + 1, opts.nodes + 1 + opts.membership.spares)
        )
        if len(self.ids) + len(self.spare_ids) > MAX_NODE_IDS:
            raise ValueError(f"at most {MAX_NODE_IDS} node ids")
        self.nodes = {
            i: SimNode(self, i, self._clock_rng.uniform(0.0, opts.tick_skip), self.ids)
            for i in self.ids
        }
        # As raftd.server: batches are cut to fit one datagram.
        self._batch_bytes = opts.max_datagram_bytes - peer_header_bytes(self.ids + self.spare_ids)
        self.checker = SafetyChecker(ConfState(voters=self.ids))
        emit = self._emit if trace is not None else None
        self.network = SimNetwork(self.ids, opts.network, streams.net, emit)
        self.workload = Workload(opts.workload, streams.workload, self, self.checker, emit)
        self.operator = Operator(self, opts.membership, streams.membership, emit)
        self.stray = 0
        self.disruptions = 0
        self.not_a_member = 0
        self.faults = True
        self._settled_at = 0
        """No convergence is judged before (the liveness phase sets it)."""
        self._blackout = False
        self._partition_until = 0
        self._next_partition = (
            self._partition_rng.randint(*opts.partition_gap) if opts.partition_modes else 0
        )
        self.crashes = 0
        self.wipes = 0
        self.snapshots = 0
        self.slow_syncs = 0
        self._operator_requests = 0
        for node in self.nodes.values():
            self.start(node)

    # -- the Cluster protocol of the workload ------------------------------------------------
    @property
    def nodes_ids(self) -> tuple[str, ...]:
        """Every node a client (or ``raftctl``) may connect to: all but the stopped ones."""
        return tuple(i for i, n in self.nodes.items() if not n.retired)

    def is_up(self, node: str) -> bool:
        return self.nodes[node].up

    def submit_write(self, node: str, token: Hashable, packed: bytes) -> None:
        replica = self.nodes[node].replica
        assert replica is not None
        replica.submit_write(token, packed)

    def submit_read(self, node: str, token: Hashable, query: GetRequest) -> None:
        sim_node = self.nodes[node]
        assert sim_node.replica is not None
        sim_node.replica.submit_read(token, query, sim_node.outbox)

    def committed_count(self) -> int:
        return len(self.checker.committed)

    # -- what the membership operator does ---------------------------------------------------
    def submit_conf_change(self, node: str, token: ChangeToken, cc: ConfChange) -> None:
        replica = self.nodes[node].replica
        assert replica is not None
        replica.submit_conf_change(token, cc)

    def start_member(self, node_id: str) -> None:
        """Start a node's process: a new one (blank) or one the operator stopped."""
        node = self.nodes.get(node_id)
        if node is None:
            node = self.nodes[node_id] = SimNode(
                self, node_id, self._clock_rng.uniform(0.0, self.options.tick_skip), self.ids)
            self.network.add_node(node_id)
        node.retired = False
        if not node.up:
            self.start(node)

    def recovering_member(self) -> bool:
        """Whether a voter is without its data (lost its disk, or blank since it started)
        and has not caught up yet: removing anyone could leave a majority without data."""
        return any(n.without_data for n in self.nodes.values()
                   if n.id in self.checker.config.voters)

    def retire(self, node_id: str) -> None:
        """The operator stops the process for good (after removing the node)."""
        node = self.nodes[node_id]
        node.retired = True
        if node.up:
            self.crash(node, "(stopped by the operator)")

    # -- running -----------------------------------------------------------------------------
    def run(self) -> RunResult:
        """Both phases; raises AssertionError starting with the seed and the replay command."""
        try:
            for _ in range(self.options.safety_ticks):
                self.tick()
            self.start_liveness()
            self.converge()
        except Exception as e:
            raise AssertionError(self.failure_header(e)) from e
        return self.result()

    def result(self) -> RunResult:
        return RunResult(
            seed=self.seed,
            ticks=self.now,
            committed=len(self.checker.committed),
            leaders=dict(self.checker.leaders),
            messages=self.network.sent,
            crashes=self.crashes,
            wipes=self.wipes,
            snapshots=self.snapshots,
            conf_changes=self.checker.conf_changes,
            procedures=sum(self.operator.started.values()),
            members=members(self.checker.config),
            stray=self.stray,
            disruptions=self.disruptions,
            not_a_member=self.not_a_member,
            slow_syncs=self.slow_syncs,
        )

    def failure_header(self, e: BaseException) -> str:
        phase = "safety" if self.faults else "liveness"
        flag = " --no-membership" if self._adjust is without_membership else ""
        return (
            f"seed {self.seed} failed; replay: python -m tests.sim --seed {self.seed}{flag} -v\n"
            f"options: {self.options.describe()}\n"
            f"at tick {self.now} ({phase} phase): {type(e).__name__}: {e}"
        )

    def tick(self) -> None:
        self.now += 1
        now = self.now
        nodes = self.nodes
        for node in nodes.values():
            if node.paused_until > now:
                continue
            if node.held is not None:
                held, node.held = node.held, None
                self._emit(f"{node.id}'s fsync returns: {len(held)} datagrams and answers go out")
                for output in held:
                    output()
            if node.backlog:
                backlog, node.backlog = node.backlog, []
                self._emit(f"{node.id} resumes with {len(backlog)} datagrams queued")
                for msg in backlog:
                    self._deliver(node, msg)
        for msg, ok in self.network.deliver(now):
            if isinstance(msg, MsgSnap):
                self._snapshot_outcome(msg, ok)
                if not ok:
                    continue
            self._deliver(nodes[msg.dst], msg)
        observe = self.checker.observe
        rng = self._clock_rng
        for node in nodes.values():
            replica = node.replica
            if replica is None or node.paused_until > now:
                continue
            if self.faults and node.tick_skip and rng.random() < node.tick_skip:
                continue
            replica.tick(node.outbox)
            observe(node.id, replica.node.raft)
        self.workload.tick(now)
        if self.faults:
            self.operator.tick(now)
        for node in nodes.values():
            if node.replica is not None and node.paused_until <= now:
                self._process(node)
        if self.faults:
            self._roll_faults()

    def _deliver(self, node: SimNode, msg: Message) -> None:
        replica = node.replica
        if replica is None:
            return
        if node.paused_until > self.now:
            node.backlog.append(msg)  # the socket buffer holds it until the process runs again
            return
        raft = replica.node.raft
        src = msg.src
        if not replica.accepts_from(src, node.configured):
            self.not_a_member += 1  # as raftd.server.Server._is_peer
            node.dropped += 1
            if self._trace is not None:
                self._emit(f"{node.id} drops (not a member) {describe(msg)}")
            return
        if self._trace is not None:
            self._emit(describe(msg))
        checker = self.checker
        # A removed leader's TimeoutNow is its designed hand-off, not a disruption.
        stray = (src in checker.removed and node.id in checker.member_set
                 and not isinstance(msg, MsgTimeoutNow))
        term = raft.current_term
        # Following another leader heard within its lease (``Config.lease_ticks``),
        # which only a transfer's vote request may break.
        followed = raft.leader_id
        in_lease = (followed not in ("", src) and raft.election_elapsed < raft.cfg.lease_ticks
                    and not (isinstance(msg, MsgVote) and msg.transfer))
        replica.step(msg)
        if stray:
            self.stray += 1
            if raft.current_term > term and in_lease:
                self.disruptions += 1
                self._emit(f"{node.id}'s term rose to {raft.current_term} on a datagram from "
                           f"removed {src} while it followed {followed}")
        checker.observe(node.id, raft)
        if self.options.turn_per_message:
            self._process(node)

    def slow_sync(self, node: SimNode) -> None:
        """After a Ready's fsync: maybe it was slow, and the node was blocked in it."""
        opts = self.options.slow_disk
        if not self.faults or not (opts.slow or opts.stall):
            return
        rng = self._sync_rng
        draw = rng.random()
        if draw < opts.stall:
            ticks, what = rng.randint(*opts.stall_ticks), "stalls"
        elif draw < opts.stall + opts.slow:
            ticks, what = rng.randint(*opts.slow_ticks), "is slow"
        else:
            return
        self.slow_syncs += 1
        node.paused_until = max(node.paused_until, self.now) + ticks
        if node.held is None:
            node.held = []
        self._emit(f"{node.id}'s fsync {what}: blocked until tick {node.paused_until}")

    def _snapshot_outcome(self, msg: MsgSnap, ok: bool) -> None:
        """What the fragment transport tells the sender about a snapshot transfer."""
        ok = ok and self.nodes[msg.dst].up
        sender = self.nodes[msg.src].replica
        self._emit(f"snapshot transfer {msg.src}->{msg.dst} {'done' if ok else 'failed'}")
        if sender is not None:
            sender.node.report_snapshot(msg.dst, ok=ok)
            self.checker.observe(msg.src, sender.node.raft)

    def _process(self, node: SimNode) -> None:
        """One ``Replica.process`` turn; an armed crash may strike inside it."""
        replica = node.replica
        assert replica is not None
        try:
            replica.process(node.outbox, self.now * TICK_MS)
            if replica.wants_turn():  # as raftd.server.Server._process
                replica.process(node.outbox, self.now * TICK_MS)
            if self.options.snapshot_every:
                self._snapshot(node, replica)
        except SimulatedCrash:
            self.crash(node, "at a disk operation, mid-turn")
            return
        raft = replica.node.raft
        self.checker.observe(node.id, raft)
        storage = node.storage
        assert storage is not None
        applied = max(raft.log.applied_index, storage.conf_index())
        if applied:  # before that, it is the config file's (``SimNode.configured``)
            self.checker.check_config(node.id, applied, raft.conf_state(), "its configuration")
        if self._trace is not None:
            self._trace_role(node)
        if not (raft.catching_up or raft.probing):
            node.wiped = node.without_data = False

    def _snapshot(self, node: SimNode, replica: Replica) -> None:
        """``raftd.snapshotter.Snapshotter``'s policy and steps, without its thread and clock."""
        storage = node.storage
        assert storage is not None
        job = node.snapshot_job
        if job is not None:
            if self.now >= job.finish_at:
                node.snapshot_job = None
                file = snapshots.write(node.fs, DATA_DIR, job.meta, job.capture.chunks())
                storage.record_snapshot(job.meta, file,
                                        trailing_entries=self.options.snapshot_trailing)
                self.snapshots += 1
                self._emit(f"{node.id} snapshots at {job.meta.index}/{job.meta.term}; log from "
                           f"{storage.first_index()}")
            return
        raft = replica.node.raft
        applied = raft.log.applied_index
        last = storage.snapshot_meta().index
        if applied - last < self.options.snapshot_every:
            return
        if storage.log_bytes_since(last) < storage.snapshot_size():
            return  # production: at least max(snapshot_min_log_bytes, last snapshot) bytes
        if applied < storage.conf_index():
            return  # production: re-applying after a restart, the configuration is ahead
        meta = SnapshotMeta(index=applied, term=raft.log.term(applied),
                            conf_state=raft.conf_state())
        capture = replica.sm.capture()
        self.checker.check_state(node.id, applied, capture.data, capture.revision,
                                 "snapshot capture")
        self.checker.check_config(node.id, applied, meta.conf_state,
                                  "the configuration of its snapshot")
        finish = self.now + self._clock_rng.randint(*self.options.snapshot_ticks)
        node.snapshot_job = SnapshotJob(meta, capture, finish)

    def start_liveness(self) -> None:
        """Heal everything and stop the faults; from now on the cluster must converge."""
        self.faults = False
        self._settled_at = self.now + QUIET_TICKS
        self._emit("liveness: heal, no loss, restart every node, no more faults")
        self.network.heal()
        # Every CheckQuorum window must see an answer to some heartbeat: the gap between
        # answers is at most a heartbeat interval plus twice the spread of the delays.
        self.network.calm(max_jitter=(ELECTION_TICKS[0] - HEARTBEAT_TICKS - 1) // 2)
        self._blackout = False
        for node in self.nodes.values():
            node.fs.crash_after = None
            node.armed = False
            node.paused_until = 0
            if not node.up and not node.retired:
                self.start(node)

    def converge(self) -> None:
        """Tick until the final configuration converged and stayed quiet, within the bound:
        ``liveness_ticks`` plus what the clients need for the requests they have left (faults
        may have stalled the cluster through the whole safety phase: seed 40135)."""
        start = self.now
        deadline = start + self.options.liveness_ticks + self.workload.backlog_ticks()
        while self.now < deadline:
            self.tick()
            if self._converged():
                self._check_quiet()
                if self._converged():
                    self._check_final()
                    return
        raise Violation(f"no convergence in {deadline - start} ticks\n"
                        + self.status_report())

    def _converged(self) -> bool:
        """The final configuration has a leader among its voters that committed its whole log,
        and every member follows it and applied all of it into the same state."""
        if not self.workload.done() or self.now < self._settled_at:
            return False  # a fault's effect may still land (a stall inside CheckQuorum's window)
        leader = self.leader()
        if leader is None:
            return False
        raft = leader.node.raft
        final = self.checker.config
        if raft.id not in final.voters:
            return False
        if raft.lead_transferee or self.now <= self.network.timeout_now_due:
            return False  # an operator's transfer (asked before the faults stopped) may land
        commit = raft.log.commit_index
        if raft.log.last_index() != commit or len(self.checker.committed) != commit:
            return False  # the last entries (a promotion, say) are not applied everywhere yet
        leader_id, term = raft.id, raft.current_term
        digests = set()
        for member in members(final):
            replica = self.nodes[member].replica
            if replica is None:
                return False
            raft = replica.node.raft
            if raft.log.applied_index != commit or raft.log.commit_index != commit:
                return False
            if raft.leader_id != leader_id or raft.current_term != term:
                return False
            if raft.catching_up or raft.probing:
                return False
            digests.add(replica.sm.digest())
        return len(digests) == 1

    def _check_quiet(self) -> None:
        """Once converged, nothing may move a member's term: removed nodes left running and
        blank nodes never added must not disrupt a healthy cluster. (A follower whose timer
        ran out during a stall just before the faults stopped may still pre-vote: that moves
        no term, and ``converge`` waits until it follows the leader again.)"""
        leader = self.leader()
        assert leader is not None
        leader_id, term = leader.node.raft.id, leader.node.raft.current_term
        for _ in range(QUIET_TICKS):
            self.tick()
            for member in members(self.checker.config):
                replica = self.nodes[member].replica
                assert replica is not None
                raft = replica.node.raft
                if raft.current_term != term:
                    raise Violation(
                        f"after convergence under {leader_id} in term {term}, {member} moved to "
                        f"term {raft.current_term} (leader {raft.leader_id or '-'})\n"
                        + self.status_report())

    def _check_final(self) -> None:
        leader = self.leader()
        assert leader is not None
        raft = leader.node.raft
        final = self.checker.config
        conf = raft.conf_state()
        if (conf.voters, conf.learners) != (final.voters, final.learners):
            raise Violation(f"the leader's configuration {conf} is not the committed log's {final}")
        if len(self.checker.committed) != raft.log.commit_index:
            raise Violation(
                f"{len(self.checker.committed)} entries were applied somewhere but the leader "
                f"committed {raft.log.commit_index}"
            )
        states = {}
        for member in members(final):
            replica = self.nodes[member].replica
            assert replica is not None
            states[member] = (replica.sm.data, replica.sm.revision)
        self.checker.check_converged(states)
        for client in self.workload.clients:
            for key, value in client.acked.items():
                found, got, _ = leader.sm.get(key)
                if not found or got != value:
                    raise Violation(f"acknowledged write {key}={value!r} lost: found {found}, {got!r}")
        logs = {}
        settled = {}
        for node in self.nodes.values():
            if node.storage is None or node.replica is None:
                continue  # stopped by the operator
            storage = node.storage
            logs[node.id] = storage.entries(storage.first_index(), storage.last_index() + 1)
            settled[node.id] = (storage.last_index() if node.id in self.checker.member_set
                                else node.replica.node.raft.log.commit_index)
        self.checker.check_logs(logs, settled)

    def leader(self) -> Replica | None:
        """The up leader of the highest term, if any."""
        best: Replica | None = None
        for node in self.nodes.values():
            r = node.replica
            if (
                r is not None
                and r.node.raft.role is StateRole.LEADER
                and (best is None or r.node.raft.current_term > best.node.raft.current_term)
            ):
                best = r
        return best

    def status_report(self) -> str:
        final = self.checker.config
        lines = [(f"  committed configuration: voters {','.join(final.voters)}; learners "
                  f"{','.join(final.learners) or '-'}")]
        for node in self.nodes.values():
            if node.replica is None:
                lines.append(f"  {node.id}: {'stopped' if node.retired else 'down'}")
                continue
            s = node.replica.node.status()
            view = ""
            if (s.voters, s.learners) != (final.voters, final.learners):
                view = f"; sees voters {','.join(s.voters)} learners {','.join(s.learners) or '-'}"
            lines.append(
                f"  {node.id}: {s.role.value} term {s.term} leader {s.leader_id or '-'} "
                f"commit {s.commit_index} applied {s.applied_index} last {s.last_index}/"
                f"{s.last_term} voted {s.voted_for or '-'}"
                + (" catching-up" if s.catching_up else "") + (" probing" if s.probing else "")
                + view + (f"; dropped {node.dropped} (not a member)" if node.dropped else "")
            )
        pending = self.workload.outstanding()
        lines.append(f"  requests answered {self.workload.answered}/"
                     f"{self.workload.options.requests}; outstanding: {pending[:8]}")
        return "\n".join(lines)

    # -- node lifecycle ----------------------------------------------------------------------
    def start(self, node: SimNode) -> None:
        """Start (or restart) ``node`` from whatever its disk holds: the production path."""
        storage = DiskStorage(
            node.fs, DATA_DIR, conf_state=ConfState(voters=node.configured),
            segment_bytes=self.options.segment_bytes,
        )
        config = Config(
            id=node.id,
            election_ticks=ELECTION_TICKS,
            heartbeat_ticks=HEARTBEAT_TICKS,
            rng=random.Random(self._node_rng.getrandbits(64)),
            max_msg_bytes=self._batch_bytes,
            promote_lag_entries=self.options.membership.promote_lag_entries,
        )
        raw = RawNode(config, storage)
        state_machine = DictStateMachine()
        snapshot = storage.snapshot()
        if snapshot.meta.index:  # as raftd.server does before building the Replica
            state_machine.restore(snapshot.data)
        node.storage = storage
        node.replica = Replica(
            raw,
            _Storage(self, node, storage),
            state_machine,
            max_entry_bytes=self._batch_bytes - ENTRY_OVERHEAD_BYTES,  # as raftd.server
            request_timeout_ticks=self.options.request_timeout_ticks,
            on_apply=partial(self.checker.on_apply if self._trace is None else self._on_apply,
                             node.id),
        )
        node.seen = None
        self.checker.on_restart(node.id, storage, raw.raft, state_machine)
        if self.now:
            hs = storage.initial_state()[0]
            self._emit(f"{node.id} restarts: term {raw.raft.current_term}, snapshot at "
                       f"{snapshot.meta.index}, log {storage.first_index()}.."
                       f"{storage.last_index()}" + (" (blank)" if hs is None else ""))

    def _on_apply(self, node_id: str, entry: Entry) -> None:
        """The checker's observer, tracing each configuration the committed log moves to."""
        before = self.checker.conf_changes
        self.checker.on_apply(node_id, entry)
        if entry.type is EntryType.CONF_CHANGE and self.checker.conf_changes != before:
            conf = self.checker.config
            self._emit(f"configuration at {entry.index}: voters {','.join(conf.voters)}; "
                       f"learners {','.join(conf.learners) or '-'}")

    def crash(self, node: SimNode, how: str = "") -> None:
        """Power loss: the process dies, unsynced bytes are lost, the last record may tear."""
        self.crashes += 1
        self.checker.on_crash(node.id, node.storage)
        node.fs.crash(self._disk_rng)
        node.replica = None
        node.storage = None
        node.armed = False
        node.paused_until = 0
        node.backlog = []
        node.held = None  # what it did after the fsync never left it
        node.snapshot_job = None
        node.restart_at = self.now + self._crash_rng.randint(*self.options.down_ticks)
        self._emit(f"{node.id} crashes{' ' + how if how else ''}")

    def blackout(self) -> None:
        """The whole cluster loses power at some instant of the next tick: every node dies at
        one of its next few disk operations, or at the end of that tick."""
        self._emit("the whole cluster loses power during the next tick")
        for node in self.nodes.values():
            if node.up:
                node.fs.crash_after = self._crash_rng.randint(0, 3)
                node.armed = True
        self._blackout = True

    def arm_crash(self, node: SimNode) -> None:
        """Crash ``node`` at one of its next disk operations, in the middle of a turn."""
        node.fs.crash_after = self._crash_rng.randint(0, ARMED_CRASH_MAX_OPS)
        node.armed = True
        self._emit(f"{node.id} will crash at its disk operation +{node.fs.crash_after}")

    def wipe(self, node: SimNode) -> None:
        """The disk is lost; the node comes back blank under its old identity."""
        if node.up:
            self.crash(node)
        self.wipes += 1
        node.fs = SimFileSystem()
        node.wiped = node.without_data = True
        self.checker.on_wipe(node.id)
        self._emit(f"{node.id} loses its disk")

    # -- faults ------------------------------------------------------------------------------
    def _roll_faults(self) -> None:
        opts = self.options
        rng = self._crash_rng
        now = self.now
        if self._blackout:
            # The power went during this tick: whoever did not die at a disk write dies now.
            self._blackout = False
            for node in self.nodes.values():
                if node.up:
                    self.crash(node, "with the cluster")
        elif opts.cluster_crash_rate and rng.random() < opts.cluster_crash_rate:
            self.blackout()
        for node in self.nodes.values():
            if node.retired:
                continue
            if node.up:
                if node.armed or not opts.crash_rate or rng.random() >= opts.crash_rate:
                    pass
                elif rng.random() < opts.wipe_rate and self._may_wipe(node):
                    self.wipe(node)
                    continue
                elif rng.random() < opts.armed_crash:
                    self.arm_crash(node)
                else:
                    self.crash(node)
                    continue
                clock = self._clock_rng
                if opts.pause_rate and node.paused_until <= now and clock.random() < opts.pause_rate:
                    node.paused_until = now + clock.randint(*opts.pause_ticks)
                    self._emit(f"{node.id} stalls until tick {node.paused_until}")
            elif now >= node.restart_at:
                self.start(node)
        if opts.partition_modes:
            if self._partition_until and now >= self._partition_until:
                self.network.heal()
                self._partition_until = 0
                self._next_partition = now + self._partition_rng.randint(*opts.partition_gap)
                self._emit("partition heals")
            elif not self._partition_until and now >= self._next_partition:
                self._partition()
        if opts.transfer_rate and self._operator_rng.random() < opts.transfer_rate:
            self._operator()

    def _operator(self) -> None:
        """An operator asks the leader to hand over (``raftctl transfer-leader [ADDRESS]``)."""
        leader = self.leader()
        if leader is None:
            return
        rng = self._operator_rng
        others = [i for i in leader.node.raft.members if i != leader.node.raft.id]
        if not others:
            return
        target = rng.choice(others) if rng.random() < 0.5 else None
        self._operator_requests += 1
        self._emit(f"operator: transfer leadership from {leader.node.raft.id} to "
                   f"{target or 'the most caught-up voter'}")
        node = self.nodes[leader.node.raft.id]
        leader.submit_transfer(OperatorToken(self._operator_requests), target, node.outbox)

    def _may_wipe(self, node: SimNode) -> bool:
        """Never lose a majority's disks: no other member may be wiped and not caught up yet,
        and a voter's disk (or a learner's that may be promoted) is lost only while at least
        three voters hold theirs (with two, the survivor alone cannot elect anyone, nor commit
        the removal of the lost one), and not while the removal of a voter may commit (it
        could leave two voters, one blank). Until a majority of the voters applied the last
        change, both its configurations must allow it, and their voters count as members
        (``voter_sets``; seed 2946: the removed leader lost its disk while the one voter left
        still counted it)."""
        checker = self.checker
        conf = checker.config
        # A learner whose promotion may commit counts as the voter it may become any moment.
        promoted = node.id in conf.learners and (
            node.id in conf.auto_promote or self.operator.promoting(node.id))
        voter_sets = checker.voter_sets()
        for voters in voter_sets:
            counted = node.id in voters or promoted
            if counted and (len(voters) + promoted < 3 or self.operator.removing_a_voter()):
                return False
        # Seeds 28751, 29310: a node just removed lost its disk, then a voter did; the voters
        # still under the previous configuration counted both.
        counting = checker.member_set.union(*voter_sets)
        return self.may_blank(node) and not any(
            n.without_data for n in self.nodes.values() if n is not node and n.id in counting)

    def may_blank(self, node: SimNode) -> bool:
        """Whether ``node`` may restart blank without two blank initial voters at once. A blank
        node that its config lists as a voter probes the others it lists and bootstraps a new
        cluster when they all answer blank (``raftd.core.bootstrap``): so never while another
        of them is blank, removed nodes included (they stay blank, as nobody replicates to
        them), and never for a node whose config names only itself (nobody to probe)."""
        if node.id not in node.configured:
            return True  # a node added later: blank, it only waits to be reached
        if node.configured == (node.id,):
            return False
        return not any(n.wiped for n in self.nodes.values()
                       if n is not node and n.id in node.configured)

    def _partition(self) -> None:
        rng = self._partition_rng
        opts = self.options
        ids = self.nodes_ids
        if len(ids) == 1:
            return
        mode = rng.choice(opts.partition_modes)
        if mode == "isolate":
            side = [rng.choice(ids)]
        elif mode == "halves":
            shuffled = list(ids)
            rng.shuffle(shuffled)
            side = shuffled[: rng.randint(1, len(shuffled) - 1)]
        else:
            side = [rng.choice(ids)]
        others = [i for i in ids if i not in side]
        if mode == "link":
            others = [rng.choice(others)]
        forward = [(a, b) for a in side for b in others]
        backward = [(b, a) for a, b in forward]
        if rng.random() < opts.partition_symmetric:
            links, arrow = forward + backward, "|"
        elif rng.random() < 0.5:
            links, arrow = forward, "->x"
        else:
            links, arrow = backward, "x<-"
        self.network.cut(links)
        self._partition_until = self.now + rng.randint(*opts.partition_ticks)
        self._emit(f"partition ({mode}): {','.join(side)} {arrow} {','.join(others)}")

    # -- tracing -----------------------------------------------------------------------------
    def _emit(self, line: str) -> None:
        if self._trace is not None:
            self._trace(f"{self.now:6d} {line}")

    def _trace_role(self, node: SimNode) -> None:
        assert node.replica is not None
        raft = node.replica.node.raft
        seen = (raft.role, raft.current_term, raft.leader_id)
        if seen != node.seen:
            node.seen = seen
            flags = " (catching up)" if raft.catching_up else " (probing)" if raft.probing else ""
            self._emit(f"{node.id} is {raft.role.value} in term {raft.current_term}, leader "
                       f"{raft.leader_id or '-'}, commit {raft.log.commit_index}{flags}")


def without_membership(options: Options) -> Options:
    """A seed's scenario as it was before membership changes existed (they are drawn last)."""
    return replace(options, membership=NO_MEMBERSHIP)


def run_checked(seed: int, membership: bool = True) -> tuple[int, str | None]:
    """Run one seed; (seed, None) or (seed, the failure's message). For process pools."""
    try:
        Simulator(seed, adjust=None if membership else without_membership).run()
    except AssertionError as e:
        return seed, str(e)
    return seed, None


def trace_digest(seed: int, adjust: Callable[[Options], Options] | None = None) -> str:
    """SHA-256 of a seed's whole verbose trace: equal digests mean identical runs."""
    h = hashlib.sha256()
    Simulator(seed, trace=lambda line: h.update(line.encode() + b"\n"), adjust=adjust).run()
    return h.hexdigest()



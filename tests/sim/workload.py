"""The simulated clients: sessions of writes and linearizable reads, retried like raftctl's.

Theory of operation. Each client has a ``client_id`` and a ``seq`` counter from 1. A write
sets either its own unique key ``c{client}-{seq}`` or one of a few shared keys (sometimes a
delete), always with a value naming (client, seq), so a read answer identifies the write it
saw. Like ``raftctl.client``: seq 1 travels alone (the server opens a session only on seq 1),
later writes are pipelined up to ``pipeline`` deep, every attempt of one write carries the same
seq and ``first_unacked_seq`` = the client's smallest unacknowledged seq. An attempt ends with
an answer or, if the node died with the request, the client's own attempt timeout; a
``redirect`` is followed, and a ``retryable`` error (``not_leader``, ``no_leader``, ``timeout``,
``transferring``...) is retried on another node after a short backoff. Any other error is a
failure: nothing in the simulation justifies it.

Requests enter the replicas through the production client codec (a msgpack map parsed by
``raftd.wire.client.parse_request``, then packed as ``raftd.server`` does), and answers are
round-tripped through msgpack too, so the simulation sees what a TCP client would see.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

from raftd.statemachine import DELETE, SET, encode_command
from raftd.wire.client import AppendRequest, GetRequest, parse_request
from tests.sim.checker import SafetyChecker, Violation

MAX_READS_IN_FLIGHT = 2
REQUEST_TICKS = 30
"""What ``backlog_ticks`` allows one request once issued, without faults: a few round trips."""


@dataclass(frozen=True, slots=True)
class WorkloadOptions:
    clients: int
    requests: int
    """Total requests (writes and reads) over all clients: the run is bounded."""
    read_ratio: float
    shared_keys: int
    delete_ratio: float
    """Share of shared-key writes that are deletes."""
    pipeline: int
    """Writes a client keeps in flight (seq 1 always alone)."""
    issue_rate: float
    """Per client and tick, the chance to start a new request while below ``pipeline``."""
    attempt_timeout: int
    """Ticks a client waits for an answer before trying another node (the node may be dead)."""


class Cluster(Protocol):
    """What the workload needs from the simulator."""

    @property
    def nodes_ids(self) -> tuple[str, ...]: ...

    def is_up(self, node: str) -> bool: ...

    def submit_write(self, node: str, token: Hashable, packed: bytes) -> None: ...

    def submit_read(self, node: str, token: Hashable, query: GetRequest) -> None: ...

    def committed_count(self) -> int: ...


@dataclass(slots=True)
class Request:
    client: int
    number: int
    """Per client, in issue order; with the attempt it makes the token unique."""
    seq: int
    """0 for reads."""
    key: str
    op: int
    value: Any
    unique: bool = False
    """A write of the client's own key ``c{client}-{seq}``: it must survive to the end."""
    attempt: int = 0
    node: str | None = None
    """Where the current attempt went; None while waiting to (re)send."""
    node_before: str | None = None
    """Where the previous attempt went: a retry prefers another node."""
    send_at: int = 0
    deadline: int = 0
    submitted_at: int = 0
    """Committed entries known when the current attempt was submitted (for reads)."""

    @property
    def is_read(self) -> bool:
        return self.seq == 0

    def token(self) -> tuple[int, int, int]:
        return (self.client, self.number, self.attempt)


@dataclass(slots=True)
class Client:
    index: int
    client_id: str
    next_seq: int = 1
    next_number: int = 1
    unacked: dict[int, Request] = field(default_factory=dict)
    """Writes awaiting their answer, by seq, ascending (dict insertion order)."""
    reads: list[Request] = field(default_factory=list)
    acked: dict[str, Any] = field(default_factory=dict)
    """Unique keys whose write was acknowledged, with their value."""
    leader_hint: str | None = None


class Workload:
    def __init__(
        self,
        options: WorkloadOptions,
        rng: random.Random,
        cluster: Cluster,
        checker: SafetyChecker,
        trace: Callable[[str], None] | None = None,
    ) -> None:
        self.options = options
        self._rng = rng
        self._cluster = cluster
        self._checker = checker
        self._trace = trace
        self.clients = [Client(i, f"c{i}") for i in range(1, options.clients + 1)]
        self.issued = 0
        self.answered = 0
        self.in_flight: dict[Hashable, Request] = {}
        """Current attempt of every request sent to a node, by token."""
        self.open: dict[tuple[int, int], Request] = {}
        """Every request not yet answered, in issue order, by (client, number)."""

    # -- status ------------------------------------------------------------------------------
    def done(self) -> bool:
        return self.issued == self.options.requests and not self.open

    def backlog_ticks(self) -> int:
        """Ticks the clients need, without faults, for the requests not yet answered: each
        client issues at ``issue_rate`` per tick, one request after another."""
        opts = self.options
        per_client = -(-(opts.requests - self.answered) // opts.clients)
        return per_client * (math.ceil(1 / opts.issue_rate) + REQUEST_TICKS)

    def outstanding(self) -> list[str]:
        return [
            f"c{r.client}#{r.number}" + (f" seq {r.seq}" if r.seq else " read")
            + f" on {r.node or '-'} attempt {r.attempt}"
            for r in self.open.values()
        ]

    # -- one tick ----------------------------------------------------------------------------
    def tick(self, now: int) -> None:
        opts = self.options
        rng = self._rng
        for client in self.clients:
            if self.issued < opts.requests and rng.random() < opts.issue_rate:
                self._maybe_issue(client, now)
        for req in self.open.values():
            if req.node is not None:
                if now >= req.deadline:
                    self._give_up_attempt(req, now, "attempt timed out")
            elif now >= req.send_at:
                self._send(self.clients[req.client - 1], req, now)

    def _maybe_issue(self, client: Client, now: int) -> None:
        opts = self.options
        rng = self._rng
        if rng.random() < opts.read_ratio:
            if len(client.reads) >= MAX_READS_IN_FLIGHT:
                return
            req = self._new_read(client)
            client.reads.append(req)
        else:
            if len(client.unacked) >= opts.pipeline or 1 in client.unacked:
                return
            seq = client.next_seq
            client.next_seq += 1
            value = f"c{client.index}-{seq}"
            if opts.shared_keys and rng.random() < 0.3:
                key = f"s{rng.randrange(opts.shared_keys)}"
                op = DELETE if rng.random() < opts.delete_ratio else SET
            else:
                key, op = value, SET
            req = Request(client.index, self._number(client), seq, key, op,
                          value if op == SET else None, unique=key == value)
            client.unacked[seq] = req
        self.issued += 1
        req.send_at = now
        self.open[req.client, req.number] = req

    def _new_read(self, client: Client) -> Request:
        rng = self._rng
        choice = rng.random()
        if client.acked and choice < 0.5:
            key = rng.choice(sorted(client.acked))
        elif self.options.shared_keys and choice < 0.8:
            key = f"s{rng.randrange(self.options.shared_keys)}"
        else:
            key = f"c{client.index}-{rng.randint(1, client.next_seq)}"
        return Request(client.index, self._number(client), 0, key, 0, None)

    @staticmethod
    def _number(client: Client) -> int:
        number = client.next_number
        client.next_number += 1
        return number

    def _send(self, client: Client, req: Request, now: int) -> None:
        cluster = self._cluster
        node = client.leader_hint
        if node is None:
            others = [n for n in cluster.nodes_ids if n != req.node_before] or cluster.nodes_ids
            node = self._rng.choice(others)
        req.attempt += 1
        if not cluster.is_up(node):
            # Connection refused: try another node on the next tick.
            req.node_before = node
            if client.leader_hint == node:
                client.leader_hint = None
            req.send_at = now + 1
            return
        req.node = node
        req.deadline = now + self.options.attempt_timeout
        req.submitted_at = cluster.committed_count()
        token = req.token()
        self.in_flight[token] = req
        if self._trace is not None:
            what = f"get {req.key}" if req.is_read else (
                f"{'set' if req.op == SET else 'delete'} {req.key} seq {req.seq}")
            self._trace(f"  client c{client.index} -> {node}: {what} (attempt {req.attempt})")
        if req.is_read:
            query = parse_request(wire({"type": "get", "key": req.key, "id": req.number}))
            assert isinstance(query, GetRequest)
            cluster.submit_read(node, token, query)
            return
        data: dict[str, Any] = {
            "action": "change" if req.op == SET else "delete", "key": req.key,
            "client_id": client.client_id, "seq": req.seq,
            "first_unacked_seq": next(iter(client.unacked)),
        }
        if req.op == SET:
            data["value"] = req.value
        parsed = parse_request(wire({"type": "append", "data": data, "id": req.number}))
        assert isinstance(parsed, AppendRequest)
        packed = encode_command(  # as raftd.server.Server._on_request packs it
            SET if parsed.action == "change" else DELETE,
            parsed.key,
            parsed.value,
            client_id=parsed.client_id,
            seq=parsed.seq,
            first_unacked_seq=parsed.first_unacked_seq,
            if_revision=parsed.if_revision,
            if_absent=parsed.if_absent,
        )
        cluster.submit_write(node, token, packed)

    def _give_up_attempt(self, req: Request, now: int, why: str) -> None:
        self.in_flight.pop(req.token(), None)
        if self._trace is not None:
            self._trace(f"  client c{req.client} #{req.number}: {why} on {req.node}")
        client = self.clients[req.client - 1]
        if client.leader_hint == req.node:
            client.leader_hint = None
        req.node_before, req.node = req.node, None
        req.send_at = now + self._rng.randint(1, 10)

    # -- answers -----------------------------------------------------------------------------
    def on_response(self, token: Hashable, response: dict[str, Any], now: int) -> None:
        response = wire(response)
        req = self.in_flight.pop(token, None)
        kind = response.get("type")
        if req is None:
            return  # an abandoned attempt's late answer; the current attempt decides
        client = self.clients[req.client - 1]
        if self._trace is not None:
            self._trace(f"  {req.node} -> client c{req.client} #{req.number}: {_short(response)}")
        if kind == "result":
            if req.is_read:
                self._checker.check_read(req.key, req.submitted_at, response)
                client.reads.remove(req)
            else:
                self._checker.check_write(client.client_id, req.seq, response)
                del client.unacked[req.seq]
                client.leader_hint = req.node
                if req.unique:
                    client.acked[req.key] = req.value
            self.answered += 1
            del self.open[req.client, req.number]
            return
        if kind == "redirect":
            self._give_up_attempt(req, now, "redirected")
            if response["leader"] is not None:
                client.leader_hint = response["leader"]
                req.send_at = now + 1
            return
        if kind == "error" and response["retryable"]:
            self._give_up_attempt(req, now, response["code"])
            return
        raise Violation(f"client c{req.client} #{req.number} got an unexpected answer {response}")


def wire(obj: dict[str, Any]) -> dict[str, Any]:
    """What the other end of a TCP connection decodes (msgpack round trip)."""
    decoded: dict[str, Any] = msgpack.unpackb(msgpack.packb(obj, use_bin_type=True), raw=False)
    return decoded


def _short(response: dict[str, Any]) -> str:
    return " ".join(f"{k}={v}" for k, v in response.items() if k not in ("type", "message"))

"""A lean client of the rafty wire protocol for load generation: one connection per client.

Why not ``raftctl.AsyncClient``: measured on this project's 2-core machine it spends about
27 µs of CPU per write at 64 clients (a StreamReader, an ``asyncio.timeout`` and a retry
bookkeeping object per request), and the load generator shares the cores with the cluster it
measures. This client keeps only what a benchmark needs: pipelined ``id``s on an
``asyncio.Protocol``, a msgpack ``Unpacker`` fed directly, redirects, retries of retryable
errors with the same ``id`` and ``seq``, and exactly-once sessions (``client_id``, ``seq``,
``first_unacked_seq``; seq 1 travels alone, as the server requires to open a session).

Timeouts cost nothing per request: a watchdog (``Link.stale``) closes a connection whose
oldest request has waited longer than the timeout, which fails every request on it over to a
retry, so a frozen (SIGSTOPped) leader cannot hang a run that must stop by itself.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import ssl
import uuid
from dataclasses import dataclass
from typing import Any

import msgpack

from raftctl.client import connect_problem
from raftd.wire.client import RETRYABLE_CODES, ErrorCode, parse_address
from raftd.wire.stream import frame_encoder

MAX_RESPONSE_BYTES = 16 << 20
_BACKOFF_FIRST = 0.002
_BACKOFF_MAX = 0.2

Response = dict[str, Any]


class LinkLost(Exception):
    """The connection closed (or was closed by the watchdog) with the request outstanding."""


def _failure(exc: Exception) -> str:
    """Why a request's connection failed, in a few words."""
    if isinstance(exc, LinkLost):
        return "connection lost"
    if isinstance(exc, TimeoutError):
        return "connecting timed out"
    return connect_problem(exc)  # TLS problems included


class Link(asyncio.Protocol):
    """One TCP connection carrying pipelined requests, answered by ``id`` in any order."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.pending: dict[int, tuple[asyncio.Future[Response], float]] = {}
        self._unpacker = msgpack.Unpacker(raw=False, max_buffer_size=MAX_RESPONSE_BYTES)

    @classmethod
    async def open(cls, address: str, timeout: float, tls: ssl.SSLContext | None = None) -> Link:
        host, port = parse_address(address)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            _, link = await loop.create_connection(
                lambda: cls(address), host, port, ssl=tls, server_hostname=host if tls else None)
        return link

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self._unpacker.feed(data)
        for obj in self._unpacker:
            if type(obj) is not dict:
                continue
            rid = obj.get("id")
            if type(rid) is int:
                entry = self.pending.pop(rid, None)
                if entry is not None and not entry[0].done():
                    entry[0].set_result(obj)
            elif obj.get("type") == "error":
                self._refused(obj)
                return

    def _refused(self, answer: Response) -> None:
        """Every request carries an ``id``: an error without one means that the server could
        not parse the stream (a frame over its limit) and is closing it. It answers every
        request pending here, since a benchmark's requests are alike: resent, each would be
        refused the same way (and retrying ``too_large`` would never end)."""
        for future in self._take_pending():
            future.set_result(answer)
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self._take_pending():
            future.set_exception(LinkLost(f"{self.address}: connection lost"))

    def _take_pending(self) -> list[asyncio.Future[Response]]:
        """Close the link to new requests; returns the requests still waiting on it."""
        self.closed = True
        pending, self.pending = self.pending, {}
        return [future for future, _ in pending.values() if not future.done()]

    def send(self, rid: int, frame: bytes) -> asyncio.Future[Response]:
        future: asyncio.Future[Response] = self.loop.create_future()
        if self.closed or self.transport is None:
            future.set_exception(LinkLost(f"{self.address}: connection closed"))
            return future
        self.pending[rid] = (future, self.loop.time())
        self.transport.write(frame)
        return future

    def stale(self, now: float, timeout: float) -> bool:
        """Whether some request has waited longer than ``timeout`` (seconds)."""
        return any(now - sent > timeout for _, sent in self.pending.values())

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()


@dataclass(slots=True)
class Tally:
    """What went wrong on the way, per client: retried attempts and requests that failed."""

    retries: int = 0
    redirects: int = 0
    errors: int = 0


class _Session:
    def __init__(self) -> None:
        self.client_id = uuid.uuid4().hex
        self.next_seq = 1
        self.unacked: dict[int, None] = {}  # insertion order is seq order
        self.opened = asyncio.Event()

    def begin(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.unacked[seq] = None
        return seq

    def end(self, seq: int) -> None:
        del self.unacked[seq]
        if seq == 1:
            self.opened.set()


class BenchClient:
    """One logical client: its own connection, session and retry policy.

    ``address`` is where requests go first (the leader for writes, any member for reads);
    redirects move it, connection failures rotate through ``endpoints``.
    """

    def __init__(self, address: str, endpoints: tuple[str, ...], timeout: float, *,
                 token: str | None = None, tls: ssl.SSLContext | None = None) -> None:
        """``token`` and ``tls``: for nodes that require them (as ``AsyncClient``'s)."""
        self.address = address
        self.endpoints = endpoints
        self.timeout = timeout
        self.token = token
        self.tls = tls
        self.link: Link | None = None
        self.tally = Tally()
        self._ids = itertools.count(1)
        self._session = _Session()
        self._connecting: asyncio.Lock | None = None
        self._encode = frame_encoder()

    async def write(self, key: str, value: Any) -> Response:
        session = self._session
        seq = session.begin()
        try:
            if seq != 1 and not session.opened.is_set():
                await session.opened.wait()
            data = {"action": "change", "key": key, "value": value,
                    "client_id": session.client_id, "seq": seq,
                    "first_unacked_seq": next(iter(session.unacked))}
            response = await self._call({"type": "append", "data": data}, follow=True)
        finally:
            session.end(seq)
        if response.get("code") == ErrorCode.SESSION_EXPIRED.value and self._session is session:
            self._session = _Session()  # the server forgot us: the next write reopens
        return response

    async def read(self, key: str, consistency: str, *, follow: bool) -> Response:
        """``follow``: go where a redirect points; reads spread over members do not."""
        return await self._call({"type": "get", "key": key, "consistency": consistency},
                                follow=follow)

    async def request(self, body: dict[str, Any]) -> Response:
        """Any other request (e.g. a session-less write during an election benchmark)."""
        return await self._call(body, follow=True)

    async def _call(self, body: dict[str, Any], *, follow: bool) -> Response:
        """Send until an answer that is final: a result, or an error not worth retrying.

        Gives up after ten times the timeout (a run must end), with the last retryable error
        the server sent, or a ``timeout`` error if it sent none.
        """
        rid = next(self._ids)
        body["id"] = rid
        if self.token is not None:
            body["token"] = self.token
        frame = self._encode(body)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 10 * self.timeout
        backoff = _BACKOFF_FIRST
        last: Response | None = None  # the latest retryable answer: why we give up, if we do
        tried, failed = self.address, ""  # the latest attempt's node, and why it failed
        while True:
            try:
                link = self.link
                if link is None or link.closed:  # not awaited per request: the usual case
                    link = await self._link()
                response = await link.send(rid, frame)
            except (OSError, LinkLost, TimeoutError) as exc:
                last = None
                tried, failed = self.address, f": {_failure(exc)}"
                self._rotate()
            else:
                tried, failed = self.address, ""
                kind = response.get("type")
                if kind == "result":
                    return response
                leader = response.get("leader")
                if follow and type(leader) is str and leader != self.address:
                    self.tally.redirects += 1
                    self._move(leader)
                    continue
                code = response.get("code")
                if kind == "error" and code not in RETRYABLE_CODES:
                    self.tally.errors += 1
                    return response
                last = response if kind == "error" else None  # a redirect has no code
            if loop.time() >= give_up:
                self.tally.errors += 1
                return last or {"type": "error", "code": ErrorCode.TIMEOUT.value,
                                "message": f"no answer after {10 * self.timeout:g}s of "
                                           f"retries (the last to {tried}{failed})"}
            self.tally.retries += 1
            await asyncio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(2 * backoff, _BACKOFF_MAX)

    async def _link(self) -> Link:
        link = self.link
        if link is not None and not link.closed:
            return link
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        async with self._connecting:  # pipelined requests share one connect
            if self.link is None or self.link.closed:
                self.link = await Link.open(self.address, self.timeout, self.tls)
            return self.link

    def _move(self, address: str) -> None:
        if self.link is not None:
            self.link.close()
            self.link = None
        self.address = address

    def _rotate(self) -> None:
        """The node failed us: try the next endpoint (a redirect will lead back if needed)."""
        nxt = self.endpoints[(self.endpoints.index(self.address) + 1) % len(self.endpoints)] \
            if self.address in self.endpoints else self.endpoints[0]
        self._move(nxt)

    def check(self, now: float) -> None:
        """Watchdog: close the connection if a request on it waited past the timeout."""
        if self.link is not None and self.link.stale(now, self.timeout):
            self.link.close()

    def close(self) -> None:
        if self.link is not None:
            self.link.close()

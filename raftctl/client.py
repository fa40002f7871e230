"""Client library: ``AsyncClient`` (asyncio) and ``Client`` (blocking) for a rafty cluster.

Theory of operation:

- One persistent TCP connection per node spoken to, in practice to the cached leader. Every
  request carries an integer ``id``, so many requests are in flight on one connection; a reader
  task per connection resolves the waiting futures by ``id`` (responses may come out of order).
- A request has one deadline (``timeout``). Until it passes the client follows ``redirect``s,
  and after a connection failure or a retryable error it tries the next endpoint, sleeping a
  short, growing, jittered backoff. At the deadline it raises ``ClusterUnavailable`` (no node
  was ever reached), ``NoLeader`` (nodes answered, but none knew a leader) or ``RequestTimeout``.
- One attempt waits at most half the timeout, so a leader that vanished without closing its
  sockets (power loss, partition) does not eat the whole deadline. A connection that received
  nothing at all during such a wait is presumed dead and closed.
- Exactly-once writes: a session is a random ``client_id`` whose writes are numbered by a
  ``seq`` counting from 1; every attempt of one write carries the same ``seq`` (and the same
  ``id``), so the server's session table answers a retry from its cache instead of applying it
  twice. ``first_unacked_seq`` (the smallest seq still awaiting its reply) lets the server forget
  older replies. The server opens a session on seq 1 and refuses other seqs of an unknown
  client (``session_expired``), so seq 1 travels alone: later writes wait for its answer. A
  write refused as ``session_expired`` on its only attempt was not applied: it is resent as seq 1
  of a fresh session. After more attempts it may have been, so it raises ``SessionExpired``
  (later writes use a fresh session). Reads are simply retried.
- ``Client`` runs an ``AsyncClient`` on a private event loop in a daemon thread, so it works in
  plain scripts, inside programs that already run an event loop, and from several threads.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import threading
import uuid
import weakref
from collections.abc import Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

from raftctl.errors import (
    ERRORS_BY_CODE,
    BadRequest,
    ClusterUnavailable,
    ConditionFailed,
    InvalidEndpoint,
    NoLeader,
    RaftctlError,
    RequestTimeout,
    ServerError,
    SessionExpired,
)
from raftd.wire.client import ErrorCode, parse_address
from raftd.wire.errors import DecodeError
from raftd.wire.stream import StreamDecoder, encode_frame

__all__ = ["AsyncClient", "Client", "Page", "parse_endpoints"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
"""Largest response accepted; a whole-state ``get`` can be big."""

_READ_CHUNK = 256 * 1024
_BACKOFF_FIRST = 0.01
_BACKOFF_MAX = 0.5
_MIN_ATTEMPT = 0.2
_CODES = frozenset(code.value for code in ErrorCode)

Response = dict[str, Any]
T = TypeVar("T")


class Page(NamedTuple):
    """One page of ``scan``: ``items`` are ``(key, value, revision)``; ``more``: not the end."""

    items: list[tuple[str, Any, int]]
    more: bool


def parse_endpoints(endpoints: str | Iterable[str]) -> list[str]:
    """``"h:p,h:p"`` or a list of ``"h:p"`` (items may hold commas too) -> unique endpoints."""
    parts = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    result: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise InvalidEndpoint(f"an endpoint must be a 'host:port' str, not {part!r}")
        for item in part.split(","):
            item = item.strip()
            if not item:
                continue
            try:
                parse_address(item)
            except ValueError as exc:
                raise InvalidEndpoint(f"invalid endpoint {item!r}: {exc}") from None
            if item not in result:
                result.append(item)
    if not result:
        raise InvalidEndpoint("no endpoint given")
    return result


class _ConnectFailed(Exception):
    """The endpoint could not be reached."""


class _ConnectionLost(Exception):
    """The connection broke (or was closed) while a request was outstanding."""


class _Connection:
    """One TCP connection: pipelined requests, responses dispatched by ``id``."""

    def __init__(
        self,
        endpoint: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        max_frame_bytes: int,
    ) -> None:
        self.endpoint = endpoint
        self.closed = False
        self.close_reason = ""
        self.received_at = 0.0  # loop time of the last bytes read: proof of life
        self._loop = asyncio.get_running_loop()
        self._writer = writer
        # id -> (future, frame size); a future resolves to None when the connection is lost
        # (a result, not an exception: its waiter may be gone, and nobody would retrieve it).
        self._pending: dict[int, tuple[asyncio.Future[Response | None], int]] = {}
        self._reader = self._loop.create_task(self._read_loop(reader, max_frame_bytes))

    async def request(self, rid: int, frame: bytes, timeout: float) -> Response:
        """Send ``frame`` and await the response with ``id == rid``.

        Raises ``_ConnectionLost``, or ``TimeoutError`` after ``timeout`` seconds.
        """
        if self._writer.transport.is_closing():
            self.close("connection lost")  # seen before the reader noticed
        if self.closed:
            raise _ConnectionLost(f"{self.endpoint}: {self.close_reason}")
        if timeout <= 0:
            raise TimeoutError
        future: asyncio.Future[Response | None] = self._loop.create_future()
        self._pending[rid] = (future, len(frame))
        started = self._loop.time()
        try:
            async with asyncio.timeout(timeout):
                try:
                    self._writer.write(frame)
                    await self._writer.drain()
                except OSError as exc:
                    self.close(f"send failed: {exc}")
                response = await future
                if response is None:
                    raise _ConnectionLost(f"{self.endpoint}: {self.close_reason}")
                return response
        except TimeoutError:
            if self.received_at < started:
                self.close(f"no data from the server within {timeout:.2f}s")
            raise
        finally:
            self._pending.pop(rid, None)

    def close(self, reason: str = "closed by the client") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._writer.close()
        self._reader.cancel()
        for future, _ in self._pending.values():
            if not future.done():
                future.set_result(None)
        self._pending.clear()

    async def wait_closed(self) -> None:
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read_loop(self, reader: asyncio.StreamReader, max_frame_bytes: int) -> None:
        decoder = StreamDecoder(max_frame_bytes)
        reason = "connection closed by the server"
        try:
            while data := await reader.read(_READ_CHUNK):
                self.received_at = self._loop.time()
                decoder.feed(data)
                for obj in decoder:
                    self._dispatch(obj)
        except (OSError, DecodeError) as exc:
            reason = str(exc) or type(exc).__name__
        finally:
            self.close(reason)

    def _dispatch(self, obj: Any) -> None:
        if type(obj) is not dict:
            return
        rid = obj.get("id")
        if type(rid) is int:
            entry = self._pending.get(rid)
            if entry is not None and not entry[0].done():
                entry[0].set_result(obj)
        elif obj.get("type") == "error":
            # Every request we send has an id, so the server could not parse our stream (e.g.
            # a frame over its limit) and the connection is unusable. For too_large the biggest
            # pending frame is surely one of the culprits; any other code concerns the
            # connection, hence every pending request. The others are retried elsewhere.
            if obj.get("code") == ErrorCode.TOO_LARGE.value and self._pending:
                rid = max(self._pending, key=lambda r: self._pending[r][1])
                targets = [self._pending[rid][0]]
            else:
                targets = [future for future, _ in self._pending.values()]
            for future in targets:
                if not future.done():
                    future.set_result(obj)
            self.close(f"the server refused the stream ({obj.get('code')})")


class _Session:
    """One server-side session: its ``client_id``, next ``seq`` and the seqs awaiting replies."""

    def __init__(self) -> None:
        self.client_id = uuid.uuid4().hex
        self.next_seq = 1
        self.unacked: dict[int, None] = {}  # ascending: seqs are inserted in increasing order
        self.opened = asyncio.Event()  # seq 1 was answered (or given up)
        self.opener: _Attempts | None = None  # how the write of seq 1 went

    def begin(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        self.unacked[seq] = None
        return seq

    def first_unacked(self) -> int:
        return next(iter(self.unacked))

    def end(self, seq: int) -> None:
        del self.unacked[seq]
        if seq == 1:
            self.opened.set()


class _Attempts:
    """The deadline of one request and what went wrong so far, to raise the right error."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = asyncio.get_running_loop().time() + timeout
        self.tried: list[str] = []
        self.reached = False
        self.no_leader = False
        self.sent = 0  # times the request was written to a connection
        self.last = ""

    def record(self, endpoint: str, problem: str, *, no_leader: bool = False) -> None:
        if endpoint not in self.tried:
            self.tried.append(endpoint)
        self.no_leader = no_leader
        self.last = problem

    def failure(self) -> RaftctlError:
        if not self.reached and self.tried:
            return ClusterUnavailable(self.tried, self.last)
        if self.no_leader:
            return NoLeader("no_leader", f"no leader known after {self.timeout:g}s ({self.last})")
        return RequestTimeout(f"request timed out after {self.timeout:g}s (last: {self.last})")


class AsyncClient:
    """An asyncio client of a rafty cluster; see the module docstring for its behaviour."""

    def __init__(
        self,
        endpoints: str | Iterable[str],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.endpoints = parse_endpoints(endpoints)
        self.timeout = float(timeout)
        self.leader: str | None = None
        """The cached leader address (None: unknown)."""
        self._max_frame_bytes = max_frame_bytes
        self._ids = itertools.count(1)
        self._session = _Session()
        self._cursor = 0  # index in endpoints of the node to ask while no leader is known
        self._conns: dict[str, _Connection] = {}
        self._connecting: dict[str, asyncio.Task[_Connection]] = {}
        self._closed = False

    @property
    def client_id(self) -> str:
        """The session id the next write will carry."""
        return self._session.client_id

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- key-value API --------------------------------------------------------------------------

    async def set(
        self, key: str, value: Any, *, if_revision: int | None = None, if_absent: bool = False
    ) -> int:
        """Write ``key``; returns the new revision. ``ConditionFailed`` if a condition fails."""
        data: dict[str, Any] = {"action": "change", "key": key, "value": value}
        if if_revision is not None:
            data["if_revision"] = if_revision
        if if_absent:
            data["if_absent"] = True
        response = await self._write(data)
        return _field(response, "revision", int)

    async def cas(self, key: str, expected_revision: int, value: Any) -> int:
        """Write ``key`` only if its revision is ``expected_revision``; returns the new one."""
        return await self.set(key, value, if_revision=expected_revision)

    async def set_if_absent(self, key: str, value: Any) -> int:
        """Write ``key`` only if it does not exist; returns its revision."""
        return await self.set(key, value, if_absent=True)

    async def get(
        self, key: str, default: Any = None, *, consistency: str = "linearizable"
    ) -> Any:
        """The value of ``key``, or ``default`` when it does not exist (like ``dict.get``)."""
        response = await self._get(key, consistency)
        return response.get("value") if _found(response) else default

    async def get_revision(self, key: str, *, consistency: str = "linearizable") -> int | None:
        """The revision of ``key``, or None when it does not exist."""
        response = await self._get(key, consistency)
        return _field(response, "revision", int) if _found(response) else None

    async def get_all(self, *, consistency: str = "linearizable") -> dict[Any, Any]:
        """The whole state; ``TooLarge`` past the server's frame limit (then use ``scan``)."""
        response = await self._request({"type": "get", "consistency": consistency})
        return _field(response, "value", dict)

    async def delete(self, key: str, *, if_revision: int | None = None) -> bool:
        """Delete ``key``; returns whether it existed."""
        data: dict[str, Any] = {"action": "delete", "key": key}
        if if_revision is not None:
            data["if_revision"] = if_revision
        response = await self._write(data)
        return _field(response, "found", bool)

    async def scan(
        self, prefix: str = "", *, after: str | None = None, limit: int | None = None
    ) -> Page:
        """One page of the keys starting with ``prefix`` (sorted), after the key ``after``."""
        request: dict[str, Any] = {"type": "list", "prefix": prefix}
        if after is not None:
            request["after"] = after
        if limit is not None:
            request["limit"] = limit
        response = await self._request(request)
        items = _field(response, "items", list)
        if not all(type(item) is list and len(item) == 3 for item in items):
            raise ServerError("bad_response", "list items must be [key, value, revision]")
        return Page([(k, v, r) for k, v, r in items], _field(response, "more", bool))

    # -- cluster API ----------------------------------------------------------------------------

    async def status(self) -> Response:
        """The diagnostic map of the leader, or else of the first node that answers.

        Diagnostic maps are returned without the envelope (``type``, ``success``, ``id``).
        """
        attempts = _Attempts(self.timeout)
        rid, frame = self._frame({"type": "diagnostic"})
        response, endpoint = await self._call(rid, frame, attempts, follow=False)
        volatile = response.get("volatile")
        leader = volatile.get("leaderId") if type(volatile) is dict else None
        if type(leader) is not str or not _valid(leader):
            return _unwrap(response)
        if leader != endpoint:
            try:
                response = await self._diagnose(leader, attempts)
            except RaftctlError:
                return _unwrap(response)  # the leader is unreachable from here: the first one
        self.leader = leader
        return _unwrap(response)

    async def diagnostic(self, address: str) -> Response:
        """The diagnostic map of the node at ``address``: one attempt, no redirect."""
        self._check_open()
        if not _valid(address):
            raise InvalidEndpoint(f"invalid address {address!r}: expected host:port")
        return _unwrap(await self._diagnose(address, _Attempts(self.timeout)))

    async def _diagnose(self, address: str, attempts: _Attempts) -> Response:
        rid, frame = self._frame({"type": "diagnostic"})
        wait = attempts.deadline - asyncio.get_running_loop().time()
        try:
            conn = await self._connect(address, wait)
            response = await conn.request(rid, frame, wait)
        except (_ConnectFailed, _ConnectionLost) as exc:
            raise ClusterUnavailable([address], str(exc)) from None
        except TimeoutError:
            raise RequestTimeout(f"{address} did not answer within {self.timeout:g}s") from None
        if response.get("type") == "error":
            raise _server_error(response)
        return response

    async def add_node(self, address: str, *, learner: bool = False) -> None:
        """Add ``address`` as a voter (or as a learner); returns once the change committed."""
        await self._config("add", address, learner=learner)

    async def promote(self, address: str) -> None:
        """Turn the learner ``address`` into a voter."""
        await self._config("promote", address)

    async def remove_node(self, address: str) -> None:
        await self._config("delete", address)

    async def request(self, payload: dict[str, Any]) -> Response:
        """Send a raw request map (types without a method: health, transfer_leader...).

        Redirects and retryable errors are retried like any request, so ``payload`` should be
        idempotent. Returns the response map without its ``id``; error responses raise.
        """
        return _strip(await self._request({k: v for k, v in payload.items() if k != "id"}))

    async def close(self) -> None:
        """Close every connection; requests still running raise ``RaftctlError``."""
        if self._closed:
            return
        self._closed = True
        for task in self._connecting.values():
            task.cancel()
        conns = list(self._conns.values())
        self._conns.clear()
        for conn in conns:
            conn.close()
        await asyncio.gather(*(conn.wait_closed() for conn in conns), return_exceptions=True)

    # -- internals ------------------------------------------------------------------------------

    async def _get(self, key: str, consistency: str) -> Response:
        return await self._request({"type": "get", "key": key, "consistency": consistency})

    async def _config(self, action: str, address: str, *, learner: bool = False) -> None:
        request: dict[str, Any] = {"type": "config", "action": action, "address": address}
        if learner:
            request["learner"] = True
        response = await self._request(request)
        if response.get("success") is not True:
            raise _server_error(response, ServerError("failed", "configuration change refused"))

    async def _write(self, data: dict[str, Any]) -> Response:
        """Send an ``append`` inside the session (see the module docstring)."""
        attempts = _Attempts(self.timeout)
        while True:
            session = self._session
            seq = session.begin()
            try:
                if seq == 1:
                    session.opener = attempts
                elif not session.opened.is_set():
                    await self._wait_open(session, attempts)
                data.update(
                    client_id=session.client_id, seq=seq, first_unacked_seq=session.first_unacked()
                )
                rid, frame = self._frame({"type": "append", "data": data})
                sent_before = attempts.sent
                try:
                    response, _ = await self._call(rid, frame, attempts, follow=True, write=True)
                except SessionExpired:
                    if self._session is session:
                        self._session = _Session()
                    if attempts.sent - sent_before == 1:
                        continue  # refused without being applied: resend in the new session
                    raise
            finally:
                session.end(seq)
            break
        if response.get("success") is not True:
            if "if_revision" in data or "if_absent" in data:
                fallback: ServerError = ConditionFailed("condition_failed", "condition not met")
            else:
                fallback = ServerError("failed", "the write failed")
            raise _server_error(response, fallback)
        return response

    async def _request(self, body: dict[str, Any]) -> Response:
        rid, frame = self._frame(body)
        response, _ = await self._call(rid, frame, _Attempts(self.timeout), follow=True)
        return response

    async def _wait_open(self, session: _Session, attempts: _Attempts) -> None:
        """Wait for seq 1 of ``session`` to be answered or given up.

        No timeout of its own: the first write has a deadline too, normally an earlier one.
        If ours passed meanwhile, we fail the way the first write did (we tried nothing).
        """
        await session.opened.wait()
        if attempts.deadline <= asyncio.get_running_loop().time() and session.opener is not None:
            raise session.opener.failure()

    def _frame(self, body: dict[str, Any]) -> tuple[int, bytes]:
        """A fresh ``id`` and ``body`` encoded with it, once for all attempts of a request.

        Every attempt reuses the id: a late answer to an earlier attempt answers this one too.
        """
        rid = next(self._ids)
        try:
            return rid, encode_frame({**body, "id": rid})
        except (TypeError, ValueError, OverflowError) as exc:
            raise BadRequest("bad_request", f"cannot encode the request: {exc}") from None

    async def _call(
        self, rid: int, frame: bytes, attempts: _Attempts, *, follow: bool, write: bool = False
    ) -> tuple[Response, str]:
        """Send ``frame`` until a result or the deadline; returns it and the node that answered.

        ``follow``: redirects move the cached leader (diagnostics are never redirected).
        ``write``: a successful answer proves its sender is the leader.
        """
        loop = asyncio.get_running_loop()
        deadline = attempts.deadline
        backoff = _BACKOFF_FIRST
        redirects = 0
        while True:
            self._check_open()
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise attempts.failure()
            endpoint = self.leader or self.endpoints[self._cursor % len(self.endpoints)]
            wait = min(remaining, max(_MIN_ATTEMPT, self.timeout / 2))
            try:
                conn = await self._connect(endpoint, wait)
                attempts.reached = True
                attempts.sent += 1
                response = await conn.request(rid, frame, min(wait, deadline - loop.time()))
            except (_ConnectFailed, _ConnectionLost) as exc:
                attempts.record(endpoint, str(exc))
                self._forget(endpoint)
            except TimeoutError:
                attempts.record(endpoint, f"{endpoint}: no answer within {wait:.2f}s")
                self._forget(endpoint)
            else:
                kind = response.get("type")
                if kind == "result" or kind is None:
                    if write and response.get("success") is True:
                        self.leader = endpoint  # only the leader acknowledges writes
                    return _strip(response), endpoint
                leader = response.get("leader")
                if kind == "error" and not _retryable(response):
                    raise _server_error(response)
                if follow and type(leader) is str and leader != endpoint and _valid(leader):
                    # A redirect (or not_leader naming the leader): go there at once, but back
                    # off if nodes keep bouncing us around.
                    attempts.record(endpoint, f"{endpoint}: redirected to {leader}")
                    self.leader = leader
                    redirects += 1
                    if redirects <= len(self.endpoints):
                        continue
                elif kind == "redirect" or response.get("code") in ("no_leader", "not_leader"):
                    attempts.record(endpoint, f"{endpoint}: no leader known", no_leader=True)
                    self._forget(endpoint)
                elif kind == "error":
                    code, message = response.get("code"), response.get("message")
                    attempts.record(endpoint, f"{endpoint}: {code}: {message}")
                    if code == "shutting_down":
                        self._forget(endpoint)
                else:
                    raise ServerError("bad_response", f"unknown response type {kind!r}")
            delay = random.uniform(backoff / 2, backoff)
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _connect(self, endpoint: str, timeout: float) -> _Connection:
        """The open connection to ``endpoint``, opening it (once, however many wait) if needed."""
        conn = self._conns.get(endpoint)
        if conn is not None and not conn.closed:
            return conn
        task = self._connecting.get(endpoint)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._open(endpoint))
            self._connecting[endpoint] = task
            task.add_done_callback(lambda t: self._opened(endpoint, t))
        try:
            async with asyncio.timeout(timeout):
                # shield: one waiter timing out must not abort the connect for the others.
                return await asyncio.shield(task)
        except TimeoutError:
            raise _ConnectFailed(f"{endpoint}: connect timed out") from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this request itself is being cancelled
            raise _ConnectFailed(f"{endpoint}: connect abandoned (client closed)") from None

    async def _open(self, endpoint: str) -> _Connection:
        host, port = parse_address(endpoint)
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(host, port)
        except (OSError, ValueError) as exc:  # ValueError: e.g. a host name IDNA rejects
            raise _ConnectFailed(f"{endpoint}: {exc or type(exc).__name__}") from None
        conn = _Connection(endpoint, reader, writer, self._max_frame_bytes)
        if self._closed:
            conn.close()
        else:
            self._conns[endpoint] = conn
        return conn

    def _opened(self, endpoint: str, task: asyncio.Task[_Connection]) -> None:
        if self._connecting.get(endpoint) is task:
            del self._connecting[endpoint]
        if not task.cancelled():
            task.exception()  # retrieved: waiters that timed out must not cause a warning

    def _forget(self, endpoint: str) -> None:
        """``endpoint`` failed us: drop it as leader and ask the next endpoint next time."""
        if self.leader == endpoint:
            self.leader = None
        if endpoint in self.endpoints:
            self._cursor = self.endpoints.index(endpoint) + 1

    def _check_open(self) -> None:
        if self._closed:
            raise RaftctlError("the client is closed")


class Client:
    """The blocking client: the ``AsyncClient`` API, run on a private event loop thread."""

    def __init__(
        self,
        endpoints: str | Iterable[str],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self._client = AsyncClient(endpoints, timeout, max_frame_bytes=max_frame_bytes)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="raftctl-client", daemon=True
        )
        self._thread.start()
        # Closes the connections and stops the thread when close() is forgotten: at garbage
        # collection or interpreter exit (a plain script should not print asyncio warnings).
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._thread, self._client)

    @property
    def endpoints(self) -> list[str]:
        return self._client.endpoints

    @property
    def timeout(self) -> float:
        return self._client.timeout

    @property
    def client_id(self) -> str:
        return self._client.client_id

    @property
    def leader(self) -> str | None:
        return self._client.leader

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def set(
        self, key: str, value: Any, *, if_revision: int | None = None, if_absent: bool = False
    ) -> int:
        return self._run(self._client.set(key, value, if_revision=if_revision, if_absent=if_absent))

    def cas(self, key: str, expected_revision: int, value: Any) -> int:
        return self._run(self._client.cas(key, expected_revision, value))

    def set_if_absent(self, key: str, value: Any) -> int:
        return self._run(self._client.set_if_absent(key, value))

    def get(self, key: str, default: Any = None, *, consistency: str = "linearizable") -> Any:
        return self._run(self._client.get(key, default, consistency=consistency))

    def get_revision(self, key: str, *, consistency: str = "linearizable") -> int | None:
        return self._run(self._client.get_revision(key, consistency=consistency))

    def get_all(self, *, consistency: str = "linearizable") -> dict[Any, Any]:
        return self._run(self._client.get_all(consistency=consistency))

    def delete(self, key: str, *, if_revision: int | None = None) -> bool:
        return self._run(self._client.delete(key, if_revision=if_revision))

    def scan(self, prefix: str = "", *, after: str | None = None, limit: int | None = None) -> Page:
        return self._run(self._client.scan(prefix, after=after, limit=limit))

    def items(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[tuple[str, Any, int]]:
        """Every ``(key, value, revision)`` under ``prefix``, fetched page by page."""
        after: str | None = None
        while True:
            page = self.scan(prefix, after=after, limit=page_size)
            yield from page.items
            if not page.more or not page.items:
                return
            after = page.items[-1][0]

    def status(self) -> Response:
        return self._run(self._client.status())

    def diagnostic(self, address: str) -> Response:
        return self._run(self._client.diagnostic(address))

    def add_node(self, address: str, *, learner: bool = False) -> None:
        self._run(self._client.add_node(address, learner=learner))

    def promote(self, address: str) -> None:
        self._run(self._client.promote(address))

    def remove_node(self, address: str) -> None:
        self._run(self._client.remove_node(address))

    def request(self, payload: dict[str, Any]) -> Response:
        return self._run(self._client.request(payload))

    def close(self) -> None:
        """Close the connections and stop the loop thread; idempotent."""
        self._finalizer()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._finalizer.alive:
            coro.close()
            raise RaftctlError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt in the caller: stop the request too
            raise


def _shutdown(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, client: AsyncClient
) -> None:
    """Stop a ``Client``'s loop thread (runs at most once: ``weakref.finalize``)."""
    if threading.current_thread() is thread:
        loop.stop()  # collected by the loop thread itself, which must not wait for itself
        return
    asyncio.run_coroutine_threadsafe(client.close(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


# -- response helpers ---------------------------------------------------------------------------


def _strip(response: Response) -> Response:
    """The response without its transport ``id``."""
    response.pop("id", None)
    return response


def _unwrap(response: Response) -> Response:
    """A diagnostic map without the envelope of a response."""
    for name in ("type", "success", "id"):
        response.pop(name, None)
    return response


def _retryable(response: Response) -> bool:
    retryable = response.get("retryable")
    if type(retryable) is bool:
        return retryable
    code = response.get("code")
    return type(code) is str and code in _CODES and ErrorCode(code).retryable


def _server_error(response: Response, fallback: ServerError | None = None) -> ServerError:
    """The exception for an error response, or for an unsuccessful result (``fallback``)."""
    code = response.get("code")
    message = response.get("message")
    if type(code) is not str:
        if fallback is None:
            return ServerError("bad_response", "an error response without a code")
        if type(message) is str:
            return type(fallback)(fallback.code, message)
        return fallback
    return ERRORS_BY_CODE.get(code, ServerError)(code, message if type(message) is str else "")


def _found(response: Response) -> bool:
    found = response.get("found")
    if found is None:
        return response.get("value") is not None
    if type(found) is not bool:
        raise ServerError("bad_response", "'found' must be a bool")
    return found


def _field(response: Response, name: str, kind: type[T]) -> T:
    value = response.get(name)
    if type(value) is not kind:
        raise ServerError("bad_response", f"the response lacks a {kind.__name__} {name!r}")
    return value


def _valid(address: str) -> bool:
    try:
        parse_address(address)
    except ValueError:
        return False
    return True


"""Client library: ``AsyncClient``, the asyncio client of a rafty cluster (``Client`` wraps it).

Theory of operation:

- One persistent TCP connection per node spoken to, in practice to the cached leader. Every
  request carries an integer ``id``, so many requests are in flight on one connection; a reader
  task per connection resolves the waiting futures by ``id`` (responses may come out of order;
  see ``raftctl.connection``).
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
- Membership changes have no session: ``add_node`` and ``remove_node`` are plain retries.
  When an attempt ended without a verdict (the connection dropped, no answer in time, or
  ``timeout`` / ``not_leader`` / ``shutting_down``) and a later one hears "already a member"
  (add) or "not a member" (remove), the earlier attempt did the change: it returns success,
  provided the cluster's status, read first, showed the node's membership the other way (a
  mistyped address gets its error). A leader that removes itself answers only after handing
  over, so its answer is the one most likely lost.
- ``raftctl.blocking.Client`` runs an ``AsyncClient`` on a private event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import re
import socket
import ssl
import uuid
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import Any, NamedTuple, Self, TypeVar

from raftctl.connection import (
    ConnectFailed,
    ConnectTimedOut,
    Connection,
    ConnectionLost,
    Response,
    check_endpoint,
    os_problem,
    parse_endpoints,
    tls_context,
    valid_address,
)
from raftctl.errors import (
    ERRORS_BY_CODE,
    BadRequest,
    ClusterUnavailable,
    ConditionFailed,
    InvalidArgument,
    NoLeader,
    RaftctlError,
    RequestTimeout,
    ServerError,
    SessionExpired,
    TooLarge,
)
from raftd.backup import Backup, from_snapshot_response
from raftd.wire.client import (
    MAX_KEY_BYTES,
    RETRYABLE_CODES,
    ErrorCode,
    parse_address,
    utf8_size,
)
from raftd.wire.stream import encode_frame

__all__ = ["AsyncClient", "Item", "Page", "key_problem", "parse_endpoints"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_FRAME_BYTES = 64 * 1024 * 1024
"""Largest response accepted; a whole-state ``get`` can be big."""

_BACKOFF_FIRST = 0.01
_TRANSFER_RETRYABLE = RETRYABLE_CODES - {ErrorCode.TRANSFERRING}
"""Answers after which a transfer to a named target is asked for again. ``transferring``
means another transfer superseded ours: retrying would fight it."""
_BACKOFF_MAX = 0.5
_MIN_ATTEMPT = 0.2

T = TypeVar("T")


class Item(NamedTuple):
    """A key, its value, and its revision: the cluster-wide write count when it was written.

    Revisions only grow, so ``cas(key, item.revision, new)`` succeeds only if nobody wrote
    ``key`` since this item was read.
    """

    key: str
    value: Any
    revision: int


class Page(NamedTuple):
    """One page of ``scan``: ``items`` in key order; ``more``: keys remain after the last one."""

    items: list[Item]
    more: bool


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
        self.undecided = False  # an attempt ended without saying whether it took effect
        self.last = ""
        self.last_answer: Response | None = None
        """The retryable error the cluster answered last, if nothing happened after it."""
        self.problems: dict[str, str] = {}
        """Each endpoint's latest problem: "no node reachable" names them all, so a refused
        certificate is not hidden behind another node's timeout."""
        self.leaderless: set[str] = set()
        """Endpoints whose latest answer was that they know no leader."""

    def record(
        self, endpoint: str, problem: str, *, no_leader: bool = False, answered: bool = True,
        sent: bool = True,
    ) -> None:
        """``answered``: the node said something (a timeout or a lost connection did not);
        ``sent``: the request reached its connection (a failed connect did not)."""
        if endpoint not in self.tried:
            self.tried.append(endpoint)
        self.last_answer = None
        if answered:
            self.no_leader = no_leader
            if no_leader:
                self.leaderless.add(endpoint)
            else:
                self.leaderless.discard(endpoint)
        elif endpoint in self.leaderless:
            # Silence does not contradict what this node said: a last attempt cut short by
            # the deadline must not turn "no leader" (exit status 1) into a timeout (3).
            self.last = problem
            return
        elif sent:
            self.no_leader = False  # that node may have been a leader that took the request
        self.last = problem
        self.problems[endpoint] = problem

    def failure(self) -> RaftctlError:
        if not self.reached and self.tried:
            return ClusterUnavailable(self.tried, "; ".join(self.problems.values()))
        if self.no_leader:
            return NoLeader("no_leader", f"no leader known after {self.timeout:g}s "
                                         f"({'; '.join(self.problems.values())})")
        if self.last_answer is not None and not self.undecided:
            # The cluster kept answering, with an error retries did not clear (a learner to
            # promote that has not caught up): that answer, not a timeout (exit 3 means
            # unreachable). A write some attempt may have applied stays a timeout.
            message = self.last_answer.get("message")
            return _server_error({**self.last_answer, "message": f"{message} "
                                  f"(still so after {self.timeout:g}s of retries)"})
        last = f" (last: {self.last})" if self.last else ""
        return RequestTimeout(f"request timed out after {self.timeout:g}s{last}")


class AsyncClient:
    """An asyncio client of a rafty cluster; see the module docstring for its behaviour."""

    def __init__(
        self,
        endpoints: str | Iterable[str],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        token: str | None = None,
        tls: bool | ssl.SSLContext = False,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        """``token``: sent with every request, for nodes with ``[security]
        client_token_file``. ``tls``, ``cacert``, ``cert``, ``key``: TLS to the nodes (see
        ``raftctl.connection.tls_context``)."""
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.endpoints = parse_endpoints(endpoints)
        self._token = token
        self._tls = tls_context(tls, cacert=cacert, cert=cert, key=key)
        self.timeout = float(timeout)
        self.leader: str | None = None
        """The cached leader address (None: unknown)."""
        self._max_frame_bytes = max_frame_bytes
        self._ids = itertools.count(1)
        self._session = _Session()
        self._cursor = 0  # index in endpoints of the node to ask while no leader is known
        self._conns: dict[str, Connection] = {}
        self._connecting: dict[str, asyncio.Task[Connection]] = {}
        self._closed = False

    @property
    def client_id(self) -> str:
        """The session id the next write will carry."""
        return self._session.client_id

    async def __aenter__(self) -> Self:
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
        """Write ``key``; returns the new revision. ``ConditionFailed`` if a condition fails.

        ``InvalidArgument`` for a ``value`` msgpack cannot carry (before sending) or whose
        maps have keys the nodes refuse (not str or bytes).
        """
        data: dict[str, Any] = {"action": "change", "key": key, "value": value}
        if if_revision is not None:
            data["if_revision"] = if_revision
        if if_absent:
            data["if_absent"] = True
        try:
            response = await self._write(data)
        except BadRequest:
            # Looked for only once refused: a walk of every write's value would cost more
            # than encoding it, for the rare value msgpack packs but the nodes cannot decode.
            problem = (_map_key_problem(value) if isinstance(value, (dict, list, tuple))
                       else None)
            if problem is not None:
                raise InvalidArgument(f"cannot encode the value: {problem}") from None
            raise
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

    async def get_item(self, key: str, *, consistency: str = "linearizable") -> Item | None:
        """``key``'s value and revision from one read (None when it does not exist).

        Read-modify-write loops need both from the same read: a revision read separately may
        belong to a newer value than the one modified, and the ``cas`` would lose that write.
        """
        response = await self._get(key, consistency)
        if not _found(response):
            return None
        return Item(key, response.get("value"), _field(response, "revision", int))

    async def get_revision(self, key: str, *, consistency: str = "linearizable") -> int | None:
        """The revision of ``key``, or None when it does not exist."""
        item = await self.get_item(key, consistency=consistency)
        return None if item is None else item.revision

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
        return Page([Item(k, v, r) for k, v, r in items], _field(response, "more", bool))

    async def items(self, prefix: str = "", *, page_size: int = 1000) -> AsyncIterator[Item]:
        """Every key under ``prefix`` in order, fetched ``page_size`` at a time.

        Each page is one linearizable read; keys written while the iteration runs may or may
        not be seen (the listing is not a snapshot).
        """
        after: str | None = None
        while True:
            page = await self.scan(prefix, after=after, limit=page_size)
            for item in page.items:
                yield item
            if not page.more or not page.items:
                return
            after = page.items[-1].key

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
        if type(leader) is not str or not valid_address(leader):
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
        check_endpoint(address, "address")
        return _unwrap(await self._diagnose(address, _Attempts(self.timeout)))

    async def health(self, address: str | None = None) -> Response:
        """Prove that the cluster commits: ``{"leader", "commit_index"}`` once it did.

        The leader commits a no-op; a follower confirms the leader's commit index with a quorum
        (ReadIndex). ``address`` asks that one node, once, with no redirect; otherwise any
        node is asked, with retries until the deadline.
        """
        if address is None:
            return _unwrap(await self._request({"type": "health"}))
        self._check_open()
        check_endpoint(address, "address")
        response = await self._ask_node(address, {"type": "health"}, _Attempts(self.timeout))
        if response.get("type") == "redirect":
            # A member answers with the commit it confirmed; only a node outside the
            # configuration it knows (removed, or blank and never joined) sends us on.
            leader = response.get("leader")
            raise ServerError("not_a_member", f"{address} is not a member of the cluster it "
                                              f"knows (leader: {leader or 'unknown'})")
        return _unwrap(response)

    async def _diagnose(self, address: str, attempts: _Attempts) -> Response:
        return await self._ask_node(address, {"type": "diagnostic"}, attempts)

    async def _ask_node(self, address: str, body: dict[str, Any], attempts: _Attempts) -> Response:
        """One attempt at ``address`` itself: no redirect, no retry."""
        rid, frame = self._frame(body)
        wait = attempts.deadline - asyncio.get_running_loop().time()
        try:
            conn = await self._connect(address, wait)
            response = await conn.request(rid, frame, wait)
        except (ConnectFailed, ConnectionLost) as exc:
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
        """Remove the member ``address`` (a leader removing itself hands over first)."""
        await self._config("delete", address)

    async def transfer_leader(self, address: str | None = None) -> str:
        """Hand leadership to the voter ``address`` (None: the most caught-up one).

        Returns the new leader. A transfer the leader could not finish within an election
        timeout (the target was still catching up under load, an election intervened) is
        tried again while the client's timeout leaves room for a whole attempt, when
        ``address`` names the target: asking again for a node that already leads succeeds at
        once, so a retry never moves leadership twice. A transfer superseded by another one
        (``transferring``) is not fought over, and without ``address`` an answered attempt
        is never retried, since a lost answer to a transfer that happened would move
        leadership a second time.
        """
        request: dict[str, Any] = {"type": "transfer_leader"}
        if address is not None:
            request["address"] = address
        attempts = _Attempts(self.timeout)
        # The leader answers a failed transfer only after an election timeout: an attempt
        # the deadline cuts short would report a bare timeout instead of the leader's reason.
        whole_attempt = min(1.0, self.timeout / 4)
        backoff = _BACKOFF_FIRST
        while True:
            try:
                response = await self._request(request, retry_errors=False, attempts=attempts)
                break
            except BadRequest:
                if address is None or await self._leader_id() != address:
                    raise
                return address
            except ServerError as exc:
                left = attempts.deadline - asyncio.get_running_loop().time()
                if (address is None or exc.code not in _TRANSFER_RETRYABLE
                        or left <= backoff + whole_attempt):
                    raise
            await asyncio.sleep(random.uniform(backoff / 2, backoff))
            backoff = min(backoff * 2, _BACKOFF_MAX)
        leader = _field(response, "leader", str)
        self.leader = leader if valid_address(leader) else None
        return leader

    async def snapshot(self) -> Backup:
        """A consistent copy of the whole state (``raftd.backup.Backup``), for backups.

        Taken after a ReadIndex round, so it holds every write acknowledged before the call;
        asked of the leader when it is known or can be learned. The answer is as large as the
        state: create the client with a ``max_frame_bytes`` that fits it, and a timeout long
        enough to transfer it.
        """
        if self.leader is None:
            with contextlib.suppress(RaftctlError):
                await self.status()  # learns the leader; any node will do if it fails
        response = await self._request({"type": "snapshot"})
        try:
            return from_snapshot_response(response)
        except ValueError as exc:
            raise ServerError("bad_response", str(exc)) from None

    async def request(self, payload: dict[str, Any]) -> Response:
        """Send a raw request map (a type without a method of its own).

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

    async def _leader_id(self) -> str | None:
        volatile = (await self.status()).get("volatile")
        leader = volatile.get("leaderId") if type(volatile) is dict else None
        return leader if type(leader) is str else None

    async def _is_member(self, address: str) -> bool | None:
        """Whether ``address`` is a voter or learner as the leader (or else any node) sees
        it; None when no node tells."""
        try:
            volatile = (await self.status()).get("volatile")
        except RaftctlError:
            return None
        if type(volatile) is not dict:
            return None
        members = [volatile.get("voters"), volatile.get("learners")]
        if not all(type(m) is list for m in members):
            return None
        return any(address in m for m in members)

    async def _get(self, key: str, consistency: str) -> Response:
        return await self._request({"type": "get", "key": key, "consistency": consistency})

    async def _config(self, action: str, address: str, *, learner: bool = False) -> None:
        request: dict[str, Any] = {"type": "config", "action": action, "address": address}
        if learner:
            request["learner"] = True
        # A lost answer is inferred only for a node whose membership the change would alter
        # as the cluster saw it at the start: a mistyped address never was a member.
        done = _DONE_BEFORE.get(action)
        if done is not None and await self._is_member(address) != (action == "delete"):
            done = None
        attempts = _Attempts(self.timeout)
        try:
            response = await self._request(request, attempts=attempts)
        except BadRequest as exc:
            if done is not None and attempts.undecided and str(exc).endswith(done):
                return  # an earlier attempt made the change; its answer was lost
            raise
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
                sent_before = attempts.sent
                try:
                    rid, frame = self._frame({"type": "append", "data": data})
                    response, _ = await self._call(rid, frame, attempts, follow=True, write=True)
                except SessionExpired:
                    if self._session is session:
                        self._session = _Session()
                    if attempts.sent - sent_before == 1:
                        continue  # refused without being applied: resend in the new session
                    raise
                except (TooLarge, BadRequest, InvalidArgument):
                    # Refused at the server's edge or never sent, so seq 1 opened no session
                    # there: the next write must open one rather than continue with seq 2.
                    if seq == 1 and self._session is session:
                        self._session = _Session()
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

    async def _request(
        self, body: dict[str, Any], *, retry_errors: bool = True, attempts: _Attempts | None = None
    ) -> Response:
        """Send ``body`` with retries until its deadline; ``attempts``: to inspect them after."""
        rid, frame = self._frame(body)
        if attempts is None:
            attempts = _Attempts(self.timeout)
        response, _ = await self._call(rid, frame, attempts, follow=True, retry_errors=retry_errors)
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
        if self._token is not None:
            body = {**body, "token": self._token}
        try:
            return rid, encode_frame({**body, "id": rid})
        except (TypeError, ValueError, OverflowError) as exc:
            raise _encoding_error(body, exc) from None

    async def _call(
        self,
        rid: int,
        frame: bytes,
        attempts: _Attempts,
        *,
        follow: bool,
        write: bool = False,
        retry_errors: bool = True,
    ) -> tuple[Response, str]:
        """Send ``frame`` until a result or the deadline; returns it and the node that answered.

        ``follow``: redirects move the cached leader (diagnostics are never redirected).
        ``write``: a successful answer proves its sender is the leader.
        ``retry_errors``: False raises every error answer, even a retryable one.
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
            except ConnectFailed as exc:
                # An attempt the deadline cut short says less than what this endpoint
                # said before (say, "TLS: wrong version number"): keep that.
                cut_short = wait < max(_MIN_ATTEMPT, self.timeout / 2)
                if not (isinstance(exc, ConnectTimedOut) and cut_short
                        and endpoint in attempts.problems):
                    attempts.record(endpoint, str(exc), answered=False, sent=False)
                self._forget(endpoint)
            except ConnectionLost as exc:
                attempts.record(endpoint, str(exc), answered=False)
                attempts.undecided = True
                self._forget(endpoint)
            except TimeoutError:
                attempts.record(endpoint, f"{endpoint}: no answer within {wait:.2f}s",
                                answered=False)
                attempts.undecided = True
                self._forget(endpoint)
            else:
                kind = response.get("type")
                attempts.undecided |= kind == "error" and response.get("code") in _UNDECIDED
                if kind == "result" or kind is None:
                    if write and response.get("success") is True:
                        self.leader = endpoint  # only the leader acknowledges writes
                    return _strip(response), endpoint
                leader = response.get("leader")
                if kind == "error" and not (retry_errors and _retryable(response)):
                    raise _server_error(response)
                if follow and type(leader) is str and leader != endpoint and valid_address(leader):
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
                        attempts.last_answer = response
                else:
                    raise ServerError("bad_response", f"unknown response type {kind!r}")
            delay = random.uniform(backoff / 2, backoff)
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _connect(self, endpoint: str, timeout: float) -> Connection:
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
            raise ConnectTimedOut(f"{endpoint}: connect timed out") from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this request itself is being cancelled
            raise ConnectFailed(f"{endpoint}: connect abandoned (client closed)") from None

    async def _open(self, endpoint: str) -> Connection:
        host, port = parse_address(endpoint)
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=self._tls, server_hostname=host if self._tls else None
                )
        except (OSError, ValueError) as exc:  # ValueError: e.g. a host name IDNA rejects
            raise ConnectFailed(f"{endpoint}: {connect_problem(exc)}") from None
        conn = Connection(endpoint, reader, writer, self._max_frame_bytes)
        if self._closed:
            conn.close()
        else:
            self._conns[endpoint] = conn
        return conn

    def _opened(self, endpoint: str, task: asyncio.Task[Connection]) -> None:
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



# -- request helpers ----------------------------------------------------------------------------


def key_problem(key: str, *, what: str = "a key", may_be_empty: bool = False) -> str | None:
    """Why the nodes would refuse ``key`` (empty, not UTF-8, too long), or None.

    ``what``/``may_be_empty``: the same rule for a list prefix ("a prefix", empty: all keys).
    """
    if not key and not may_be_empty:
        return f"{what} must not be empty"
    size = utf8_size(key)
    if size is None:
        return f"{what} must be valid UTF-8"
    if size > MAX_KEY_BYTES:
        return f"{what} is at most {MAX_KEY_BYTES} UTF-8 bytes, not {size}"
    return None


def _map_key_problem(value: dict[Any, Any] | list[Any] | tuple[Any, ...]) -> str | None:
    """Why the nodes would refuse ``value``'s maps: msgpack packs any key, but nodes decode
    with ``strict_map_key`` (str or bytes only). Each container is visited once, so a
    cycle ends the walk (and the encoder reports it)."""
    stack: list[Any] = [value]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        children = node
        if isinstance(node, dict):
            for key in node:
                if not isinstance(key, (str, bytes)):
                    return f"map keys must be str or bytes, not {type(key).__name__}"
            children = node.values()
        stack.extend(child for child in children if isinstance(child, (dict, list, tuple)))
    return None


def _encoding_error(body: dict[str, Any], exc: Exception) -> InvalidArgument:
    """``exc``, raised encoding ``body``, in a few words, naming the value if it is the cause."""
    data = body.get("data")
    what = "the request"
    if type(data) is dict and "value" in data:
        try:
            encode_frame(data["value"])
        except (TypeError, ValueError, OverflowError) as value_exc:
            what, exc = "the value", value_exc
    if isinstance(exc, OverflowError):
        problem = "integer out of range (msgpack holds -2**63 .. 2**64-1)"
    elif match := re.fullmatch(r"can not serialize '(.+)' object", str(exc)):
        problem = f"{match[1]} is not a msgpack type"
    elif str(exc).startswith("recursion limit exceeded"):
        problem = "nested too deep, or it contains itself"
    else:
        problem = str(exc)
    return InvalidArgument(f"cannot encode {what}: {problem}")


# -- response helpers ---------------------------------------------------------------------------


def _strip(response: Response) -> Response:
    """The response without its transport ``id``."""
    response.pop("id", None)
    return response


def connect_problem(exc: Exception) -> str:
    """Why a connection failed, in a few words (TLS and name lookups said in their terms)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        # A plain-TCP node answers a TLS hello with bytes that are no TLS record.
        hint = " (does the node speak TLS?)" if exc.reason == "WRONG_VERSION_NUMBER" else ""
        return f"TLS: {(exc.reason or str(exc)).lower().replace('_', ' ')}{hint}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host: {exc.strerror or exc}"
    if isinstance(exc, OSError):
        return os_problem(exc)
    return str(exc) or type(exc).__name__


def _unwrap(response: Response) -> Response:
    """A diagnostic map without the envelope of a response."""
    for name in ("type", "success", "id"):
        response.pop(name, None)
    return response


_UNDECIDED = frozenset({"timeout", "not_leader", "shutting_down"})
"""Error codes that may answer a request the cluster went on to apply."""

_DONE_BEFORE = {"add": "is already a member", "delete": "is not a member"}
"""How the leader refuses a membership change that an earlier attempt already made."""


def _retryable(response: Response) -> bool:
    retryable = response.get("retryable")
    if type(retryable) is bool:
        return retryable
    code = response.get("code")
    return type(code) is str and code in RETRYABLE_CODES


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
    text = message if type(message) is str else ""
    if code == ErrorCode.CONDITION_FAILED.value:
        revision = response.get("revision")
        return ConditionFailed(code, text, revision if type(revision) is int else None)
    return ERRORS_BY_CODE.get(code, ServerError)(code, text)


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

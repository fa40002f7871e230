"""One TCP connection to a rafty node, with pipelined requests matched to answers by ``id``.

The client library (``raftctl.client``) keeps one `Connection` per node it talks to; this
module knows nothing of leaders, retries or sessions.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from raftctl.errors import InvalidEndpoint, RaftctlError
from raftd.wire.client import ErrorCode, parse_address
from raftd.wire.errors import DecodeError
from raftd.wire.stream import StreamDecoder

__all__ = [
    "ConnectFailed",
    "Connection",
    "ConnectionLost",
    "Credentials",
    "check_endpoint",
    "parse_endpoints",
    "tls_context",
    "valid_address",
]

_READ_CHUNK = 256 * 1024

Response = dict[str, Any]


def parse_endpoints(endpoints: str | Iterable[str]) -> list[str]:
    """``"h:p,h:p"`` or a list of ``"h:p"`` (items may hold commas too) -> unique endpoints.

    Raises ``InvalidEndpoint`` (see `check_endpoint`)."""
    parts = [endpoints] if isinstance(endpoints, str) else list(endpoints)
    result: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            raise InvalidEndpoint(f"an endpoint must be a 'host:port' str, not {part!r}")
        for item in part.split(","):
            item = item.strip()
            if not item:
                continue
            check_endpoint(item)
            if item not in result:
                result.append(item)
    if not result:
        raise InvalidEndpoint("no endpoint given")
    return result


# A DNS name, IDNA-encoded first: letters, digits, '-' inside a label, '_' for the names
# container runtimes give (not RFC 1123, but resolvers take them); an optional final dot.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
# Characters of some host form (name, IPv4, [IPv6%zone]); anything else is a typo.
_HOST_CHARS = re.compile(r"[A-Za-z0-9._:%\[\]-]")
_SEPARATORS = frozenset(";| ")


def check_endpoint(endpoint: str, what: str = "endpoint") -> None:
    """Raise ``InvalidEndpoint`` unless ``endpoint`` is ``host:port`` with a host some node
    could have, so that a typo (``http://h:p``, ``h:p;h:p``, ``::1:7001``) fails at once
    rather than as "cannot resolve the host" at the first request."""
    if "://" in endpoint:
        raise InvalidEndpoint(f"invalid {what} {endpoint!r}: give host:port, no URL scheme")
    try:
        port = parse_address(endpoint)[1]
    except ValueError as exc:
        raise InvalidEndpoint(f"invalid {what} {endpoint!r}: {exc}") from None
    problem = _host_problem(endpoint.rpartition(":")[0], port)
    if problem is not None:
        raise InvalidEndpoint(f"invalid {what} {endpoint!r}: {problem}")


def _host_problem(host: str, port: int) -> str | None:
    """Why ``host`` (of host:port) is no host name or IP literal, or None if it may be one."""
    bad = next((c for c in host if c.isascii() and not _HOST_CHARS.fullmatch(c)), None)
    if bad is not None:
        hint = " (separate endpoints with commas)" if bad in _SEPARATORS else ""
        return f"{bad!r} is not allowed in a host name or IP address{hint}"
    if host.startswith("[") and host.endswith("]"):
        return None  # parse_address checked the IPv6 address
    if "[" in host or "]" in host:
        return "write IPv6 addresses as [addr]:port"
    if ":" in host:
        # Without brackets, where the address ends and the port starts is a guess.
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"{host!r} is not an IPv6 address"
        return f"write IPv6 addresses as [addr]:port ([{host}]:{port})"
    try:
        name = host.encode("idna").decode("ascii")  # bücher.example: an IDN is fine
    except UnicodeError:
        name = ""
    return None if _HOST_NAME.fullmatch(name) else f"{host!r} is not a valid host name"


def tls_context(
    tls: bool | ssl.SSLContext = False,
    *,
    cacert: str | None = None,
    cert: str | None = None,
    key: str | None = None,
) -> ssl.SSLContext | None:
    """The client's TLS context, or None for plain TCP.

    TLS is on when ``tls`` is true (a context is used as given) or any file is named.
    ``cacert``: PEM CA certificates that signed the nodes' certificates (default: the
    system's); ``cert``/``key``: this client's certificate, for nodes that set
    ``[security] tls_ca``. Node certificates are verified, host name (or IP) included.
    Raises ``RaftctlError`` when a file cannot be loaded.
    """
    if isinstance(tls, ssl.SSLContext):
        return tls
    if not tls and cacert is None and cert is None and key is None:
        return None
    if key is not None and cert is None:
        raise RaftctlError("a client key needs its certificate (cert)")
    try:
        context = ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        problem = _tls_file_problem(exc, "it holds no PEM certificate")
        raise RaftctlError(f"cannot load the CA certificates {cacert}: {problem}") from None
    if cert is not None:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            files = cert if key is None else f"{cert} and {key}"
            problem = _tls_file_problem(
                exc, "not a PEM certificate and its key, or the key does not match")
            raise RaftctlError(f"cannot load the client certificate {files}: {problem}") from None
    return context


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a client presents to secured nodes (a token, TLS files), as plain values: unlike
    the SSLContext they make, they cross into spawned processes (bench's load generators)."""

    token: str | None = field(default=None, repr=False)
    tls: bool = False
    cacert: str | None = None
    cert: str | None = None
    key: str | None = None

    def client_options(self) -> dict[str, Any]:
        """The ``token`` and ``tls`` keyword arguments of a client; raises ``RaftctlError``
        when a TLS file cannot be loaded (see `tls_context`). The files are read once per
        process: every later call shares the first one's SSLContext."""
        return dict(_client_options(self))


@functools.lru_cache(maxsize=4)
def _client_options(credentials: Credentials) -> dict[str, Any]:
    c = credentials
    context = tls_context(c.tls, cacert=c.cacert, cert=c.cert, key=c.key)
    options: dict[str, Any] = {} if c.token is None else {"token": c.token}
    return options if context is None else {**options, "tls": context}


def _tls_file_problem(exc: OSError, ssl_problem: str) -> str:
    """What went wrong in a few words: OpenSSL says "[SSL] PEM lib (_ssl.c:3905)"."""
    return ssl_problem if isinstance(exc, ssl.SSLError) else os_problem(exc)


def os_problem(exc: OSError) -> str:
    """An OSError in a few words ("connection refused"), not Python's repr ("[Errno 111]
    Connect call failed ('127.0.0.1', 7001)")."""
    if exc.errno is not None and exc.errno > 0:
        return os.strerror(exc.errno).lower()
    return str(exc) or type(exc).__name__


class ConnectFailed(Exception):
    """The endpoint could not be reached."""


class ConnectTimedOut(ConnectFailed):
    """The endpoint did not complete a connection in the time given."""


class ConnectionLost(Exception):
    """The connection broke (or was closed) while a request was outstanding."""


class Connection:
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

        Raises ``ConnectFailed`` if the connection was already closed (nothing was sent),
        ``ConnectionLost`` if it broke while the request was out, or ``TimeoutError`` after
        ``timeout`` seconds.
        """
        if self._writer.transport.is_closing():
            self.close("connection lost")  # seen before the reader noticed
        if self.closed:
            raise ConnectFailed(f"{self.endpoint}: {self.close_reason}")
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
                    raise ConnectionLost(f"{self.endpoint}: {self.close_reason}")
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
            if not self.received_at and self._writer.get_extra_info("sslcontext") is None:
                # A node refuses in words (overloaded, shutting down) except a TLS node, which
                # cannot: our request bytes failed its handshake, and it just closes. (So does
                # a node killed after reading our request: hence a question.)
                reason += " before answering (does it require TLS? --tls, --cacert)"
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



def valid_address(address: str) -> bool:
    """Whether ``address`` is a usable ``host:port``."""
    try:
        parse_address(address)
    except ValueError:
        return False
    return True

"""etcd for the peer comparison: a 3-member cluster on 127.0.0.1, and an HTTP/JSON load client.

The client (`EtcdClient`) plugs into ``raftctl.bench.workers`` (``LoadSpec.protocol =
"tests.perf.peer_etcd:EtcdClient"``), so etcd is driven by the very load generator that drives
rafty: same closed loops, same separate worker processes, same histograms. It speaks HTTP/1.1
with keep-alive to etcd's v3 gRPC gateway (``POST /v3/kv/put``, keys and values base64 in
JSON), one request outstanding per connection. etcd always fsyncs its WAL.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from raftctl.bench.protocol import Response, Tally
from raftctl.localcluster import HOST, free_ports
from raftd.wire.client import parse_address

READY_S = 60.0


class _Http(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.sent_at = 0.0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection lost"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        parsed = _parse_response(self.buffer)
        if parsed is not None and self.waiter is not None and not self.waiter.done():
            status, body, used = parsed
            del self.buffer[:used]
            self.waiter.set_result((status, body))

    def request(self, head: bytes, body: bytes) -> asyncio.Future[tuple[int, bytes]]:
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        self.sent_at = loop.time()
        assert self.transport is not None
        self.transport.write(head + body)
        return self.waiter


def _parse_response(buffer: bytearray) -> tuple[int, bytes, int] | None:
    """(status, body, bytes used) of the first complete response in ``buffer``, or None."""
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    start = end + 4
    if "content-length" in headers:
        length = int(headers["content-length"])
        if len(buffer) < start + length:
            return None
        return status, bytes(buffer[start:start + length]), start + length
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        pos = start
        while True:
            eol = buffer.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(buffer[pos:eol]).split(b";")[0], 16)
            if len(buffer) < eol + 2 + size + 2:
                return None
            if size == 0:
                return status, bytes(body), eol + 4
            body += buffer[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
    return status, b"", start


class EtcdClient:
    """A closed-loop client of etcd's HTTP gateway, shaped like ``raftctl.bench.BenchClient``."""

    def __init__(self, address: str, endpoints: tuple[str, ...], timeout: float) -> None:
        self.address = address
        self.timeout = timeout
        self.tally = Tally()
        self.conn: _Http | None = None

    async def write(self, key: str, value: bytes) -> Response:
        return await self._post("/v3/kv/put", {"key": _b64(key.encode()), "value": _b64(value)})

    async def read(self, key: str, consistency: str, *, follow: bool) -> Response:
        return await self._post("/v3/kv/range", {"key": _b64(key.encode()),
                                                 "serializable": consistency == "stale"})

    async def _post(self, path: str, payload: dict[str, Any]) -> Response:
        body = json.dumps(payload).encode()
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.address}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        for _ in range(10):
            try:
                conn = await self._connect()
                status, answer = await conn.request(head, body)
            except (OSError, ConnectionError, TimeoutError):
                self.close()
                self.tally.retries += 1
                await asyncio.sleep(0.05)
                continue
            if status == 200:
                return {"type": "result"}
            self.tally.errors += 1
            return {"type": "error", "code": f"http_{status}", "message": answer[:200].decode()}
        self.tally.errors += 1
        return {"type": "error", "code": "unreachable"}

    async def _connect(self) -> _Http:
        if self.conn is None or self.conn.closed:
            host, port = parse_address(self.address)
            loop = asyncio.get_running_loop()
            async with asyncio.timeout(self.timeout):
                _, self.conn = await loop.create_connection(_Http, host, port)
        return self.conn

    def check(self, now: float) -> None:
        conn = self.conn
        if (conn is not None and conn.waiter is not None and not conn.waiter.done()
                and now - conn.sent_at > self.timeout):
            self.close()

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()
        self.conn = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def etcd_version() -> str | None:
    binary = shutil.which("etcd")
    if binary is None:
        return None
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    first = out.stdout.splitlines()[0] if out.stdout else "etcd"
    return first.replace("etcd Version: ", "etcd ")


class EtcdCluster:
    """``n`` etcd members on loopback ports in ``base``; stopped (by PID) on exit."""

    def __init__(self, base: Path, n: int = 3) -> None:
        self.base = base
        ports = free_ports(2 * n)
        self.client_ports = ports[:n]
        self.peer_ports = ports[n:]
        self.names = [f"e{k + 1}" for k in range(n)]
        self.endpoints = [f"{HOST}:{p}" for p in self.client_ports]
        self.procs: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> Self:
        binary = shutil.which("etcd")
        if binary is None:
            raise RuntimeError("etcd is not installed")
        initial = ",".join(f"{name}=http://{HOST}:{p}"
                           for name, p in zip(self.names, self.peer_ports, strict=True))
        for name, cport, pport in zip(self.names, self.client_ports, self.peer_ports,
                                      strict=True):
            log = open(self.base / f"{name}.log", "wb")
            self.procs.append(subprocess.Popen([
                binary, "--name", name, "--data-dir", str(self.base / name),
                "--listen-client-urls", f"http://{HOST}:{cport}",
                "--advertise-client-urls", f"http://{HOST}:{cport}",
                "--listen-peer-urls", f"http://{HOST}:{pport}",
                "--initial-advertise-peer-urls", f"http://{HOST}:{pport}",
                "--initial-cluster", initial, "--initial-cluster-state", "new",
                "--initial-cluster-token", "rafty-bench-peers", "--log-level", "warn",
            ], stdin=subprocess.DEVNULL, stdout=log, stderr=log))
            log.close()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def pids(self) -> dict[str, int]:
        return {e: p.pid for e, p in zip(self.endpoints, self.procs, strict=True)}

    def _status(self, endpoint: str) -> dict[str, Any] | None:
        request = urllib.request.Request(f"http://{endpoint}/v3/maintenance/status", data=b"{}",
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                answer: dict[str, Any] = json.load(response)
                return answer
        except OSError:
            return None

    def wait_leader(self) -> str:
        """The client endpoint of the leader, once every member answers and agrees."""
        deadline = time.monotonic() + READY_S
        while time.monotonic() < deadline:
            states = [self._status(e) for e in self.endpoints]
            if all(s is not None for s in states):
                leaders = {s.get("leader") for s in states if s is not None}
                if len(leaders) == 1 and None not in leaders:
                    (leader,) = leaders
                    for endpoint, s in zip(self.endpoints, states, strict=True):
                        if s is not None and s["header"]["member_id"] == leader:
                            return endpoint
            time.sleep(0.2)
        raise RuntimeError(f"etcd did not elect a leader within {READY_S:g}s (logs in {self.base})")

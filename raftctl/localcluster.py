"""LocalCluster: real ``raftd start`` processes on 127.0.0.1, for the demo, benchmarks and tests.

    with LocalCluster(3, tmp_path) as cluster:
        cluster.start_all()
        leader = cluster.wait_for_leader(timeout=10)
        cluster.kill(leader)                      # SIGKILL by default
        cluster.wait_for_leader(timeout=10)

Node ``i`` (0-based) uses ``base_dir/node{i+1}.toml``, keeps its data in ``base_dir/data/n{i+1}``
and writes its stdout and stderr to ``base_dir/node{i+1}.log`` (appended across restarts). The
configs come from the same code as ``raftd init``. ``add_spare()`` configures one more node
outside the initial members (it starts blank, for ``raftctl add-node``). Only processes this
object started are ever signalled, by PID.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import raftd
from raftctl.errors import RaftctlError
from raftctl.survey import collect_status
from raftd.config import (
    LOOPBACK_DATAGRAM_BYTES,
    SECRET_FILE_NAME,
    new_secret,
    render_node_config,
    write_cluster_configs,
)

HOST = "127.0.0.1"
_POLL_INTERVAL = 0.05
_SOURCE_ROOT = Path(raftd.__file__).resolve().parent.parent


@contextlib.contextmanager
def scratch_dir(prefix: str, keep_on: tuple[type[BaseException], ...]) -> Iterator[Path]:
    """A temporary directory for a cluster, removed afterwards unless one of ``keep_on``
    escapes: those errors name the node logs inside it, which must still be there to read."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield base
    except keep_on:
        raise
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    shutil.rmtree(base, ignore_errors=True)


def free_ports(count: int, host: str = HOST) -> list[int]:
    """`count` distinct ports free for both TCP and UDP on `host` right now.

    A node binds UDP (peers) and TCP (clients) on one port, so both are reserved together;
    all stay bound until every port is chosen, so none is handed out twice. The ports lie
    below the kernel's ephemeral range: a port from that range can become the source port of
    any outgoing connection or datagram socket on the machine while a killed node is down,
    and the node's restart would then fail with "address in use".
    """
    rng = random.Random(os.urandom(8))  # parallel test runs draw different ports
    below = _ephemeral_low() - 1
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(100 * count):
            port = rng.randint(_LOWEST_PORT, below)
            if port in ports:
                continue
            tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            held += [tcp, udp]
            try:
                tcp.bind((host, port))
                udp.bind((host, port))
            except OSError:
                continue  # taken on one side: draw another
            ports.append(port)
            if len(ports) == count:
                return ports
        raise OSError(f"no {count} free ports between {_LOWEST_PORT} and {below} on {host}")
    finally:
        for sock in held:
            sock.close()


_LOWEST_PORT = 10000


def _ephemeral_low(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> int:
    """The lowest port the kernel hands out as a source port (32768 when it does not say)."""
    try:
        with open(path, encoding="ascii") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
    return max(low, _LOWEST_PORT + 1000)


class LocalCluster:
    def __init__(
        self,
        n: int,
        base_dir: str | os.PathLike[str],
        *,
        fsync: bool = True,
        extra_raft_config: Mapping[str, Any] | None = None,
        metrics: bool = False,
        federated: Mapping[str, Any] | None = None,
        secret: bool = False,
        security: Mapping[str, str] | None = None,
        access: Mapping[str, Any] | None = None,
    ) -> None:
        """``metrics``: each node also serves Prometheus metrics (``metrics_endpoints[i]``).
        ``federated``: keys of every node's ``[federated]`` section (e.g. ``enabled=True``).
        ``secret``: peers authenticate every datagram with a fresh key (``secret_path``).
        ``security``: every node's ``[security]`` section (file paths); ``access``: what this
        object's own clients need then (``token``, ``tls``... of ``AsyncClient``)."""
        self.base_dir = Path(base_dir)
        ports = free_ports(2 * n if metrics else n)  # all drawn at once: never the same twice
        self.endpoints = [f"{HOST}:{port}" for port in ports[:n]]
        self.metrics_endpoints = [f"{HOST}:{port}" for port in ports[n:]]
        raft: dict[str, Any] = {} if fsync else {"fsync": False}
        raft.update(extra_raft_config or {})
        self.members = list(self.endpoints)
        """The initial voters."""
        self._raft = {"max_datagram_bytes": LOOPBACK_DATAGRAM_BYTES, **raft}
        self.secret_path = self.base_dir / SECRET_FILE_NAME if secret else None
        self.config_paths = write_cluster_configs(self.base_dir, self.endpoints, raft=raft,
                                                  secret=new_secret() if secret else None)
        for path, address in zip(self.config_paths, self.metrics_endpoints, strict=False):
            with open(path, "a", encoding="utf-8") as f:
                f.write(f'\n[metrics]\naddress = "{address}"\n')
        # JSON renders these scalars (bool, int, float) exactly as TOML spells them.
        lines = "".join(f"{key} = {json.dumps(value)}\n"
                        for key, value in (federated or {}).items())
        self._extra = f"\n[federated]\n{lines}" if federated else ""
        if security:
            self._extra += "\n[security]\n" + "".join(
                f"{key} = {json.dumps(str(value))}\n" for key, value in security.items())
        self.access = dict(access or {})
        for path in self.config_paths:
            with open(path, "a", encoding="utf-8") as f:
                f.write(self._extra)
        self.log_paths = [self.base_dir / f"node{k}.log" for k in range(1, n + 1)]
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self._logs: list[IO[bytes] | None] = [None] * n

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

    def __len__(self) -> int:
        return len(self.endpoints)

    def add_spare(self) -> int:
        """Configure one more node, not among the initial members; returns its index.

        Started (``start(i)``) with its empty data dir it waits, blank, to be added to the
        cluster (``raftctl add-node``).
        """
        address = self.endpoints[0]
        while address in self.endpoints:  # a stopped node's port may be handed out again
            address = f"{HOST}:{free_ports(1)[0]}"
        k = len(self) + 1
        path = self.base_dir / f"node{k}.toml"
        secret_file = SECRET_FILE_NAME if self.secret_path is not None else None
        path.write_text(render_node_config(address, f"data/n{k}", self.members, self._raft,
                                           secret_file=secret_file) + self._extra)
        self.endpoints.append(address)
        self.config_paths.append(path)
        self.log_paths.append(self.base_dir / f"node{k}.log")
        self._procs.append(None)
        self._logs.append(None)
        return k - 1

    # -- processes ------------------------------------------------------------------------------

    def start(self, i: int) -> None:
        """Start node `i` (again); a no-op while it runs."""
        if self.is_running(i):
            return
        self._close_log(i)
        log = open(self.log_paths[i], "ab")
        self._logs[i] = log
        env = dict(os.environ)
        # Works from a source checkout too, not only from an installed package.
        paths = [str(_SOURCE_ROOT), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self._procs[i] = subprocess.Popen(
            [sys.executable, "-m", "raftd", "start", "--config", str(self.config_paths[i])],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=self.base_dir,
            env=env,
        )

    def start_all(self) -> None:
        for i in range(len(self)):
            self.start(i)

    def is_running(self, i: int) -> bool:
        proc = self._procs[i]
        return proc is not None and proc.poll() is None

    def pid(self, i: int) -> int | None:
        proc = self._procs[i]
        return proc.pid if proc is not None else None

    def kill(self, i: int, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to node `i`; for SIGKILL also wait until it is gone."""
        proc = self._procs[i]
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        if sig == signal.SIGKILL:
            proc.wait()

    def wait(self, i: int, timeout: float) -> int:
        """Node `i`'s exit status once it exits; TimeoutError after `timeout` seconds."""
        proc = self._procs[i]
        if proc is None:
            raise ValueError(f"node {i} was never started")
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"node {i} still running after {timeout:g}s") from None

    def stop_all(self, timeout: float = 10.0) -> None:
        """SIGTERM every running node, then SIGKILL those still running at the deadline."""
        running = [i for i in range(len(self)) if self.is_running(i)]
        for i in running:
            self.kill(i, signal.SIGTERM)
            self.kill(i, signal.SIGCONT)  # a SIGSTOPped node acts on SIGTERM only once resumed
        deadline = time.monotonic() + timeout
        for i in running:
            try:
                self.wait(i, max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self.kill(i, signal.SIGKILL)
        for i in range(len(self)):
            self._close_log(i)

    def _close_log(self, i: int) -> None:
        log = self._logs[i]
        if log is not None:
            log.close()
            self._logs[i] = None

    # -- cluster state --------------------------------------------------------------------------

    def leader_index(self, timeout: float = 1.0) -> int | None:
        """The node that leads in the highest term any running node reports, or None."""
        running = [self.endpoints[i] for i in range(len(self)) if self.is_running(i)]
        if not running:
            return None
        try:
            rows = asyncio.run(collect_status(running, timeout, **self.access))
        except RaftctlError:
            return None
        reachable = [r for r in rows if r.reachable and r.term is not None]
        if not reachable:
            return None
        # A deposed leader cut off from the others may still call itself leader in its old term.
        top = max(r.term for r in reachable if r.term is not None)
        for row in reachable:
            if row.role == "leader" and row.term == top and row.address in running:
                return self.endpoints.index(row.address)
        return None

    def wait_for_leader(self, timeout: float = 10.0) -> int:
        """Poll until a leader is known (see `leader_index`); TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logs = ", ".join(str(p) for p in self.log_paths)
                raise TimeoutError(f"no leader elected within {timeout:g}s (node logs: {logs})")
            leader = self.leader_index(timeout=min(1.0, remaining))
            if leader is not None:
                return leader
            time.sleep(min(_POLL_INTERVAL, max(0.0, deadline - time.monotonic())))

"""A cluster on IPv6 loopback: node ids are written [addr]:port, and clients use them as given.

``raftd init --host ::1`` names the nodes ``[::1]:PORT``; ``raftctl -e`` takes the same form,
and a follower's redirect names the leader that way too, so the client must connect to it.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from raftctl import Client
from tests.integration.conftest import _active
from tests.integration.helpers import DEADLINE, leader_and_term, wait_until

NODES = 3


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback here")


def free_v6_base_port(n: int) -> int:
    """A port P with P .. P+n-1 free on ::1 for both TCP and UDP (``raftd init`` numbers the
    nodes from a base port)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 30000)
        try:
            for port in range(base, base + n):
                for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                    with socket.socket(socket.AF_INET6, kind) as sock:
                        sock.bind(("::1", port))
        except OSError:
            continue
        return base
    raise AssertionError("no run of free IPv6 ports")


class V6Cluster:
    """The nodes of ``raftd init --host ::1`` (LocalCluster only binds 127.0.0.1), with what
    of LocalCluster the helpers (``leader_and_term``) and conftest's failure report read."""

    def __init__(self, base_dir: Path, base_port: int) -> None:
        self.base_dir = base_dir
        self.endpoints = [f"[::1]:{base_port + k}" for k in range(NODES)]
        self.log_paths = [base_dir / f"node{k}.log" for k in range(1, NODES + 1)]
        self.procs: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start_all(self) -> None:
        for k, path in enumerate(self.log_paths, start=1):
            log = open(path, "ab")  # noqa: SIM115 - closed with the node
            config = self.base_dir / f"node{k}.toml"
            self.procs.append((subprocess.Popen(
                [sys.executable, "-m", "raftd", "start", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.base_dir), log))

    def __len__(self) -> int:
        return NODES

    def is_running(self, i: int) -> bool:
        return i < len(self.procs) and self.procs[i][0].poll() is None

    def stop_all(self) -> None:
        for proc, _ in self.procs:
            proc.terminate()
        for proc, log in self.procs:
            try:
                proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


@pytest.fixture
def v6_cluster(tmp_path: Path) -> Iterator[V6Cluster]:
    base = free_v6_base_port(NODES)
    subprocess.run([sys.executable, "-m", "raftd", "init", "-n", str(NODES), "-d", str(tmp_path),
                    "--host", "::1", "--base-port", str(base)], check=True, capture_output=True)
    cluster = V6Cluster(tmp_path, base)
    _active.append(cluster)  # type: ignore[arg-type]  # the report reads only the two lists
    try:
        cluster.start_all()
        yield cluster
    finally:
        try:
            cluster.stop_all()
        finally:
            _active.remove(cluster)  # type: ignore[arg-type]


def test_clients_reach_an_ipv6_cluster_and_follow_its_redirects(v6_cluster: V6Cluster) -> None:
    endpoints = v6_cluster.endpoints
    with Client(endpoints, timeout=DEADLINE) as client:
        client.set("v6", "ok")
        lead = client.leader
    assert lead in endpoints, lead

    def redirected() -> tuple[str, str, str | None] | None:
        """(the leader, the follower, the client's cached leader) of one write given only that
        follower, in a term that did not change meanwhile (a busy machine may elect another
        leader: then the write is simply done again, which sets the same value)."""
        index, term = leader_and_term(v6_cluster)  # type: ignore[arg-type]
        leader = endpoints[index]
        follower = next(e for e in endpoints if e != leader)
        # Given only a follower, the write is redirected to "[::1]:PORT" of the leader.
        with Client([follower], timeout=DEADLINE) as client:
            assert client.set("via-follower", 1) > 0
            cached = client.leader
            assert client.get("v6") == "ok" and client.get("via-follower") == 1
        steady = leader_and_term(v6_cluster) == (index, term)  # type: ignore[arg-type]
        return (leader, follower, cached) if steady else None

    leader, follower, cached = wait_until(redirected, "a redirected write within one term")
    assert cached == leader != follower, (cached, leader, follower)
    done = subprocess.run(
        [sys.executable, "-m", "raftctl", "-e", ",".join(endpoints), "-o", "json", "get", "v6"],
        capture_output=True, text=True, timeout=2 * DEADLINE, check=False,
    )
    assert done.returncode == 0 and '"ok"' in done.stdout, done.stderr

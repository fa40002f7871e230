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

import pytest

from raftctl import Client
from tests.integration.helpers import DEADLINE

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


@pytest.fixture
def v6_cluster(tmp_path: Path) -> Iterator[list[str]]:
    base = free_v6_base_port(NODES)
    subprocess.run([sys.executable, "-m", "raftd", "init", "-n", str(NODES), "-d", str(tmp_path),
                    "--host", "::1", "--base-port", str(base)], check=True, capture_output=True)
    procs = []
    try:
        for k in range(1, NODES + 1):
            log = open(tmp_path / f"node{k}.log", "ab")  # noqa: SIM115 - closed with the node
            config = tmp_path / f"node{k}.toml"
            procs.append((subprocess.Popen(
                [sys.executable, "-m", "raftd", "start", "--config", str(config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=tmp_path), log))
        yield [f"[::1]:{base + k}" for k in range(NODES)]
    finally:
        for proc, _ in procs:
            proc.terminate()
        for proc, log in procs:
            try:
                proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()


def test_clients_reach_an_ipv6_cluster_and_follow_its_redirects(v6_cluster: list[str]) -> None:
    endpoints = v6_cluster
    with Client(endpoints, timeout=DEADLINE) as client:
        client.set("v6", "ok")
        lead = client.leader
    assert lead in endpoints, lead
    followers = [e for e in endpoints if e != lead]
    # Given only a follower, the write is redirected to "[::1]:PORT" of the leader.
    with Client(followers[:1], timeout=DEADLINE) as client:
        assert client.set("via-follower", 1) > 0
        assert client.get("v6") == "ok" and client.get("via-follower") == 1
    done = subprocess.run(
        [sys.executable, "-m", "raftctl", "-e", ",".join(endpoints), "-o", "json", "get", "v6"],
        capture_output=True, text=True, timeout=2 * DEADLINE, check=False,
    )
    assert done.returncode == 0 and '"ok"' in done.stdout, done.stderr

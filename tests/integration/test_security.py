"""Security on real processes: authenticated peers against a rogue process, client tokens and
TLS, the input limits, and garbage thrown at a node's TCP and UDP port.

The rogue (``tests.integration.security_rogue``) is a separate process that never sees the
cluster's secret. Every count it reports sending must show up, exactly, in the nodes'
``droppedDatagrams``: nothing it sent was taken for a peer message.
"""

from __future__ import annotations

import json
import os
import random
import resource
import socket
import ssl
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import pytest
from click.testing import CliRunner

from raftctl import Client, Unauthorized
from raftctl.cli import cli as raftctl_cli
from raftctl.localcluster import LocalCluster
from raftd.wire.client import MAX_KEY_BYTES, parse_address
from raftd.wire.limits import MAX_CONNECTIONS, MAX_NESTING_DEPTH, MAX_PENDING_PER_CONNECTION
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import (
    DEADLINE,
    STEADY,
    diagnostic,
    freeze,
    one_shot,
    read_frames,
    thaw,
    wait_diagnostic,
    wait_for_leader,
    wait_until,
)
from tests.unit.security.certs import Pki, make_pki

TOKEN = "test-client-token-0123456789abcdef"


def run_rogue(cluster: LocalCluster, leader: int, *args: str) -> dict[str, Any]:
    diag = wait_diagnostic(cluster.endpoints[leader])
    out = subprocess.run(
        [sys.executable, "-m", "tests.integration.security_rogue",
         "--members", ",".join(cluster.endpoints), "--leader", cluster.endpoints[leader],
         "--term", str(diag["persist"]["currentTerm"]),
         "--last-index", str(diag["log"]["lastLogIndex"]), *args],
        capture_output=True, text=True, timeout=DEADLINE, check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    report: dict[str, Any] = json.loads(out.stdout)
    return report


def dropped(cluster: LocalCluster) -> dict[str, dict[str, int]] | None:
    """Every node's drop counters, or None (poll again) while one of them does not answer."""
    out = {}
    for endpoint in cluster.endpoints:
        diag = diagnostic(endpoint)
        if diag is None:
            return None
        out[endpoint] = diag["droppedDatagrams"]
    return out


def wait_dropped(cluster: LocalCluster) -> dict[str, dict[str, int]]:
    return wait_until(lambda: dropped(cluster), "every node's drop counters")


def wait_for_drops(cluster: LocalCluster, before: dict[str, dict[str, int]],
                   expected: dict[str, Counter[str]]) -> dict[str, Counter[str]]:
    """Wait until every node counted exactly ``expected`` more drops per reason."""
    def probe() -> dict[str, Counter[str]] | None:
        now = dropped(cluster)
        if now is None:
            return None
        delta = {ep: Counter({r: now[ep][r] - before[ep].get(r, 0) for r in now[ep]
                              if now[ep][r] != before[ep].get(r, 0)}) for ep in now}
        return delta if delta == expected else None

    return wait_until(probe, f"drop counters to grow by {expected}")


def terms_and_leaders(cluster: LocalCluster) -> set[tuple[int, str]] | None:
    """Every node's (term, leader), or None (poll again) while one of them does not answer."""
    answers = [diagnostic(ep) for ep in cluster.endpoints]
    if any(a is None for a in answers):
        return None
    return {(a["persist"]["currentTerm"], a["volatile"]["leaderId"]) for a in answers if a}


def wait_terms_and_leaders(cluster: LocalCluster) -> set[tuple[int, str]]:
    return wait_until(lambda: terms_and_leaders(cluster), "every node's term and leader")


def steady_term_and_leader(cluster: LocalCluster) -> tuple[int, int]:
    """Once every node names the same term and leader: that term and the leader's index."""
    def probe() -> tuple[int, int] | None:
        pairs = terms_and_leaders(cluster)
        if pairs is None or len(pairs) != 1:
            return None
        (term, leader_id), = pairs
        if leader_id not in cluster.endpoints:
            return None  # no leader known yet
        return term, cluster.endpoints.index(leader_id)

    return wait_until(probe, "every node to name the same term and leader")


def stale_reads(cluster: LocalCluster, key: str) -> list[Any]:
    values = []
    for endpoint in cluster.endpoints:
        with Client([endpoint], timeout=DEADLINE) as client:
            values.append(client.get(key, "<absent>", consistency="stale"))
    return values


# -- authenticated peers --------------------------------------------------------------------------


def test_a_rogue_without_the_secret_cannot_vote_append_or_disrupt(
    make_secure: ClusterFactory,
) -> None:
    cluster = make_secure(3, secret=True, extra_raft_config=STEADY)
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("before", 1)
    wait_until(lambda: stale_reads(cluster, "before") == [1] * 3, "the write everywhere")
    term, leader = steady_term_and_leader(cluster)
    steady = {(term, cluster.endpoints[leader])}

    # 1. Plain and foreign-cluster datagrams: votes, appends, heartbeats in a huge term,
    # TimeoutNow in the current one, a snapshot making the rogue the only voter.
    before = wait_dropped(cluster)
    report = run_rogue(cluster, leader)
    expected = {ep: Counter({"unauthenticated": n["plain"], "foreign_cluster": n["foreign"]})
                for ep, n in report["sent"].items()}
    wait_for_drops(cluster, before, expected)
    assert wait_terms_and_leaders(cluster) == steady
    assert stale_reads(cluster, "rogue") == ["<absent>"] * 3
    print(f"rogue, plain and foreign: {sum(n['plain'] for n in report['sent'].values())} "
          f"unauthenticated, {sum(n['foreign'] for n in report['sent'].values())} "
          "foreign-cluster datagrams dropped")

    # 2. The cluster's own datagrams, captured off the loopback interface: replayed as they
    # are, and re-tagged under the real cluster id (a forgery).
    before = wait_dropped(cluster)
    report = run_rogue(cluster, leader, "--capture-seconds", "1", "--repeat", "2")
    if "capture_error" in report:
        pytest.skip(f"part 1 passed; captured-datagram replay not run: {report['capture_error']}")
    assert report["captured"] > 0
    expected = {ep: Counter({"unauthenticated": n["plain"] + n["forged"],
                             "foreign_cluster": n["foreign"], "replayed": n["replayed"]})
                for ep, n in report["sent"].items()}
    wait_for_drops(cluster, before, expected)
    assert wait_terms_and_leaders(cluster) == steady
    assert stale_reads(cluster, "rogue") == ["<absent>"] * 3
    assert all(cluster.is_running(i) for i in range(3))
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("after", 2)
        assert client.get("before") == 1
    sent = report["sent"].values()
    print(f"rogue, captured {report['captured']}: {sum(n['replayed'] for n in sent)} replayed, "
          f"{sum(n['forged'] for n in sent)} forged datagrams dropped")


def test_the_same_rogue_disrupts_a_cluster_without_a_secret(make_secure: ClusterFactory) -> None:
    """The control: the rogue's messages are real Raft; only the secret keeps them out."""
    cluster = make_secure(3)
    term, leader = steady_term_and_leader(cluster)
    run_rogue(cluster, leader, "--kinds", "timeout_now", "--repeat", "1")
    wait_until(lambda: (pairs := terms_and_leaders(cluster)) and max(t for t, _ in pairs) > term,
               "a spoofed TimeoutNow to force an election")


def test_a_restarted_peer_is_heard_again_at_once(make_secure: ClusterFactory) -> None:
    cluster = make_secure(3, secret=True)
    leader = wait_for_leader(cluster)
    follower = (leader + 1) % 3
    cluster.kill(follower)
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("while-down", 1)
    cluster.start(follower)  # a new process: a new epoch, counters from 0 again
    wait_until(lambda: stale_reads(cluster, "while-down") == [1] * 3, "the restarted follower")
    cluster.kill(leader)  # and the others hear the old leader's successor
    wait_for_leader(cluster, [i for i in range(3) if i != leader])
    cluster.start(leader)
    wait_for_leader(cluster)
    assert all(d["replayed"] == 0 and d["unauthenticated"] == 0
               for d in wait_dropped(cluster).values())


# -- client access: token and TLS -----------------------------------------------------------------


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


def token_file(directory: Path) -> Path:
    path = directory / "client.token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    return path


def tls_socket(endpoint: str, pki: Pki, *, cert: bool = True) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    host, port = parse_address(endpoint)
    raw = socket.create_connection((host, port), timeout=DEADLINE)
    return context.wrap_socket(raw, server_hostname=host)


def test_tokens_and_mutual_tls(make_secure: ClusterFactory, pki: Pki, tmp_path: Path) -> None:
    access = {"token": TOKEN, "cacert": str(pki.ca), "cert": str(pki.client_cert),
              "key": str(pki.client_key)}
    cluster = make_secure(3, secret=True, access=access, security={
        "client_token_file": str(token_file(tmp_path)), "tls_cert": str(pki.node_cert),
        "tls_key": str(pki.node_key), "tls_ca": str(pki.ca)})
    eps = ",".join(cluster.endpoints)
    tls_args = ["--cacert", str(pki.ca), "--cert", str(pki.client_cert), "--key",
                str(pki.client_key)]
    runner = CliRunner()

    def raftctl(*args: str, env: dict[str, str] | None = None, timeout: float = DEADLINE) -> Any:
        return runner.invoke(raftctl_cli, ["-e", eps, "--timeout", str(timeout), *args], env=env)

    # A node refusing the handshake looks unreachable: those attempts time out (exit 3), so
    # they get a short deadline (a longer one changes nothing but the wait).
    refused = 1.0

    ok = raftctl("--token", TOKEN, *tls_args, "set", "k", "v")
    assert ok.exit_code == 0, ok.output
    ok = raftctl(*tls_args, "get", "k", env={"RAFTCTL_TOKEN": TOKEN})
    assert (ok.exit_code, ok.stdout) == (0, "v\n"), ok.output

    # The access options may follow the verb too, and win there; --key and its --cert may be
    # on either side.
    after = raftctl("--token", "guess", "get", "k", "--token", TOKEN, *tls_args)
    assert (after.exit_code, after.stdout) == (0, "v\n"), after.output
    split = raftctl("--token", TOKEN, "--cacert", str(pki.ca), "--key", str(pki.client_key),
                    "get", "k", "--cert", str(pki.client_cert))
    assert (split.exit_code, split.stdout) == (0, "v\n"), split.output

    bad = raftctl("--token", "guess", *tls_args, "get", "k")
    assert bad.exit_code == 1 and "unauthorized" in bad.stderr
    bad = raftctl(*tls_args, "get", "k")  # no token at all
    assert bad.exit_code == 1 and "unauthorized" in bad.stderr
    no_cert = raftctl("--token", TOKEN, "--cacert", str(pki.ca), "get", "k", timeout=refused)
    assert no_cert.exit_code == 3, no_cert.output
    wrong_ca = raftctl("--token", TOKEN, "--cacert", str(pki.rogue_ca), "--cert",
                       str(pki.client_cert), "--key", str(pki.client_key), "get", "k",
                       timeout=refused)
    assert wrong_ca.exit_code == 3 and "certificate verify failed" in wrong_ca.stderr
    rogue_cert = raftctl("--token", TOKEN, "--cacert", str(pki.ca), "--cert",
                         str(pki.rogue_cert), "--key", str(pki.rogue_key), "get", "k",
                         timeout=refused)
    assert rogue_cert.exit_code == 3
    plain = raftctl("--token", TOKEN, "get", "k", timeout=refused)  # no TLS to a TLS port
    assert plain.exit_code == 3
    assert "before answering (does it require TLS? --tls, --cacert)" in plain.stderr, plain.stderr

    # Raw attempts with bad tokens, pipelined on one TLS connection: each is answered
    # unauthorized with its id and the connection survives; the right token then works.
    endpoint = cluster.endpoints[0]
    attempts = [{"type": "get", "key": "k", "id": 1},
                {"type": "get", "key": "k", "id": 2, "token": "x" * len(TOKEN)},
                {"type": "get", "key": "k", "id": 3, "token": TOKEN[:-1]},
                {"type": "get", "key": "k", "id": 4, "token": 12345},
                {"type": "diagnostic", "id": 5, "token": TOKEN.upper()}]
    with tls_socket(endpoint, pki) as sock:
        sock.sendall(b"".join(msgpack.packb(a) for a in attempts))
        answers = read_frames(sock, len(attempts))
        assert [(a["id"], a["code"]) for a in answers] == [(i, "unauthorized") for i in range(1, 6)]
        sock.sendall(msgpack.packb({"type": "get", "key": "k", "id": 6, "token": TOKEN,
                                    "consistency": "stale"}))
        (answer,) = read_frames(sock, 1)
        assert (answer["id"], answer["value"]) == (6, "v")
    with tls_socket(endpoint, pki) as sock:  # without an id: answered, then closed
        sock.sendall(msgpack.packb({"type": "get", "key": "k"}))
        assert [f["code"] for f in read_frames(sock)] == ["unauthorized"]

    with Client(cluster.endpoints, timeout=DEADLINE, **access) as client:
        counts = [client.diagnostic(ep)["clientRejected"]["unauthorized"]
                  for ep in cluster.endpoints]
        with Client(cluster.endpoints, timeout=5, **{**access, "token": "nope"}) as stranger, \
                pytest.raises(Unauthorized):
            stranger.get("k")
        assert client.get("k") == "v"
    print(f"bad-token attempts rejected: {sum(counts)} (per node {counts})")
    assert sum(counts) >= 2 + len(attempts) + 1
    assert all(cluster.is_running(i) for i in range(3))


def test_status_and_health_without_the_token_exit_1_unauthorized(
    make_secure: ClusterFactory, tmp_path: Path
) -> None:
    """Nodes that answer ``unauthorized`` are reachable: the message says why (exit 1), not
    "no node reachable" (exit 3)."""
    cluster = make_secure(1, access={"token": TOKEN},
                          security={"client_token_file": str(token_file(tmp_path))})
    eps = ",".join(cluster.endpoints)
    runner = CliRunner()
    # A watch too: no retry brings the token, so it ends like status instead of trying forever.
    for verb in ("status", "health", "diagnostic", "status --watch 1", "-o json status -w 1"):
        bad = runner.invoke(raftctl_cli, ["-e", eps, *verb.split()])
        assert (bad.exit_code, bad.stdout) == (1, ""), bad.output
        assert bad.stderr == ("Error: the cluster answered with an error: unauthorized: "
                              "this node requires a client token (raftctl --token)\n")
        if "watch" not in verb and "-w" not in verb.split():
            ok = runner.invoke(raftctl_cli, ["-e", eps, "--token", TOKEN, verb])
            assert ok.exit_code == 0, ok.output


def test_a_node_with_unusable_tls_files_does_not_start(
    make_secure: ClusterFactory, tmp_path: Path
) -> None:
    (tmp_path / "bad.crt").write_text("not a certificate")
    cluster = make_secure(1, start=False, security={
        "tls_cert": str(tmp_path / "bad.crt"), "tls_key": str(tmp_path / "bad.crt")})
    cluster.start(0)
    assert cluster.wait(0, DEADLINE) == 1
    assert "TLS files unusable" in cluster.log_paths[0].read_text()


# -- limits ---------------------------------------------------------------------------------------


def rejected(endpoint: str) -> dict[str, int]:
    diag = wait_diagnostic(endpoint)
    counts: dict[str, int] = diag["clientRejected"]
    return counts


def nested(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def test_every_limit_answers_its_error_code_and_is_counted(make_secure: ClusterFactory) -> None:
    cluster = make_secure(1, extra_raft_config={"max_entry_bytes": 100_000})
    endpoint = cluster.endpoints[0]
    base = rejected(endpoint)
    frames = {
        "nesting_too_deep": {"type": "append", "id": 1, "data": {
            "action": "change", "key": "deep", "value": nested(MAX_NESTING_DEPTH)}},
        "field_too_large": {"type": "get", "id": 2, "key": "k" * (MAX_KEY_BYTES + 1)},
        "bad_request": {"type": "get", "id": 3, "key": 7},
    }
    with socket.create_connection(parse_address(endpoint), timeout=DEADLINE) as sock:
        for reason, frame in frames.items():
            sock.sendall(msgpack.packb(frame))
            (answer,) = read_frames(sock, 1)
            code = "bad_request" if reason == "bad_request" else "too_large"
            assert (answer["id"], answer["code"]) == (frame["id"], code), answer
        # The connection survived all three; a value nested one level less is fine.
        sock.sendall(msgpack.packb({"type": "append", "id": 4, "data": {
            "action": "change", "key": "deep", "value": nested(MAX_NESTING_DEPTH - 2)}}))
        (answer,) = read_frames(sock, 1)
        assert answer["success"] is True, answer
    # A value over max_entry_bytes (the node's answer), and a frame over the frame limit.
    (answer,) = one_shot(endpoint, {"type": "append", "data": {
        "action": "change", "key": "big", "value": b"x" * (100_000 + 2 * MAX_KEY_BYTES)}})
    assert answer["code"] == "too_large"
    (answer,) = one_shot(endpoint, msgpack.packb({"type": "append", "data": {
        "action": "change", "key": "huge", "value": b"x" * 200_000}}))
    assert answer["code"] == "too_large"
    assert answer["message"].endswith("a value may have up to max_entry_bytes (100000 bytes)")
    counts = rejected(endpoint)
    assert {r: counts[r] - base[r] for r in counts if counts[r] != base[r]} == {
        "nesting_too_deep": 1, "field_too_large": 1, "bad_request": 1, "value_too_large": 1,
        "frame_too_large": 1}


def test_pending_requests_beyond_the_limit_are_overloaded(make_secure: ClusterFactory) -> None:
    # CheckQuorum would depose the leader one election timeout into the freeze, and its pending
    # writes would then answer not_leader: the timeout must outlast the whole freeze.
    cluster = make_secure(3, extra_raft_config={"election_timeout_ms": [5000, 10000]})
    leader = wait_for_leader(cluster)
    followers = [i for i in range(3) if i != leader]
    extra = 20
    total = MAX_PENDING_PER_CONNECTION + extra
    writes = b"".join(msgpack.packb({"type": "append", "id": i, "data": {
        "action": "change", "key": f"p{i}", "value": i}}) for i in range(1, total + 1))
    for f in followers:
        freeze(cluster, f)  # no quorum: every write stays pending on the leader
    try:
        with socket.create_connection(parse_address(cluster.endpoints[leader]),
                                      timeout=DEADLINE) as sock:
            sock.sendall(writes)
            early = read_frames(sock, extra)
            assert sorted(a["id"] for a in early) == list(range(total - extra + 1, total + 1))
            assert {a["code"] for a in early} == {"overloaded"}
            assert all(a["retryable"] for a in early)
            for f in followers:
                thaw(cluster, f)
            late = read_frames(sock, total - extra)  # committed, or timed out while frozen
            assert {a["id"] for a in late} == set(range(1, total - extra + 1))
            assert not any(a.get("code") == "overloaded" for a in late)
    finally:
        for f in followers:
            thaw(cluster, f)
    assert rejected(cluster.endpoints[leader])["too_many_pending"] == extra


def test_connections_beyond_the_limit_are_overloaded_and_closed(
    make_secure: ClusterFactory,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = MAX_CONNECTIONS + 256
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            pytest.skip(f"RLIMIT_NOFILE hard limit {hard} < {need}: cannot hold the connections")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))  # inherited by the node
    cluster = make_secure(1)
    endpoint = cluster.endpoints[0]
    held: list[socket.socket] = []
    try:
        for _ in range(MAX_CONNECTIONS):
            held.append(socket.create_connection(parse_address(endpoint), timeout=DEADLINE))
        held[-1].sendall(msgpack.packb({"type": "diagnostic", "id": 1}))
        (answer,) = read_frames(held[-1], 1)  # the last one admitted is served
        assert answer["clientConnections"] == MAX_CONNECTIONS
        with socket.create_connection(parse_address(endpoint), timeout=DEADLINE) as extra:
            frames = read_frames(extra)  # answered at once, then closed by the node
        assert [f["code"] for f in frames] == ["overloaded"]
    finally:
        for sock in held:
            sock.close()
    wait_until(lambda: (d := diagnostic(endpoint)) and d["clientConnections"] <= 1,
               "the node to notice the closed connections")
    assert rejected(endpoint)["too_many_connections"] == 1


# -- garbage --------------------------------------------------------------------------------------


GARBAGE_SEED = int(os.environ.get("GARBAGE_SEED") or 20240611)
"""Seed of the garbage thrown at a node: fixed, so that a failure in CI replays exactly;
the ``GARBAGE_SEED`` environment variable tries another."""


def garbage(rng: random.Random) -> bytes:
    """Random bytes, or something close to a message: truncated, nested, mistyped."""
    choice = rng.randrange(6)
    if choice == 0:
        return rng.randbytes(rng.randrange(1, 2000))
    if choice == 1:
        return msgpack.packb({"v": nested(rng.randrange(900, 1020))})
    if choice == 2:
        return msgpack.packb({"type": nested(1000), "id": 1})
    if choice == 3:
        good = msgpack.packb({"v": 1, "type": "app", "term": 1, "src": "a", "dst": "b",
                              "prev_log_index": 0, "prev_log_term": 0, "entries": [],
                              "leader_commit": 0})
        return good[:rng.randrange(len(good))]
    if choice == 4:
        # Fragment ACKs, sealed datagrams and unknown kinds (random DATA headers are the
        # fragment unit tests' business: a plausible one starts a reassembly, not a drop).
        kind = rng.choice((0, 2, 3, 7))
        return bytes((0xC1, 1, kind, 0)) + rng.randbytes(rng.randrange(60))
    return b"\xdd\xff\xff\xff\xff" + rng.randbytes(rng.randrange(100))  # a huge array header


@pytest.mark.parametrize("secret", [False, True], ids=["plain", "secret"])
def test_garbage_on_tcp_and_udp_never_stops_a_node(make_secure: ClusterFactory,
                                                   secret: bool) -> None:
    seed = GARBAGE_SEED
    print(f"garbage seed {seed} (GARBAGE_SEED={seed} replays it)")
    rng = random.Random(seed)
    cluster = make_secure(3, secret=secret)
    target = cluster.endpoints[wait_for_leader(cluster)]
    address = parse_address(target)

    def counted() -> int | None:
        diag = diagnostic(target)
        return None if diag is None else sum(diag["droppedDatagrams"].values())

    base = wait_until(counted, "the target's drop counters")
    # In batches, each counted before the next is sent: a node starved of CPU must not find
    # its receive buffer (SO_RCVBUF, capped by net.core.rmem_max) overflowing, since the
    # kernel would then drop datagrams the node never sees and so never counts.
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sent_udp = 0
    for _ in range(40):
        for _ in range(50):
            udp.sendto(garbage(rng), address)
            sent_udp += 1
        wait_until(lambda: (n := counted()) is not None and n - base >= sent_udp,
                   f"the target to count {sent_udp} dropped datagrams")
    udp.close()
    for _ in range(200):
        try:
            with socket.create_connection(address, timeout=DEADLINE) as sock:
                for _ in range(rng.randrange(1, 4)):
                    sock.sendall(garbage(rng))
                sock.shutdown(socket.SHUT_WR)
                read_frames(sock)
        except OSError:
            pass  # the node may close first (reset, broken pipe): that is its right
    assert all(cluster.is_running(i) for i in range(3)), f"seed {seed}"
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("still", "serving")
        assert client.get("still") == "serving"
    drops = wait_dropped(cluster)[target]
    total = sum(drops.values()) - base
    print(f"{sent_udp} garbage datagrams, {total} counted as dropped: {drops}")
    assert total == sent_udp, f"seed {seed}: {drops}"
    log = cluster.log_paths[cluster.endpoints.index(target)].read_text()
    assert "Traceback" not in log, f"seed {seed}"

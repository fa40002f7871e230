"""The client library and the client wire protocol against real nodes."""

from __future__ import annotations

import asyncio
import socket
import threading
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from raftctl import AsyncClient, Client, ClusterUnavailable, TooLarge, Unauthorized
from raftctl.errors import InvalidArgument
from raftctl.localcluster import LocalCluster, free_ports
from raftd.wire.client import parse_address
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import (
    DEADLINE,
    diagnostic,
    leader_and_term,
    leader_diagnostic,
    one_shot,
    read_frames,
    wait_for_leader,
    wait_until,
)

BIGGER_THAN_A_DATAGRAM = 70_000
"""Loopback clusters raise max_datagram_bytes to 65000 (raftd.config.LOOPBACK_DATAGRAM_BYTES)."""
TOO_LARGE = 1_048_576 + 1024
"""Above the default max_entry_bytes (1 MiB), below the frame limit (max_entry_bytes + 64 KiB)."""


def settled_revision(cluster: LocalCluster) -> int:
    """The state machine revision (one more per applied write) of the current leader, once it
    has committed and applied its whole log: every write committed so far, whoever led."""
    def probe() -> int | None:
        found = leader_diagnostic(cluster)
        if found is None:
            return None
        diag = found[1]
        log = diag["log"]
        settled = log["appliedIndex"] >= log["commitIndex"] >= log["lastLogIndex"]
        return int(diag["revision"]) if settled else None

    return wait_until(probe, "the leader to apply its whole log")


def to_leader(cluster: LocalCluster, request: dict[str, object]) -> dict[str, object]:
    """The answer of the current leader to ``request``, sent in a connection of its own (no
    ``id``): re-sent to the leader of the moment while the answer is a redirect or a retryable
    error (leadership moved, an election). Only a write in a session may be sent that way: the
    session answers a resent (client_id, seq) from its cache, never applying it twice."""
    def probe() -> dict[str, object] | None:
        [answer] = one_shot(cluster.endpoints[wait_for_leader(cluster)], request)
        if answer["type"] == "redirect" or answer.get("retryable"):
            return None
        return answer

    return wait_until(probe, f"the leader's answer to {request}")


def connect(endpoint: str) -> socket.socket:
    return socket.create_connection(parse_address(endpoint), timeout=DEADLINE)


def send(sock: socket.socket, request: dict[str, object]) -> None:
    sock.sendall(msgpack.packb(request, use_bin_type=True))


def append(
    key: str, value: object, client_id: str, seq: int, first_unacked: int
) -> dict[str, object]:
    return {"type": "append", "data": {
        "action": "change", "key": key, "value": value,
        "client_id": client_id, "seq": seq, "first_unacked_seq": first_unacked,
    }}


# -- Client ----------------------------------------------------------------------------------------


def test_client_follows_redirect_from_a_follower(cluster: LocalCluster) -> None:
    """Given only followers, the client's write is redirected to the leader, which it caches."""
    def redirected() -> tuple[str, str | None] | None:
        """(the leader, the client's cached leader) of one write through the followers, in
        a term that did not change meanwhile (a busy machine may elect another leader: then
        the write is simply done again, which sets the same value)."""
        leader, term = leader_and_term(cluster)
        followers = [e for i, e in enumerate(cluster.endpoints) if i != leader]
        with Client(followers, timeout=DEADLINE) as client:
            assert client.set("redirected", 1) > 0
            cached = client.leader
            assert client.get("redirected") == 1
        steady = leader_and_term(cluster) == (leader, term)
        return (cluster.endpoints[leader], cached) if steady else None

    leader, cached = wait_until(redirected, "a redirected write within one term")
    assert cached == leader


def test_client_fails_over_when_its_node_is_killed(cluster: LocalCluster) -> None:
    """After the node the client talks to (the leader) is SIGKILLed, the same client writes
    and reads through the newly elected leader."""
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("before", "a")
        old = client.leader
        assert old is not None
        cluster.kill(cluster.endpoints.index(old))
        client.set("after", "b")
        assert client.leader not in (None, old)
        assert client.get("before") == "a"
        assert client.get("after") == "b"


def outcome_within(call: Callable[[], object], deadline: float, what: str) -> BaseException:
    """Run ``call`` in a thread of its own and return the exception it ended with; fail the
    test if it has not ended by ``deadline`` seconds (the thread, a daemon, is left behind)."""
    ended: list[BaseException | None] = []

    def run() -> None:
        try:
            call()
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            ended.append(e)
        else:
            ended.append(None)

    thread = threading.Thread(target=run, name=what, daemon=True)
    thread.start()
    thread.join(deadline)
    if not ended:
        pytest.fail(f"{what} did not give up by itself within {deadline:.0f} s")
    [error] = ended
    if error is None:
        pytest.fail(f"{what} returned although no node is listening")
    return error


def test_client_raises_cluster_unavailable_naming_endpoints() -> None:
    """With nothing listening, every call gives up by itself (at its 1 s timeout; waited for
    with a generous deadline, never timed) with ClusterUnavailable naming each endpoint."""
    endpoints = [f"127.0.0.1:{port}" for port in free_ports(2)]
    with Client(endpoints, timeout=1.0) as client:
        for name, call in (("get", lambda: client.get("k")), ("set", lambda: client.set("k", 1))):
            raised = outcome_within(call, DEADLINE, f"client.{name} with no node up")
            assert isinstance(raised, ClusterUnavailable), repr(raised)
            assert set(raised.endpoints) == set(endpoints)
            assert all(e in str(raised) for e in endpoints)


def test_get_missing_and_delete_found_flag(cluster: LocalCluster) -> None:
    """get of a missing key returns None or the default; delete says whether the key existed."""
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        assert client.get("missing") is None
        assert client.get("missing", 42) == 42
        client.set("doomed", "x")
        assert client.delete("doomed") is True
        assert client.delete("doomed") is False
        assert client.get("doomed", "gone") == "gone"


def test_value_larger_than_a_datagram_is_replicated(cluster: LocalCluster) -> None:
    """A value several datagrams long is accepted and reaches every follower intact."""
    value = bytes(range(256)) * (3 * BIGGER_THAN_A_DATAGRAM // 256)
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("large", value)
        assert client.get("large") == value
    for endpoint in cluster.endpoints:
        with Client([endpoint], timeout=DEADLINE) as local:
            wait_until(lambda: local.get("large", consistency="stale") == value,
                       f"{endpoint} to apply the large value")


def test_write_larger_than_max_entry_bytes_is_too_large(cluster: LocalCluster) -> None:
    """A write above max_entry_bytes is refused with too_large (to the Client, and over a raw
    socket whose connection then survives), is not applied, and the node keeps serving."""
    leader = cluster.endpoints[wait_for_leader(cluster)]
    value = "x" * TOO_LARGE
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        with pytest.raises(TooLarge) as raised:
            client.set("big", value)
        assert raised.value.code == "too_large"
    with connect(leader) as sock:
        send(sock, {"type": "append", "id": 1,
                    "data": {"action": "change", "key": "big", "value": value}})
        [response] = read_frames(sock, 1)
        assert (response["type"], response["code"], response["id"]) == ("error", "too_large", 1)
        send(sock, {"type": "get", "key": "big", "id": 2})
        [after] = read_frames(sock, 1)
        assert (after["id"], after["found"]) == (2, False)
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("small", "fits")
        assert client.get("small") == "fits"


def test_max_entry_bytes_is_the_exact_largest_value(cluster: LocalCluster) -> None:
    """max_entry_bytes (1 MiB by default) counts a string's UTF-8 bytes: a value of exactly
    that size is taken, one byte more is refused, and the error says how big it was."""
    limit = 1_048_576
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        client.set("at-limit", "é" * (limit // 2))  # 2 UTF-8 bytes each
        assert client.get("at-limit") == "é" * (limit // 2)
        with pytest.raises(TooLarge) as raised:
            client.set("over-limit", b"x" * (limit + 1))
        assert f"a value of {limit + 1} bytes exceeds max_entry_bytes ({limit})" in str(
            raised.value)


def test_client_keeps_writing_after_a_refused_first_write(cluster: LocalCluster) -> None:
    """A client whose first write was refused (too_large, so no session was opened on the
    server) can still write, even when its next write is first sent to a follower."""
    leader = wait_for_leader(cluster)
    follower = cluster.endpoints[(leader + 1) % len(cluster)]
    with Client([follower, cluster.endpoints[leader]], timeout=DEADLINE) as client:
        with pytest.raises(TooLarge):
            client.set("big", "x" * TOO_LARGE)
        client.set("after-refusal", 1)
        assert client.get("after-refusal") == 1


def test_values_the_nodes_would_refuse_are_refused_by_the_client(cluster: LocalCluster) -> None:
    """An int key in a map (nodes decode with strict_map_key) or an int beyond 64 bits is a
    client-side InvalidArgument, not the node's bad_request; bytes keys are fine, and a write
    after a refused first one still opens its session."""
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        with pytest.raises(InvalidArgument, match="^cannot encode the value: map keys must be "
                                                  "str or bytes, not int$"):
            client.set("mk", {1: "a"})
        with pytest.raises(InvalidArgument, match="not float$"):
            client.set("mk", [{"a": ({2.5: 1},)}])
        with pytest.raises(InvalidArgument, match=r"integer out of range \(msgpack holds"):
            client.set("mk", [2**64])
        value = {b"raw": [1, {"nested": b"\x00"}], "max": 2**64 - 1, "min": -(2**63)}
        revision = client.set("mk", value)
        assert client.get_item("mk") == ("mk", value, revision)


def test_health_has_one_shape_whichever_node_is_asked(cluster: LocalCluster) -> None:
    """``health()`` (any node, retried) and ``health(address)`` both return the cleaned map."""
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        anywhere = client.health()
        one = client.health(cluster.endpoints[1])
    assert set(anywhere) == set(one) == {"leader", "commit_index"}
    assert anywhere["leader"] in cluster.endpoints and type(one["commit_index"]) is int

    async def both() -> tuple[dict[str, object], dict[str, object]]:
        async with AsyncClient(cluster.endpoints, timeout=DEADLINE) as client:
            return await client.health(), await client.health(cluster.endpoints[2])

    assert all(set(answer) == {"leader", "commit_index"} for answer in asyncio.run(both()))


def test_unauthorized_tells_programs_to_pass_token(
    make_secure: ClusterFactory, tmp_path: Path
) -> None:
    token = "client-token-of-the-api-test-0123"
    token_file = tmp_path / "client.token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    cluster = make_secure(1, access={"token": token},
                          security={"client_token_file": str(token_file)})
    with Client(cluster.endpoints, timeout=DEADLINE) as client, \
            pytest.raises(Unauthorized) as info:
        client.set("k", "v")
    assert "requires a client token" in str(info.value)
    assert "take the token as token=..." in "".join(traceback.format_exception(info.value))
    with Client(cluster.endpoints, timeout=DEADLINE, token=token) as client:
        assert client.set("k", "v") > 0


# -- wire protocol -----------------------------------------------------------------------------


def test_request_without_id_gets_one_response_then_close(cluster: LocalCluster) -> None:
    """A request without ``id`` is answered once (without ``id``) and the server closes."""
    frames = one_shot(cluster.endpoints[0], {"type": "get", "key": "nothing"})
    assert len(frames) == 1
    assert frames[0]["type"] == "result" and frames[0]["found"] is False
    assert "id" not in frames[0]


def test_requests_with_id_are_echoed_on_an_open_connection(cluster: LocalCluster) -> None:
    """Pipelined requests with ``id`` are each answered with their ``id`` and the connection
    stays open for more."""
    with connect(cluster.endpoints[0]) as sock:
        send(sock, {"type": "diagnostic", "id": 7})
        send(sock, {"type": "get", "key": "nothing", "id": 8})
        frames = read_frames(sock, 2)
        assert sorted(f["id"] for f in frames) == [7, 8]
        assert all(f["type"] == "result" for f in frames)
        send(sock, {"type": "get", "key": "nothing", "id": 9})
        [again] = read_frames(sock, 1)
        assert again["id"] == 9


def test_malformed_or_unknown_requests_get_bad_request(cluster: LocalCluster) -> None:
    """An undecodable frame and an unknown request type get ``bad_request``; the node keeps
    serving (the connection too, when the bad request carried an id)."""
    endpoint = cluster.endpoints[0]
    [garbage] = one_shot(endpoint, b"\xc1")  # a byte msgpack never uses
    assert garbage["type"] == "error" and garbage["code"] == "bad_request"
    [unknown] = one_shot(endpoint, {"type": "frobnicate"})
    assert unknown["type"] == "error" and unknown["code"] == "bad_request"
    with connect(endpoint) as sock:
        send(sock, {"type": "frobnicate", "id": 3})
        [error] = read_frames(sock, 1)
        assert (error["type"], error["code"], error["id"]) == ("error", "bad_request", 3)
        send(sock, {"type": "diagnostic", "id": 4})
        [ok] = read_frames(sock, 1)
        assert (ok["type"], ok["id"]) == ("result", 4)
    assert cluster.is_running(0)
    assert diagnostic(endpoint) is not None


def test_retried_write_is_applied_once(cluster: LocalCluster) -> None:
    """The same (client_id, seq) sent twice over raw sockets is applied once: the retry gets
    the cached answer and the revision does not move. Once the client acknowledged it
    (first_unacked_seq past it), resending it gets session_expired (not retryable)."""
    client_id = uuid.uuid4().hex
    first = append("once", "v1", client_id, seq=1, first_unacked=1)

    applied = to_leader(cluster, first)
    assert applied["type"] == "result" and applied["success"] is True
    revision = applied["revision"]
    before = settled_revision(cluster)

    retried = to_leader(cluster, first)
    assert retried == applied
    assert settled_revision(cluster) == before

    second = to_leader(cluster, append("once", "v2", client_id, seq=2, first_unacked=2))
    assert second["success"] is True and second["revision"] > revision
    expired = to_leader(cluster, first)
    assert expired["type"] == "error" and expired["code"] == "session_expired"
    assert expired["retryable"] is False
    with Client(cluster.endpoints, timeout=DEADLINE) as client:
        assert client.get("once") == "v2"
        assert client.get_revision("once") == second["revision"]

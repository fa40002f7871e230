"""Client library behaviour against scripted nodes: revisions, listing, membership, transfer.

Real raftd processes are in tests/integration; here each answer is chosen by the test.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from raftctl import (
    AsyncClient,
    BadRequest,
    Client,
    ClusterUnavailable,
    ConditionFailed,
    Item,
    NoLeader,
    RequestTimeout,
    ServerError,
)
from raftctl.localcluster import free_ports
from tests.unit.client.fakenode import Answer, FakeNode

Response = dict[str, Any]


def ok(**fields: Any) -> Response:
    return {"type": "result", "success": True, **fields}


def error(code: str, message: str = "", retryable: bool = False, **fields: Any) -> Response:
    return {"type": "error", "code": code, "message": message, "retryable": retryable, **fields}


@pytest.fixture
def node() -> Iterator[FakeNode]:
    with FakeNode(lambda request: None) as fake:
        yield fake


def script(fake: FakeNode, answer: Answer) -> Client:
    fake.answer = answer
    return Client([fake.address], timeout=2.0)


def test_get_item_is_value_and_revision_of_one_read(node: FakeNode) -> None:
    def answer(request: Response) -> Response:
        if request["key"] == "k":
            return ok(found=True, value=[1, 2], revision=7)
        return ok(found=False, value=None, revision=0)

    with script(node, answer) as client:
        assert client.get_item("k") == Item("k", [1, 2], 7)
        assert client.get_item("missing") is None
        assert client.get_revision("k") == 7
        assert client.get("missing", "default") == "default"
    assert node.requests[0]["consistency"] == "linearizable"


def test_condition_failed_carries_the_current_revision(node: FakeNode) -> None:
    def answer(request: Response) -> Response:
        assert request["data"]["if_revision"] == 3
        return error("condition_failed", "key 'k' has revision 9", revision=9)

    with script(node, answer) as client, pytest.raises(ConditionFailed) as info:
        client.cas("k", 3, "v")
    assert info.value.revision == 9 and "has revision 9" in str(info.value)
    assert node.types() == ["append"]  # a failed condition is an answer, not retried


def test_items_page_through_a_prefix(node: FakeNode) -> None:
    keys = [f"p/{i:02}" for i in range(5)]

    def answer(request: Response) -> Response:
        after = request.get("after")
        rest = [k for k in keys if after is None or k > after]
        page = rest[: request["limit"]]
        return ok(items=[[k, k.upper(), 1] for k in page], more=len(rest) > len(page))

    with script(node, answer) as client:
        assert [item.key for item in client.items("p/", page_size=2)] == keys
    assert [r.get("after") for r in node.requests] == [None, "p/01", "p/03"]

    async def main() -> list[Item]:
        async with AsyncClient([node.address], timeout=2.0) as client:
            return [item async for item in client.items("p/", page_size=3)]

    assert [item.value for item in asyncio.run(main())] == [k.upper() for k in keys]


def status(leader: str, voters: list[str], learners: list[str] | None = None) -> Response:
    return ok(status="leader", volatile={"leaderId": leader, "address": leader,
                                         "voters": voters, "learners": learners or []})


def test_membership_change_waits_out_a_change_in_progress(node: FakeNode) -> None:
    answers = iter(
        [error("conf_change_in_progress", "one change at a time", retryable=True), ok()]
    )

    def answer(request: Response) -> Response:
        if request["type"] == "diagnostic":
            return status(node.address, [node.address])
        return next(answers)

    with script(node, answer) as client:
        client.add_node("127.0.0.1:7004", learner=True)
    assert node.types() == ["diagnostic", "config", "config"]
    assert node.requests[1] == {
        "type": "config", "action": "add", "address": "127.0.0.1:7004", "learner": True,
        "id": node.requests[1]["id"],
    }


@pytest.mark.parametrize("member", [True, False])
def test_a_retried_removal_told_not_a_member_succeeds_only_if_it_was_one(member: bool) -> None:
    """The first attempt gets no answer (the leader died with it, or a paused node held it);
    the retry hears "not a member". That is the first attempt's doing if the cluster listed
    the node when the command began; otherwise the address was wrong all along."""
    target = "127.0.0.1:7003"
    with FakeNode(lambda r: None) as silent, FakeNode(lambda r: None) as leader:
        voters = [silent.address, leader.address] + ([target] if member else [])

        def silent_leader(request: Response) -> Response | None:
            """Leads when the status is read, then never answers the change."""
            return status(silent.address, voters) if request["type"] == "diagnostic" else None

        silent.answer = silent_leader
        leader.answer = lambda r: error("bad_request", f"{target} is not a member")
        with Client([silent.address, leader.address], timeout=2.0) as client:
            if member:
                client.remove_node(target)
            else:
                with pytest.raises(BadRequest, match="not a member"):
                    client.remove_node(target)
        assert (silent.types(), leader.types()) == (["diagnostic", "config"], ["config"])


def test_a_removal_refused_at_the_first_attempt_is_an_error(node: FakeNode) -> None:
    target = "127.0.0.1:7003"

    def answer(request: Response) -> Response:
        if request["type"] == "diagnostic":
            return status(node.address, [node.address, target])
        return error("bad_request", f"{target} is not a member")

    with script(node, answer) as client, pytest.raises(BadRequest):
        client.remove_node(target)  # the status was stale, and no attempt went unanswered


def test_membership_refusal_raises(node: FakeNode) -> None:
    refusal = error("bad_request", "127.0.0.1:7002 is not a learner")
    with script(node, lambda request: refusal) as client, pytest.raises(BadRequest):
        client.promote("127.0.0.1:7002")
    assert len(node.requests) == 1


def test_transfer_follows_a_redirect_but_never_retries_an_answer() -> None:
    with FakeNode(lambda r: None) as leader, FakeNode(lambda r: None) as follower:
        follower.answer = lambda request: {"type": "redirect", "leader": leader.address}
        leader.answer = lambda request: error("timeout", "the transfer timed out", retryable=True)
        with Client([follower.address], timeout=2.0) as client, pytest.raises(ServerError) as info:
            client.transfer_leader()
        assert info.value.code == "timeout"
        assert (follower.types(), leader.types()) == (["transfer_leader"], ["transfer_leader"])

        leader.answer = lambda request: ok(leader=follower.address)
        with Client([follower.address], timeout=2.0) as client:
            assert client.transfer_leader(follower.address) == follower.address
            assert client.leader == follower.address
        assert leader.requests[-1]["address"] == follower.address


def test_a_transfer_to_a_named_target_is_tried_again_until_it_completes() -> None:
    """A leader gives a transfer one election timeout; under load the target may need
    longer. Asking again is safe when the target is named: it cannot move leadership twice."""
    with FakeNode(lambda r: None) as leader, FakeNode(lambda r: None) as target:
        outcomes = iter([error("timeout", "the transfer timed out", retryable=True),
                         error("not_leader", "leadership lost", retryable=True),
                         ok(leader=target.address)])
        leader.answer = lambda request: next(outcomes)
        with Client([leader.address], timeout=5.0) as client:
            assert client.transfer_leader(target.address) == target.address
        assert leader.types() == ["transfer_leader"] * 3

        leader.answer = lambda request: error("timeout", "the transfer timed out", retryable=True)
        before = len(leader.requests)
        with Client([leader.address], timeout=1.0) as client, pytest.raises(ServerError) as info:
            client.transfer_leader(target.address)
        # The leader's own answer, not a bare client timeout (exit status 1, not 3): no attempt
        # started that the deadline would cut short.
        assert info.value.code == "timeout" and "transfer timed out" in str(info.value)
        assert len(leader.requests) - before >= 3  # tried again meanwhile


def test_a_superseded_transfer_is_not_fought_over() -> None:
    """Another transfer replaced ours: asking again would take leadership back and forth."""
    with FakeNode(lambda r: error("transferring", "superseded by a transfer to X",
                                  retryable=True)) as leader:
        with Client([leader.address], timeout=5.0) as client, \
                pytest.raises(ServerError) as info:
            client.transfer_leader("127.0.0.1:9")
        assert info.value.code == "transferring" and len(leader.requests) == 1


def test_transfer_to_the_current_leader_succeeds(node: FakeNode) -> None:
    def answer(request: Response) -> Response:
        if request["type"] == "transfer_leader":
            return error("bad_request", f"{node.address} is not another voter")
        return ok(status="leader", volatile={"leaderId": node.address, "address": node.address})

    with script(node, answer) as client:
        assert client.transfer_leader(node.address) == node.address
        with pytest.raises(BadRequest):
            client.transfer_leader("127.0.0.1:1")


def test_health_of_one_node_is_one_attempt(node: FakeNode) -> None:
    answers = iter([ok(leader="127.0.0.1:7001", commit_index=12), error("no_leader", "none"),
                    {"type": "redirect", "leader": None}])
    with script(node, lambda request: next(answers)) as client:
        assert client.health(node.address) == {"leader": "127.0.0.1:7001", "commit_index": 12}
        with pytest.raises(NoLeader):
            client.health(node.address)
        # A node outside the configuration (removed, or blank and never joined) takes no
        # part in committing: unhealthy, not a result without a leader.
        with pytest.raises(ServerError, match="not a member"):
            client.health(node.address)
    assert node.types() == ["health", "health", "health"]


def test_silence_does_not_hide_that_no_leader_is_known() -> None:
    """The only member knows no leader, then stops answering (busy, or the deadline cuts the
    last attempt short): the request fails as "no leader" (exit status 1), not as a timeout."""
    answers = iter([error("no_leader", "no leader is known", retryable=True)] * 2)
    with FakeNode(lambda r: next(answers, None)) as alone, \
            Client([alone.address], timeout=1.0) as client, pytest.raises(NoLeader) as info:
        client.set("k", "v")
    assert f"{alone.address}: no leader known" in str(info.value), info.value
    assert len(alone.requests) >= 3  # the silent attempts came after the answers


def test_silence_of_another_member_may_be_a_leader_at_work() -> None:
    """One member knew no leader; another took the request and never answered: it may be a
    new leader that applied it, so the outcome is a timeout (exit status 3), not no_leader."""
    answers = iter([error("no_leader", "no leader is known", retryable=True)])
    with FakeNode(lambda r: next(answers, None)) as first, FakeNode(lambda r: None) as other:
        with Client([first.address, other.address], timeout=1.0) as client, \
                pytest.raises(RequestTimeout):
            client.set("k", "v")
        assert first.requests and other.requests


def test_tls_to_a_plain_tcp_node_says_so() -> None:
    """A node without TLS answers the TLS hello with bytes that are no TLS record: the
    reason asks the question, rather than quoting OpenSSL ("WRONG_VERSION_NUMBER")."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    address = f"127.0.0.1:{server.getsockname()[1]}"
    done = threading.Event()

    def answer_plainly() -> None:  # every connection: the client tries again till its deadline
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(4096)
                conn.sendall(b"\x81\xa4type\xa5error" * 8)  # a msgpack answer, not TLS

    thread = threading.Thread(target=answer_plainly, daemon=True)
    thread.start()
    try:
        with Client([address], timeout=2.0, tls=True) as client, \
                pytest.raises(ClusterUnavailable) as raised:
            client.get("k")
    finally:
        done.set()
        thread.join(5)
        server.close()
    assert "TLS: wrong version number (does the node speak TLS?)" in str(raised.value)


def test_an_unanswered_request_times_out(node: FakeNode) -> None:
    with Client([node.address], timeout=0.3) as client, pytest.raises(RequestTimeout):
        client.get("k")


def test_no_node_reachable_names_each_endpoints_problem() -> None:
    """Not only the last attempt's, which the deadline may have cut short."""
    a, b = (f"127.0.0.1:{port}" for port in free_ports(2))  # nothing listens there
    with Client([a, b], timeout=0.5) as client, pytest.raises(ClusterUnavailable) as raised:
        client.get("k")
    message = str(raised.value)
    assert message.startswith(f"no node reachable (tried {a}, {b}): "), message
    assert f"{a}: " in message.split("): ", 1)[1] and f"{b}: " in message, message
    # In a few words, not Python's "[Errno 111] Connect call failed ('127.0.0.1', ...)".
    assert f"{a}: connection refused" in message and "Errno" not in message, message

"""Replica's write batching, driven by hand over the core's in-memory network (no clock)."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

from raftd.core import MemoryStorage, Message
from raftd.replica import BATCHES_IN_FLIGHT, Replica
from raftd.statemachine import SET, DictStateMachine, decode_batch, encode_command
from tests.unit.core.harness import Network


class _Durable:
    """MemoryStorage as the Replica's write side: everything is durable at once."""

    def __init__(self, storage: MemoryStorage) -> None:
        self.storage = storage

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    def sync(self) -> None:
        pass


class _Outbox:
    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.responses: dict[Hashable, dict[str, Any]] = {}

    def send(self, messages: Sequence[Message]) -> None:
        self.sent.extend(messages)

    def respond(self, token: Hashable, response: dict[str, Any]) -> None:
        self.responses[token] = response

    def respond_capture(self, token: Hashable, meta: object, capture: object) -> None:
        raise AssertionError("no snapshot was asked for")


def _exchange(net: Network, replica: Replica, out: _Outbox) -> None:
    """Deliver the leader's datagrams to the followers, their answers back, and run a turn."""
    for m in out.sent:
        net[m.dst].node.step(m)
    out.sent.clear()
    for follower in ("n2", "n3"):
        net.handle_ready(net[follower])
    while net.queue:
        replica.step(net.queue.popleft())
    replica.process(out, 0)


def test_leader_keeps_one_batch_in_flight_and_the_next_waits_for_answered_clients() -> None:
    assert BATCHES_IN_FLIGHT == 1
    net = Network(3)
    net.campaign("n1")  # from here on the test runs n1, through its Replica
    leader = net["n1"]
    replica = Replica(leader.node, _Durable(leader.storage), DictStateMachine(),
                      max_entry_bytes=4096, request_timeout_ticks=1000)
    out = _Outbox()
    replica.submit_write("w1", encode_command(SET, "k", 1))
    replica.process(out, 0)
    first = leader.raft.log.last_index()
    for i in range(2, 6):
        replica.submit_write(f"w{i}", encode_command(SET, "k", i))
        replica.process(out, 0)
    assert leader.raft.log.last_index() == first  # w2..w5 wait for w1's batch

    _exchange(net, replica, out)  # w1 commits and is answered; w2..w5 wait one more turn
    assert out.responses == {"w1": {"type": "result", "success": True, "revision": 1}}
    assert leader.raft.log.last_index() == first
    assert replica.wants_turn()
    replica.submit_write("w6", encode_command(SET, "k", 6))  # w1's client, writing again
    replica.process(out, 0)
    assert not replica.wants_turn()
    assert leader.raft.log.last_index() == first + 1
    _, commands = decode_batch(leader.raft.log.slice(first + 1, first + 2)[0].data)
    assert [c[2] for c in commands] == [2, 3, 4, 5, 6]

    _exchange(net, replica, out)
    assert {t: r.get("revision") for t, r in out.responses.items()} == {
        "w1": 1, "w2": 2, "w3": 3, "w4": 4, "w5": 5, "w6": 6}
    assert replica.sm.get("k") == (True, 6, 6)

"""The coordinator (``FederatedApp``) on the real Raft core, with a stand-in for the server.

`Server` gives it the RawNode of a leader from ``tests/unit/core/harness`` and commits its
proposals straight into the `FederatedState` a turn of the event loop later, applying before
replying as the real server does. Each test runs on its own event loop (``asyncio.run``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from raftd.config import FederatedSection
from raftd.core import NO_NODE, ConfChange, ConfChangeType, RawNode, StateRole
from raftd.federated import coordinator, crypto
from raftd.federated.coordinator import FederatedApp, update_context
from raftd.federated.fedavg import Update, encode_update
from raftd.federated.model import ModelSpec, decode_params, encode_params, initial_params
from raftd.federated.state import APP_NAME, FederatedState
from raftd.wire.client import AppRequest, ErrorCode, error, result
from tests.unit.core.harness import Network

DEADLINE = 10.0
SPEC = ModelSpec()


@pytest.fixture(scope="module")
def rsa_key() -> RSAPrivateKey:
    return crypto.generate_private_key()


@pytest.fixture(autouse=True)
def one_key(monkeypatch: pytest.MonkeyPatch, rsa_key: RSAPrivateKey) -> Iterator[None]:
    """Every key the coordinator generates is the module's one (generation costs ~0.6 s)."""
    monkeypatch.setattr(crypto, "generate_private_key", lambda: rsa_key)
    yield


class Server:
    """What FederatedApp uses of ``raftd.server.Server``."""

    def __init__(self, net: Network, id: str, state: FederatedState) -> None:
        self.net, self.id, self.state = net, id, state
        self.max_value_bytes = 16 << 20
        self.transfers: list[str] = []

    @property
    def node(self) -> RawNode:
        return self.net[self.id].node

    def transfer_leader(self, target: str) -> None:
        self.node.transfer_leader(target)
        self.transfers.append(target)

    def propose_app(self, app: str, payload: Any, reply: Callable[[dict[str, Any]], None]) -> None:
        assert app == APP_NAME

        def commit() -> None:
            applied = self.state.apply(payload, int(time.time() * 1000))
            if "error" in applied:
                reply(error(ErrorCode(applied["error"]), applied["message"]))
            else:
                reply(result(**applied))

        asyncio.get_running_loop().call_soon(commit)


async def until(check: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def coordinator_of(net: Network, **settings: Any) -> tuple[FederatedApp, Server]:
    """The coordinator of n1 of ``net``, with a model to train and participant p1
    registered; leader or not, as ``net`` has it."""
    state = FederatedState()
    state.apply({"op": "init", "spec": SPEC.to_dict(),
                 "model": encode_params(initial_params(SPEC))}, 0)
    state.apply({"op": "register", "participant": "p1", "public_key": b"p1's key"}, 0)
    server = Server(net, "n1", state)
    app = FederatedApp(server,  # type: ignore[arg-type]
                       FederatedSection(enabled=True, **settings), state)
    return app, server


async def aggregator(net: Network, **settings: Any) -> tuple[FederatedApp, Server]:
    """n1 of ``net``, just elected, with a model to train and participant p1 registered: its
    coordinator once it has committed its aggregator record (round 1 may still be opening)."""
    app, server = coordinator_of(net, **settings)
    raft = server.node.raft
    assert raft.role is StateRole.LEADER
    app.on_role_change(raft.role, raft.current_term)
    await until(lambda: app.active, "the aggregator record to commit")
    return app, server


def leader_net() -> Network:
    net = Network(3)
    net.campaign("n1")
    return net


def update_request(app: FederatedApp, name: str, rnd: int, params: list[np.ndarray]) -> AppRequest:
    assert app.key is not None
    sealed = crypto.seal(app.key.public_key(), encode_update(Update(name, rnd, params, 10)),
                         update_context(name, rnd))
    return AppRequest(app=APP_NAME, kind="fl_update",
                      body={"participant": name, "round": rnd, "key_id": app.key_id,
                            "sealed": sealed})


def test_a_round_opens_in_a_worker_and_an_update_sent_meanwhile_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    gate = threading.Event()
    decoders: list[threading.Thread] = []

    def held_decode(model: bytes) -> list[np.ndarray]:
        decoders.append(threading.current_thread())
        gate.wait(DEADLINE)
        return decode_params(model)

    monkeypatch.setattr(coordinator, "decode_params", held_decode)

    async def scenario() -> None:
        app, _ = await aggregator(leader_net(), min_updates=2, rotate_after_s=3600)
        try:
            assert app.open_round == 1 and app.buffer is None  # the model is being decoded
            answers: list[dict[str, Any]] = []
            app.handle(update_request(app, "p1", 1, initial_params(SPEC)), answers.append)
            assert answers == []  # neither refused nor taken before the round is open
            gate.set()
            await until(lambda: answers, "the update's answer")
            assert answers == [result(round=1, updates=1, min_updates=2)]
            assert app.buffer is not None and app.buffer.round == 1
            assert decoders and threading.current_thread() not in decoders
        finally:
            gate.set()
            app.close()

    asyncio.run(scenario())


def test_a_public_key_is_parsed_in_a_worker(
    monkeypatch: pytest.MonkeyPatch, rsa_key: RSAPrivateKey
) -> None:
    parsers: list[threading.Thread] = []
    load_public = crypto.load_public

    def recorded(der: Any) -> Any:
        parsers.append(threading.current_thread())
        return load_public(der)

    monkeypatch.setattr(crypto, "load_public", recorded)

    async def scenario() -> None:
        app, server = await aggregator(leader_net())
        try:
            answers: list[dict[str, Any]] = []
            for der in (b"not a key", crypto.public_der(rsa_key)):
                app.handle(AppRequest(app=APP_NAME, kind="fl_register",
                                      body={"participant": "p2", "public_key": der}),
                           answers.append)
            await until(lambda: len(answers) == 2, "both answers")
            bad, good = answers
            assert bad["type"] == "error" and bad["code"] == "bad_request"
            assert bad["message"].startswith("fl_register: not a DER public key")
            assert good == result(participant="p2", key_id=crypto.key_id(crypto.public_der(
                rsa_key)))
            assert server.state.participants["p2"] == crypto.public_der(rsa_key)
            assert len(parsers) == 2 and threading.current_thread() not in parsers
        finally:
            app.close()

    asyncio.run(scenario())


def test_rotation_waits_while_a_membership_change_or_another_transfer_is_in_flight() -> None:
    async def scenario() -> None:
        net = leader_net()
        app, server = await aggregator(net, rotate_after_s=3600)
        try:
            # No await from here on: the coordinator's periodic check cannot run in between.
            app.leading_since -= 3600  # as if it had aggregated for an hour: rotation is due
            leader = net["n1"].node

            net.add_node("n4")
            leader.propose_conf_change(ConfChange(type=ConfChangeType.ADD_LEARNER,
                                                  node_id="n4", auto_promote=False))
            app._maybe_rotate()
            assert server.transfers == []  # the change is not applied yet
            net.stabilize()
            assert leader.raft.learners == ("n4",)

            leader.transfer_leader("n3")  # an operator's transfer-leader, not a rotation
            app._maybe_rotate()
            assert server.transfers == []
            net.cut.add(("n1", "n3"))  # n3 never hears its TimeoutNow: the transfer aborts
            net.tick("n1", leader.raft.cfg.election_ticks[0])
            assert leader.raft.role is StateRole.LEADER and leader.raft.lead_transferee == NO_NODE

            app._maybe_rotate()
            assert server.transfers == ["n2"]  # the next voter after n1
        finally:
            app.close()

    asyncio.run(scenario())


class ThreadLog:
    """Wraps functions so each call records the thread it ran on; the real function runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.monkeypatch = monkeypatch
        self.calls: dict[str, list[threading.Thread]] = {}

    def watch(self, owner: Any, name: str) -> None:
        original = getattr(owner, name)
        threads = self.calls.setdefault(name, [])

        def recorded(*args: Any, **kwargs: Any) -> Any:
            threads.append(threading.current_thread())
            return original(*args, **kwargs)

        self.monkeypatch.setattr(owner, name, recorded)

    def assert_in_workers(self, loop_thread: threading.Thread) -> None:
        """Every watched function ran, each time in one of the app's worker threads."""
        for name, threads in self.calls.items():
            assert threads, f"{name} never ran"
            assert loop_thread not in threads, f"{name} ran on the event loop"
            assert all(t.name.startswith("fl") for t in threads), (name, threads)


def test_decryption_validation_and_averaging_run_in_worker_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads = ThreadLog(monkeypatch)
    threads.watch(coordinator, "_open_update")
    threads.watch(crypto, "open_sealed")  # decryption...
    threads.watch(coordinator, "decode_update")  # ...and validation, inside _open_update
    threads.watch(coordinator, "_average")
    threads.watch(coordinator, "fedavg")

    async def scenario() -> None:
        app, server = await aggregator(leader_net(), min_updates=1, rotate_after_s=3600)
        try:
            trained = [np.full_like(p, 0.25) for p in initial_params(SPEC)]
            answers: list[dict[str, Any]] = []
            app.handle(update_request(app, "p1", 1, trained), answers.append)
            await until(lambda: answers and server.state.round == 1, "round 1 to commit")
            assert answers == [result(round=1, updates=1, min_updates=1)]
            assert server.state.model is not None
            assert all(np.array_equal(a, b) for a, b in zip(
                decode_params(server.state.model), trained, strict=True))  # FedAvg of one
            threads.assert_in_workers(threading.current_thread())
        finally:
            app.close()

    asyncio.run(scenario())


@pytest.fixture(scope="module")
def other_key() -> RSAPrivateKey:
    return crypto.generate_private_key()


def test_a_key_pair_is_ready_before_the_node_leads_and_the_next_starts_once_it_is_spent(
    monkeypatch: pytest.MonkeyPatch, rsa_key: RSAPrivateKey, other_key: RSAPrivateKey
) -> None:
    """The first key is generated in a worker while n1 still follows; leading, n1 commits its
    record with that key at once and generates the next one in a worker meanwhile (held open
    here: the record commits without waiting for it)."""
    gate = threading.Event()
    made = iter([rsa_key, other_key])
    generation: list[threading.Thread] = []

    def generate() -> RSAPrivateKey:
        generation.append(threading.current_thread())
        if len(generation) > 1:
            gate.wait(DEADLINE)
        return next(made)

    monkeypatch.setattr(crypto, "generate_private_key", generate)

    async def scenario() -> None:
        net = Network(3)
        app, server = coordinator_of(net, rotate_after_s=3600)
        try:
            assert server.node.raft.role is StateRole.FOLLOWER
            await until(app.next_key.done, "the first key pair")
            first = app.next_key
            key, der = first.result()
            assert key is rsa_key and der == crypto.public_der(rsa_key)
            assert generation[0] is not threading.current_thread()

            net.campaign("n1")
            raft = server.node.raft
            assert raft.role is StateRole.LEADER
            app.on_role_change(raft.role, raft.current_term)
            await until(lambda: app.active, "the aggregator record to commit")
            assert app.key is key and app.key_id == crypto.key_id(der)
            assert server.state.aggregator is not None
            assert server.state.aggregator["public_key"] == der
            assert server.state.aggregator["term"] == raft.current_term

            # The spent key is replaced: the next pair is being generated, in a worker.
            assert app.next_key is not first
            await until(lambda: len(generation) == 2, "the next key pair to start")
            assert not app.next_key.done()
            gate.set()
            await until(app.next_key.done, "the next key pair")
            assert app.next_key.result()[0] is other_key
            assert threading.current_thread() not in generation
            assert all(t.name.startswith("fl") for t in generation), generation
        finally:
            gate.set()
            app.close()

    asyncio.run(scenario())

"""Hybrid sealing (RSA-OAEP + AES-GCM) and what a participant really puts on the wire."""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import msgpack
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

from raftctl.client import AsyncClient
from raftctl.fl.participant import RESEND, Participant, Training
from raftd.federated import crypto
from raftd.federated.coordinator import model_context, update_context
from raftd.federated.data import Shard
from raftd.federated.fedavg import decode_update
from raftd.federated.model import (
    ModelSpec,
    encode_params,
    initial_params,
)
from tests.unit.client.fakenode import FakeNode

DEADLINE_S = 30.0
"""Longest a scripted participant run may take before the test fails."""

@cache
def key(n: int) -> RSAPrivateKey:
    """Generated once per test session: a 3072-bit key takes a noticeable fraction of a second."""
    return crypto.generate_private_key()


def test_seal_round_trips_a_large_payload() -> None:
    payload = np.random.default_rng(1).standard_normal(50_000).tobytes()  # far over one block
    sealed = crypto.seal(key(1).public_key(), payload, b"ctx")
    assert crypto.open_sealed(key(1), sealed, b"ctx") == payload
    assert crypto.sealed_key_id(sealed) == crypto.key_id(crypto.public_der(key(1)))


def test_sealing_twice_gives_different_bytes() -> None:
    a = crypto.seal(key(1).public_key(), b"same", b"ctx")
    b = crypto.seal(key(1).public_key(), b"same", b"ctx")
    assert a != b  # fresh AES key and nonce every time


def test_the_wrong_key_cannot_open() -> None:
    sealed = crypto.seal(key(1).public_key(), b"weights", b"ctx")
    with pytest.raises(crypto.CryptoError):
        crypto.open_sealed(key(2), sealed, b"ctx")


def test_another_context_cannot_open() -> None:
    sealed = crypto.seal(key(1).public_key(), b"weights", update_context("p1", 3))
    with pytest.raises(crypto.CryptoError):
        crypto.open_sealed(key(1), sealed, update_context("p1", 4))
    with pytest.raises(crypto.CryptoError):
        crypto.open_sealed(key(1), sealed, update_context("p2", 3))


def test_tampering_is_detected() -> None:
    fields = msgpack.unpackb(crypto.seal(key(1).public_key(), b"weights", b"ctx"))
    fields["ct"] = bytes([fields["ct"][0] ^ 1]) + fields["ct"][1:]
    with pytest.raises(crypto.CryptoError):
        crypto.open_sealed(key(1), msgpack.packb(fields), b"ctx")


@pytest.mark.parametrize("garbage", [b"", b"\x81\xa1v\x01", "text", msgpack.packb({"v": 2})])
def test_malformed_sealed_messages_are_refused(garbage: Any) -> None:
    with pytest.raises(crypto.CryptoError):
        crypto.open_sealed(key(1), garbage, b"ctx")


def test_public_keys_are_checked() -> None:
    der = crypto.public_der(key(1))
    assert crypto.load_public(der).key_size == crypto.KEY_BITS
    unknown_algorithm = bytes.fromhex("300c300506032a03040303000102")  # OID 1.2.3.4
    for bad in (b"", der[:-5], b"x" * 2000, "text", unknown_algorithm):
        with pytest.raises(crypto.CryptoError):
            crypto.load_public(bad)


class RecordingNode(FakeNode):
    """A FakeNode that also keeps every byte it received, exactly as sent."""

    def __init__(self, answer: Any) -> None:
        super().__init__(answer)
        self.raw = bytearray()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        try:
            while data := await reader.read(65536):
                self.raw.extend(data)
                unpacker.feed(data)
                for request in unpacker:
                    self.requests.append(request)
                    response = self.answer(request)
                    if response is not None:
                        writer.write(msgpack.packb({**response, "id": request.get("id")}))
        except ConnectionError:
            pass
        finally:
            writer.close()


def aggregator_record(private: RSAPrivateKey, *, term: int, node: str) -> dict[str, Any]:
    """The ``aggregator`` field of an fl_status answer, as the state keeps it."""
    der = crypto.public_der(private)
    return {"term": term, "node": node, "round": 0, "public_key": der,
            "key_id": crypto.key_id(der)}


def scripted_answer(spec: ModelSpec, state: dict[str, Any],
                    req: dict[str, Any]) -> dict[str, Any] | None:
    """The scripted node's answer to everything but fl_update (None for fl_update): the
    status of round ``state["round"]`` under ``state["aggregator"]``, and the initial model
    sealed to the key the participant registered."""
    kind = req["type"]
    if kind == "fl_register":
        state["participant_key"] = req["public_key"]
        return {"type": "result", "success": True}
    if kind == "fl_status":
        return {"type": "result", "success": True, "round": state["round"],
                "spec": spec.to_dict(), "accepting": True, "stale": False,
                "aggregator": state["aggregator"]}
    if kind == "fl_model":
        sealed = crypto.seal(crypto.load_public(state["participant_key"]),
                             encode_params(initial_params(spec)),
                             model_context(req["participant"], 0))
        return {"type": "result", "success": True, "round": 0, "sealed": sealed}
    assert kind == "fl_update"
    return None


def small_shard() -> Shard:
    rng = np.random.default_rng(0)
    return Shard(rng.random((60, 64)), rng.integers(0, 10, 60))


def test_the_bytes_a_participant_sends_hold_no_plaintext_weight() -> None:
    """One real round of a Participant against a scripted aggregator that records the wire."""
    spec = ModelSpec()
    aggregator = key(3)
    shard = small_shard()
    state: dict[str, Any] = {"round": 0, "participant_key": None, "update": None,
                             "aggregator": aggregator_record(aggregator, term=1, node="n1")}

    def answer(req: dict[str, Any]) -> dict[str, Any]:
        scripted = scripted_answer(spec, state, req)
        if scripted is not None:
            return scripted
        state["update"], state["round"] = req, 1
        return {"type": "result", "success": True, "round": 1, "updates": 1}

    with RecordingNode(answer) as node:
        async def run() -> None:
            async with AsyncClient([node.address], timeout=5) as client:
                await Participant(client, "p1", shard, spec=spec, give_up_s=5,
                                  training=Training(epochs=2)).run(1)

        asyncio.run(run())
        wire = bytes(node.raw)

    sent = state["update"]
    assert sent is not None and set(sent) == {"type", "id", "participant", "round", "key_id",
                                              "sealed"}
    plain = crypto.open_sealed(aggregator, sent["sealed"], update_context("p1", 1))
    update = decode_update(plain, participant="p1", round=1, reference=initial_params(spec))
    weights = update.params
    assert any(np.any(w != 0) for w in weights)  # it did train: there is something to hide
    # Positive control: the search below finds weights in a frame that carries them.
    assert encode_params(weights)[-64:] in msgpack.packb({"params": encode_params(weights)})
    assert encode_params(weights) not in wire
    for w in weights:
        assert w.astype(np.float32).tobytes() not in wire
        # Each 8-byte weight on its own: a chance match in random ciphertext is ~2^-50 here.
        leaked = [v for v in w.ravel() if v != 0 and v.tobytes() in wire]
        assert not leaked, f"{len(leaked)} weights appear in clear on the wire"


@pytest.mark.parametrize("refusal", sorted(RESEND))
def test_an_update_refused_for_a_new_aggregator_is_sealed_again_to_its_key(refusal: str) -> None:
    """The aggregator changes mid-round: the node refuses the update sealed to the old key
    (``refusal``, one that means "wait for the next aggregator record") and then reports the
    new aggregator. The participant seals the same update to the NEW key and sends it again."""
    spec = ModelSpec()
    old, new = key(4), key(5)
    state: dict[str, Any] = {"round": 0, "participant_key": None, "updates": [],
                             "aggregator": aggregator_record(old, term=1, node="n1")}
    new_record = aggregator_record(new, term=2, node="n2")

    def answer(req: dict[str, Any]) -> dict[str, Any]:
        scripted = scripted_answer(spec, state, req)
        if scripted is not None:
            return scripted
        state["updates"].append(req)
        if req["key_id"] != new_record["key_id"]:
            state["aggregator"] = new_record  # n1 lost its leadership; n2 committed its record
            return {"type": "result", "success": False, "reason": refusal,
                    "message": "the aggregator changed", "key_id": new_record["key_id"]}
        state["round"] = 1
        return {"type": "result", "success": True, "round": 1, "updates": 1}

    said: list[str] = []
    with RecordingNode(answer) as node:
        async def run() -> Any:
            async with AsyncClient([node.address], timeout=5) as client:
                participant = Participant(client, "p1", small_shard(), spec=spec, give_up_s=5,
                                          training=Training(epochs=2), say=said.append)
                return await asyncio.wait_for(participant.run(1), DEADLINE_S)

        stats = asyncio.run(run())

    first, second = state["updates"]
    assert (first["key_id"], second["key_id"]) == (crypto.key_id(crypto.public_der(old)),
                                                   new_record["key_id"])
    context = update_context("p1", 1)
    assert crypto.open_sealed(new, second["sealed"], context)  # sealed to the new key...
    with pytest.raises(crypto.CryptoError):
        crypto.open_sealed(old, second["sealed"], context)  # ...and not to the old one
    # The same update both times: only the encryption is redone, not the training.
    reference = initial_params(spec)
    sent = [decode_update(crypto.open_sealed(k, u["sealed"], context), participant="p1",
                          round=1, reference=reference).params
            for k, u in ((old, first), (new, second))]
    assert all(np.array_equal(a, b) for a, b in zip(*sent, strict=True))
    assert stats.resent == 1
    assert stats.rounds == [1] and stats.aggregators == {"n2"}
    assert "round 1: aggregator changed; sealing the update again" in said

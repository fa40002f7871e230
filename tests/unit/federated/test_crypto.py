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
from raftctl.fl.participant import Participant, Training
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


def test_the_bytes_a_participant_sends_hold_no_plaintext_weight() -> None:
    """One real round of a Participant against a scripted aggregator that records the wire."""
    spec = ModelSpec()
    aggregator = key(3)
    agg_der = crypto.public_der(aggregator)
    rng = np.random.default_rng(0)
    shard = Shard(rng.random((60, 64)), rng.integers(0, 10, 60))
    state: dict[str, Any] = {"round": 0, "participant_key": None, "update": None}

    def answer(req: dict[str, Any]) -> dict[str, Any]:
        kind = req["type"]
        if kind == "fl_register":
            state["participant_key"] = req["public_key"]
            return {"type": "result", "success": True}
        if kind == "fl_status":
            return {"type": "result", "success": True, "round": state["round"],
                    "spec": spec.to_dict(), "accepting": True, "stale": False,
                    "aggregator": {"term": 1, "node": "n1", "round": 0, "public_key": agg_der,
                                   "key_id": crypto.key_id(agg_der)}}
        if kind == "fl_model":
            sealed = crypto.seal(crypto.load_public(state["participant_key"]),
                                 encode_params(initial_params(spec)),
                                 model_context(req["participant"], 0))
            return {"type": "result", "success": True, "round": 0, "sealed": sealed}
        assert kind == "fl_update"
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

"""Participant: one federated-learning client, training on its own shard of data.

Theory of operation (the coordinator's side is ``raftd.federated.coordinator``):

1. Generate an RSA key pair (in a worker thread) and register the public key through the log
   (``fl_register``); if the cluster trains no model yet, propose ours (``fl_init``).
2. Each round: fetch the global model, sealed by the cluster to our key (``fl_model``), test
   it on our held-out data if we have some, train it locally, and seal the update to the
   current aggregator's public key (from ``fl_status``) before sending it (``fl_update``).
3. Wait (``fl_status`` long polls) until the round is committed. If the aggregator changes
   first (rotation, or a crash and an election) the update died with the old aggregator's
   memory: seal the same update to the new key and send it again. Training is never redone
   for a round, only the encryption.

The bytes sent never hold a weight in the clear: everything but the envelope (participant
name, round, key id) is inside the sealed message.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raftctl.client import AsyncClient
from raftctl.errors import RaftctlError, ServerError
from raftd.federated import crypto
from raftd.federated.coordinator import model_context, update_context
from raftd.federated.data import Shard
from raftd.federated.fedavg import Update, encode_update
from raftd.federated.model import Model, ModelSpec, Params, decode_params

RETRY_S = 0.2
"""Pause after a failed request (no leader during an election) before trying again."""
WAIT_S = 2.0
"""Long-poll length of ``fl_status``; the client's deadline must exceed it."""
RESEND = frozenset({"stale_key", "no_aggregator", "rotating", "not_aggregator"})
"""Refusals that mean: wait for the next aggregator record, then send again."""


class ParticipantError(RaftctlError):
    """The cluster refused our update for a reason retrying cannot fix."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Training:
    epochs: int = 10
    lr: float = 0.5
    batch_size: int = 32
    seed: int = 0


@dataclass(slots=True)
class Stats:
    """What a participant did, for its closing line and for tests."""

    rounds: list[int] = field(default_factory=list)
    """The rounds our update was accepted for."""
    resent: int = 0
    """Updates sealed again to a new aggregator's key."""
    aggregators: set[str] = field(default_factory=set)
    """Nodes that accepted an update from us."""


class Participant:
    def __init__(
        self,
        client: AsyncClient,
        name: str,
        shard: Shard,
        *,
        spec: ModelSpec,
        training: Training = Training(),
        test: Shard | None = None,
        say: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.client = client
        self.name = name
        self.shard = shard
        self.spec = spec
        self.training = training
        self.test = test
        self.say = say
        self.key = None  # set by register(): our RSA private key
        self.stats = Stats()

    # -- the protocol ----------------------------------------------------------------------
    async def run(self, rounds: int) -> Stats:
        """Take part until the global model reaches round ``rounds``."""
        await self._retrying(self.register)
        status = await self._retrying(self.status)
        if status.get("spec") is None:
            await self._retrying(lambda: self._request({"type": "fl_init",
                                                        "spec": self.spec.to_dict()}))
        while True:
            status = await self._retrying(self.status)
            if status["round"] >= rounds:
                return self.stats
            rnd, params = await self._retrying(self.fetch_model)
            if rnd >= rounds:
                return self.stats
            update = await asyncio.get_running_loop().run_in_executor(
                None, self.train, rnd, params)
            await self.submit(update)

    async def register(self) -> None:
        loop = asyncio.get_running_loop()
        if self.key is None:
            self.key = await loop.run_in_executor(None, crypto.generate_private_key)
        await self._request({"type": "fl_register", "participant": self.name,
                             "public_key": crypto.public_der(self.key)})

    async def status(self, wait: tuple[int, int | None] | None = None) -> dict[str, Any]:
        """The leader's status; with ``wait=(round, term)``, once either changed (or ~2 s)."""
        body: dict[str, Any] = {"type": "fl_status"}
        if wait is not None:
            body.update(wait_s=WAIT_S, round=wait[0], term=wait[1])
        status = await self._request(body)
        if status.get("stale"):
            await asyncio.sleep(RETRY_S)  # no leader known: a view from a follower
        return status

    async def fetch_model(self) -> tuple[int, Params]:
        """The global model and its round, sealed to our key by the cluster."""
        response = await self._request({"type": "fl_model", "participant": self.name})
        if response.get("success") is False:
            if response.get("reason") == "unregistered":  # e.g. a cluster wiped meanwhile
                await self.register()
            raise ServerError(str(response.get("reason")), str(response.get("message")))
        rnd = response["round"]
        plain = crypto.open_sealed(self.key, response["sealed"], model_context(self.name, rnd))
        return rnd, decode_params(plain)

    def train(self, rnd: int, params: Params) -> Update:
        """Test the global model of round ``rnd``, then train it: our update for ``rnd + 1``."""
        model = Model(self.spec, params)
        evaluation = None
        if self.test is not None and len(self.test):
            correct = int(np.sum(model.predict(self.test.X) == self.test.y))
            evaluation = (correct, len(self.test))
        t = self.training
        model.fit(self.shard.X, self.shard.y, t.epochs, t.lr, batch_size=t.batch_size,
                  seed=t.seed * 1_000_003 + rnd)
        return Update(self.name, rnd + 1, model.params, len(self.shard), evaluation)

    async def submit(self, update: Update) -> None:
        """Send ``update`` until its round is committed (see the module docstring, step 3)."""
        plaintext = encode_update(update)
        previous = update.round - 1
        while True:
            status = await self._retrying(self.status)
            agg = status.get("aggregator")
            if status["round"] != previous:
                return  # committed (with or without us), or we are behind: refetch
            if agg is None or not status.get("accepting"):
                await self._retrying(functools.partial(self.status, (previous, _term(agg))))
                continue
            response = await self._retrying(functools.partial(self._send, plaintext, update, agg))
            reason = response.get("reason")
            if response.get("success") is not False or reason == "duplicate":
                self.stats.rounds.append(update.round)
                self.stats.aggregators.add(agg["node"])
                self.say(f"round {update.round}: update accepted by {agg['node']} "
                         f"(term {agg['term']})")
            elif reason == "unregistered":
                await self._retrying(self.register)
                continue
            elif reason in ("wrong_round", "round_closed"):
                pass  # the round moved on without us: wait for the commit
            elif reason not in RESEND:
                raise ParticipantError(f"update for round {update.round} refused: {reason}: "
                                       f"{response.get('message')}")
            if await self._await_commit(previous, agg["term"]):
                return
            self.stats.resent += 1
            self.say(f"round {update.round}: aggregator changed; sealing the update again")

    async def _await_commit(self, previous: int, term: int) -> bool:
        """True once round ``previous`` is done; False when the aggregator changed first."""
        while True:
            status = await self._retrying(lambda: self.status(wait=(previous, term)))
            if status["round"] != previous:
                return True
            if _term(status.get("aggregator")) != term:
                return False

    async def _send(self, plaintext: bytes, update: Update,
                    agg: dict[str, Any]) -> dict[str, Any]:
        def sealed() -> bytes:
            key = crypto.load_public(agg["public_key"])
            return crypto.seal(key, plaintext, update_context(self.name, update.round))

        blob = await asyncio.get_running_loop().run_in_executor(None, sealed)
        return await self._request({"type": "fl_update", "participant": self.name,
                                    "round": update.round, "key_id": agg["key_id"],
                                    "sealed": blob})

    # -- plumbing --------------------------------------------------------------------------
    async def _request(self, body: dict[str, Any]) -> dict[str, Any]:
        return await self.client.request(body)

    async def _retrying(self, call: Callable[[], Any]) -> Any:
        """Await ``call()`` until it succeeds: elections and crashes are expected here."""
        while True:
            try:
                return await call()
            except ParticipantError:
                raise
            except RaftctlError as exc:
                self.say(f"retrying after: {exc}")
                await asyncio.sleep(RETRY_S)


def _term(aggregator: dict[str, Any] | None) -> int | None:
    return aggregator["term"] if aggregator is not None else None

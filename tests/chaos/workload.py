"""The chaos workload: concurrent clients on a few keys, every operation recorded for the checker.

Each client is an asyncio task with its own ``AsyncClient`` (its own session and connections)
doing one operation at a time: reads, writes of unique values, deletes, and read-modify-write
compare-and-sets. Invoke and complete times come from one monotonic clock, taken before the
request starts and after its answer arrived, so each recorded interval contains the real one.

Outcomes: a read that raised is left out (it told nothing); a write that raised is recorded
with an unknown outcome. rafty's sessions settle such a write once a later write of the same
session is applied (the server then refuses the old seq, DESIGN.md "client sessions"), so it
gets that later write's return as its deadline. A write during which the client changed
sessions (``SessionExpired``) keeps no deadline: nothing settles it.

Keys: ``slots`` hot keys at a time; a slot moves to a fresh key after ``ops_per_key``
operations, so each key's history stays small enough to check however long the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from raftctl import AsyncClient
from raftctl.errors import ConditionFailed, RaftctlError
from tests.chaos.linearizability import CAS, DELETE, GET, SET, Op


@dataclass(frozen=True, slots=True)
class WorkloadConfig:
    clients: int = 6
    slots: int = 3
    ops_per_key: int = 150
    max_ops_per_client: int = 20_000
    """A bound on every client loop besides the time limit."""
    timeout: float = 10.0
    """Client deadline per request: long enough to ride out most faults (a fault lasts a few
    seconds), so few of these clients' writes end unknown."""
    hasty_clients: int = 2
    """Clients with a deadline of ``hasty_timeout`` instead: many of their writes end with an
    unknown outcome, which exercises sessions (a later write settles them) and the checker."""
    hasty_timeout: float = 1.0
    think: float = 0.02
    """Largest pause between a client's operations: keeps histories to a size the checker
    decides quickly, and leaves CPU to the five nodes."""


class KeySpace:
    """``slots`` hot keys; slot s moves to key ``{prefix}/{s}.{generation}`` every
    ``per_key`` picks."""

    def __init__(self, prefix: str, slots: int, per_key: int) -> None:
        self.prefix = prefix
        self._per_key = per_key
        self._picks = [0] * slots
        self._generation = [0] * slots
        self._handed: dict[str, None] = {}  # an ordered set

    @property
    def keys(self) -> list[str]:
        """Every key handed out, in order."""
        return list(self._handed)

    def pick(self, rng: random.Random) -> str:
        slot = rng.randrange(len(self._picks))
        if self._picks[slot] >= self._per_key:
            self._generation[slot] += 1
            self._picks[slot] = 0
        self._picks[slot] += 1
        key = f"{self.prefix}/{slot}.{self._generation[slot]}"
        self._handed[key] = None
        return key


@dataclass(slots=True)
class _Record:
    op: Op
    before: str = ""
    """Session the client held when the write started (writes only)."""
    after: str = ""
    """Session it held when the write ended: differs if the write changed sessions."""


@dataclass
class Recorder:
    """Collects operations; ``history()`` gives them to the checker with their deadlines."""

    t0: float = field(default_factory=time.monotonic)
    records: list[_Record] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)
    """e.g. ``set ok``, ``set unknown``, ``get failed``, ``cas condition_failed``."""
    errors: Counter[str] = field(default_factory=Counter)
    """Exception class names of the requests that raised."""

    def now(self) -> float:
        return time.monotonic() - self.t0

    def history(self) -> list[Op]:
        """Every recorded op; unknown writes get their session's settling deadline."""
        ops = [r.op for r in self.records]
        pending: dict[tuple[int, str], list[int]] = {}
        for index, record in enumerate(self.records):
            op = record.op
            if op.kind == GET or record.before != record.after:
                continue
            session = (op.client, record.before)
            if op.unknown:
                pending.setdefault(session, []).append(index)
            else:
                for settled in pending.pop(session, []):
                    ops[settled] = dataclasses.replace(ops[settled], deadline=op.ret)
        return ops


class RecordingClient:
    """One workload client: an ``AsyncClient`` and the code recording each of its operations."""

    def __init__(self, cid: int, client: AsyncClient, recorder: Recorder) -> None:
        self.cid = cid
        self.client = client
        self.recorder = recorder
        self._values = 0

    def _value(self) -> str:
        self._values += 1
        return f"c{self.cid}-{self._values}"

    async def get(self, key: str) -> Op | None:
        """A linearizable read; None (nothing recorded) if it raised."""
        call = self.recorder.now()
        try:
            item = await self.client.get_item(key)
        except RaftctlError as exc:
            self._count("get", "failed", exc)
            return None
        ret = self.recorder.now()
        if item is None:
            op = Op(self.cid, key, GET, call, ret, found=False)
        else:
            op = Op(self.cid, key, GET, call, ret, value=item.value, found=True,
                    revision=item.revision)
        self._record(op, "ok")
        return op

    async def set(self, key: str) -> None:
        value = self._value()

        async def run() -> dict[str, Any]:
            return {"revision": await self.client.set(key, value)}

        await self._write(key, SET, run, value=value)

    async def delete(self, key: str) -> None:
        async def run() -> dict[str, Any]:
            return {"found": await self.client.delete(key)}

        await self._write(key, DELETE, run)

    async def read_modify_write(self, key: str) -> None:
        """Read the key, then compare-and-set it on the revision read (0: while absent)."""
        read = await self.get(key)
        if read is None:
            return
        expected = read.revision if read.found else 0
        assert expected is not None
        value = self._value()

        async def run() -> dict[str, Any]:
            return {"revision": await self.client.cas(key, expected, value), "ok": True}

        await self._write(key, CAS, run, value=value, expected=expected)

    async def _write(
        self, key: str, kind: str, run: Callable[[], Awaitable[dict[str, Any]]], **request: Any
    ) -> None:
        before = self.client.client_id
        call = self.recorder.now()
        try:
            outcome = await run()
        except ConditionFailed as exc:  # a definite answer: the condition did not hold
            op = Op(self.cid, key, kind, call, self.recorder.now(), ok=False,
                    revision=exc.revision, **request)
            label = "condition_failed"
        except RaftctlError as exc:
            op = Op(self.cid, key, kind, call, None, **request)
            self._count(kind, "unknown", exc)
            self.recorder.records.append(_Record(op, before, self.client.client_id))
            return
        else:
            op = Op(self.cid, key, kind, call, self.recorder.now(), **request, **outcome)
            label = "ok"
        self._record(op, label, before)

    def _record(self, op: Op, label: str, before: str = "") -> None:
        self.recorder.outcomes[f"{op.kind} {label}"] += 1
        after = self.client.client_id if op.kind != GET else ""
        self.recorder.records.append(_Record(op, before, after))

    def _count(self, kind: str, label: str, exc: RaftctlError) -> None:
        self.recorder.outcomes[f"{kind} {label}"] += 1
        self.recorder.errors[type(exc).__name__] += 1


async def run_clients(
    endpoints: Sequence[str],
    keys: KeySpace,
    recorder: Recorder,
    config: WorkloadConfig,
    *,
    until: float,
    seed: int,
) -> None:
    """Run ``config.clients`` clients until the monotonic time ``until`` (or their op bound)."""

    async def one(cid: int) -> None:
        rng = random.Random(f"{seed}/{cid}")
        timeout = config.hasty_timeout if cid < config.hasty_clients else config.timeout
        async with AsyncClient(endpoints, timeout=timeout) as raw:
            client = RecordingClient(cid, raw, recorder)
            for _ in range(config.max_ops_per_client):
                if time.monotonic() >= until:
                    return
                key = keys.pick(rng)
                roll = rng.random()
                if roll < 0.35:
                    await client.get(key)
                elif roll < 0.6:
                    await client.set(key)
                elif roll < 0.9:
                    await client.read_modify_write(key)
                else:
                    await client.delete(key)
                await asyncio.sleep(rng.uniform(0, config.think))

    await asyncio.gather(*(one(cid) for cid in range(config.clients)))


async def final_reads(
    endpoints: Sequence[str], keys: KeySpace, recorder: Recorder, *, timeout: float
) -> dict[str, Op]:
    """After healing: one listing of every key, then a read of each key, all recorded.

    Returns each key's final read (a read that raises fails the test: the cluster is healed).
    """
    cid = -1  # the reader is not one of the workload clients
    async with AsyncClient(endpoints, timeout=timeout) as client:
        call = recorder.now()
        page = await client.scan(keys.prefix + "/", limit=len(keys.keys) + 1)
        ret = recorder.now()
        if page.more:
            raise AssertionError(f"listing {keys.prefix}/ found more keys than were written")
        listed = {item.key: item for item in page.items}
        unknown = set(listed) - set(keys.keys)
        if unknown:
            raise AssertionError(f"keys nobody wrote are listed: {sorted(unknown)}")
        for key in keys.keys:
            item = listed.get(key)
            if item is None:
                op = Op(cid, key, GET, call, ret, found=False)
            else:
                op = Op(cid, key, GET, call, ret, value=item.value, found=True,
                        revision=item.revision)
            recorder.records.append(_Record(op))
        finals: dict[str, Op] = {}
        reader = RecordingClient(cid, client, recorder)
        for key in keys.keys:
            final = await reader.get(key)
            if final is None:
                raise AssertionError(f"the final read of {key!r} failed on a healed cluster")
            finals[key] = final
        return finals


def lost_writes(history: Sequence[Op], finals: dict[str, Op]) -> list[str]:
    """Acknowledged writes missing from the final state; empty when none is.

    A key present at the end holds the value of its highest-revision write, so no
    acknowledged write to it may carry a higher revision. A key absent at the end must have
    a delete that may have followed its last acknowledged write.
    """
    by_key: dict[str, list[Op]] = {}
    for op in history:
        by_key.setdefault(op.key, []).append(op)
    lost: list[str] = []
    for key, final in finals.items():
        ops = by_key.get(key, [])
        acked = [op for op in ops if op.kind in (SET, CAS) and not op.unknown and op.ok]
        if not acked:
            continue
        last = max(acked, key=lambda op: op.revision or 0)
        if final.found:
            lost += [
                f"{op.describe()} (final: {final.describe()})"
                for op in acked
                if (op.revision or 0) > (final.revision or 0)
            ]
        elif not any(
            op.kind == DELETE and op.found is not False and (op.ret is None or op.ret > last.call)
            for op in ops
        ):
            lost.append(f"{last.describe()} (final: {final.describe()}, and no delete after it)")
    return lost

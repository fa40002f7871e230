"""DictStateMachine: the replicated dictionary, with client sessions for exactly-once writes.

Commands arrive batched: one log entry carries the leader's timestamp and any number of
commands (see ``encode_batch``). Everything here is deterministic: the same entries applied in
the same order give the same state, the same results and the same session table on every node.

Revisions. Every write gets a revision from a cluster-wide counter that grows by one per applied
write (etcd's model). A log index would not do: one entry holds many writes, and two writes to a
key in one entry must not share a revision, or a compare-and-set could pass twice.

Sessions (Raft thesis §6.3). A write carries ``client_id``, ``seq`` and ``first_unacked_seq``.
The session caches the result of every ``seq >= first_unacked_seq`` so that a retry is answered
from the cache instead of being applied twice, whatever order retries arrive in; results below
``first_unacked_seq`` are discarded (the client has seen them), and such a seq arriving again
gets ``session_expired``. A session unused for ``session_ttl_ms`` of *leader time* (timestamps
committed in entries, never a local clock) expires. NB: an unknown client whose seq is 1 opens
a session; any other seq of an unknown client gets ``session_expired``, because the session that
knew whether it was applied is gone.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Protocol

import msgpack

from raftd.layered import LayeredDict

log = logging.getLogger(__name__)

BATCH_FORMAT = 1
SNAPSHOT_FORMAT = 1
SNAPSHOT_CHUNK_KEYS = 10_000
"""Keys per msgpack call when serializing: each call holds the GIL, so chunks keep the event
loop's thread from stalling while a worker thread writes a large snapshot."""
LIST_PAGE_BYTES = 4 << 20
"""A ``list`` page ends past this many bytes of keys and values (the frame limit is 64 MiB)."""
SET = 1
DELETE = 2
APP = 3
"""An application command: ``key`` names the application, ``value`` is its payload."""

Command = tuple[Any, ...]
"""(op, key, value, client_id, seq, first_unacked_seq, if_revision, if_absent)."""

Result = dict[str, Any]
"""Fields of the client's response; ``{"error": code, "message": ...}`` for a failure."""


def _packb(obj: Any) -> bytes:
    packed: bytes = msgpack.packb(obj, use_bin_type=True)
    return packed


def encode_command(
    op: int,
    key: str,
    value: Any = None,
    *,
    client_id: str | None = None,
    seq: int | None = None,
    first_unacked_seq: int | None = None,
    if_revision: int | None = None,
    if_absent: bool = False,
    pack: Callable[[Any], bytes] = _packb,
) -> bytes:
    """``pack``: a ``msgpack.Packer(use_bin_type=True).pack`` of the caller's own is faster
    (``packb`` builds a Packer per call)."""
    return pack((op, key, value, client_id, seq, first_unacked_seq, if_revision, if_absent))


def encode_batch(timestamp_ms: int, packed_commands: list[bytes]) -> bytes:
    """One entry's data: a version byte, the leader's clock, then the packed commands.

    Commands are packed once when they arrive; a batch only concatenates them.
    """
    return bytes((BATCH_FORMAT,)) + msgpack.packb(timestamp_ms) + b"".join(packed_commands)


def decode_batch(data: bytes) -> tuple[int, list[Command]]:
    if data[0] != BATCH_FORMAT:
        raise ValueError(f"unknown batch format {data[0]}")
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=False)
    unpacker.feed(data[1:])
    timestamp = next(unpacker)
    return timestamp, list(unpacker)


@dataclass(slots=True)
class Session:
    last_active_ms: int
    first_unacked_seq: int = 1
    results: dict[int, Result] = field(default_factory=dict)


class AppStateMachine(Protocol):
    """Replicated state of an application living beside the user's keys (e.g. federated
    learning). Deterministic like the rest: same commands, same state, on every node."""

    def apply(self, payload: Any, clock_ms: int) -> Result:
        """Apply one command; ``clock_ms`` is leader time. Never raise on bad payloads:
        return ``{"error": "bad_request", "message": ...}``."""

    def capture(self) -> Any:
        """A msgpack-able copy of the state, cheap enough to take on the event loop."""

    def restore(self, state: Any) -> None: ...


@dataclass(frozen=True, slots=True)
class Capture:
    """A point-in-time view of the state machine, taken in O(1) on the event loop.

    ``data`` is the state machine's frozen layer (``LayeredDict.freeze``), read-only until
    ``chunks()`` finishes (or ``release`` is called); values are replaced, never mutated in
    place, so reading it from a worker thread is safe.
    """

    data: dict[str, tuple[Any, int]]
    revision: int
    clock_ms: int
    sessions: list[tuple[str, int, int, dict[int, Result]]]
    apps: dict[str, Any] = field(default_factory=dict)
    release: Callable[[], None] = field(default=lambda: None)

    def chunks(self) -> Iterator[bytes]:
        """The snapshot's bytes in pieces: a header, then the keys in batches.

        The keys are walked lazily: listing a million keys first would itself hold the GIL
        for tens of milliseconds.
        """
        try:
            count = (len(self.data) + SNAPSHOT_CHUNK_KEYS - 1) // SNAPSHOT_CHUNK_KEYS
            yield msgpack.packb(
                {"v": SNAPSHOT_FORMAT, "revision": self.revision, "clock_ms": self.clock_ms,
                 "sessions": self.sessions, "apps": self.apps, "chunks": count},
                use_bin_type=True,
            )
            items = iter(self.data.items())
            for _ in range(count):
                part = islice(items, SNAPSHOT_CHUNK_KEYS)
                yield msgpack.packb([(k, v, r) for k, (v, r) in part], use_bin_type=True)
        finally:
            self.release()


class DictStateMachine:
    def __init__(self, *, session_ttl_ms: int = 3_600_000, max_sessions: int = 100_000) -> None:
        self.store = LayeredDict()
        """key -> (value, revision). Values are replaced, never mutated in place."""
        self.revision = 0
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        """Least recently active first, so expiry pops from the front."""
        self.clock_ms = 0
        self.state_hash = 0
        """Sum mod 2**64 of every item's 64-bit hash: kept up to date on each write, so
        operators can compare members (etcd's hashkv) without hashing a large state."""
        self.session_ttl_ms = session_ttl_ms
        self.max_sessions = max_sessions
        self.apps: dict[str, AppStateMachine] = {}
        # Two item hashes per overwrite on every member: a Packer of our own (never shared
        # across threads) spares packb's per-call Packer construction, half its cost.
        self._pack_item = msgpack.Packer(use_bin_type=True).pack

    def register_app(self, name: str, app: AppStateMachine) -> None:
        self.apps[name] = app

    # -- writes ----------------------------------------------------------------------------
    @property
    def data(self) -> dict[str, tuple[Any, int]]:
        """The user's keys as a plain dict (for tests and tools; the hot path uses store)."""
        return self.store.as_dict()

    def key_count(self) -> int:
        return len(self.store)

    def apply_batch(self, data: bytes) -> list[Result]:
        """Apply one entry's commands. An undecodable entry (only a faulty or forged peer
        could have put it in the log) is skipped the same way on every node, not fatal."""
        self.store.settle()
        try:
            timestamp, commands = decode_batch(data)
            if type(timestamp) is not int:
                raise ValueError("timestamp is not an int")
        except (ValueError, TypeError, StopIteration, msgpack.UnpackException) as e:
            log.error("skipped an undecodable log entry: %s", e)
            return []
        # A new leader's clock may lag the old one's: leader time never goes backwards.
        self.clock_ms = max(self.clock_ms, timestamp)
        self._expire_sessions()
        return [self.apply_command(c) for c in commands]

    def apply_command(self, cmd: Command) -> Result:
        if not _well_formed(cmd):
            return {"error": "bad_request", "message": "malformed command in the log"}
        op, key, value, client_id, seq, first_unacked, if_revision, if_absent = cmd
        if client_id is None:
            return self._execute(op, key, value, if_revision, if_absent)
        session = self.sessions.get(client_id)
        if session is None:
            if seq != 1:
                return _session_expired(client_id, seq)
            session = self.sessions[client_id] = Session(last_active_ms=self.clock_ms)
            self._evict_if_full()
        self.sessions.move_to_end(client_id)
        session.last_active_ms = self.clock_ms
        cached = session.results.get(seq)
        if cached is not None:
            return cached
        if seq < session.first_unacked_seq:
            return _session_expired(client_id, seq)
        if first_unacked > session.first_unacked_seq:
            session.first_unacked_seq = first_unacked
            for old in [s for s in session.results if s < first_unacked]:
                del session.results[old]
        result = self._execute(op, key, value, if_revision, if_absent)
        session.results[seq] = result
        return result

    def _execute(
        self, op: int, key: str, value: Any, if_revision: int | None, if_absent: bool
    ) -> Result:
        current = self.store.get(key)
        current_revision = current[1] if current is not None else 0
        if if_absent and current is not None:
            return _condition_failed(key, "exists", current_revision)
        if if_revision is not None and if_revision != current_revision:
            return _condition_failed(key, f"has revision {current_revision}", current_revision)
        if op == APP:
            app = self.apps.get(key)
            if app is None:
                return {"error": "bad_request", "message": f"no application {key!r} here"}
            return app.apply(value, self.clock_ms)
        if op == SET:
            self.revision += 1
            if current is not None:
                self.state_hash -= self._item_hash(key, *current)
            added = self._item_hash(key, value, self.revision)
            self.state_hash = (self.state_hash + added) & _MASK64
            self.store.set(key, (value, self.revision), existed=current is not None)
            return {"revision": self.revision}
        if op == DELETE:
            if current is None:
                return {"found": False}
            self.revision += 1
            self.state_hash = (self.state_hash - self._item_hash(key, *current)) & _MASK64
            self.store.delete(key)
            return {"found": True, "revision": self.revision}
        return {"error": "bad_request", "message": f"unknown operation {op!r}"}

    def _expire_sessions(self) -> None:
        horizon = self.clock_ms - self.session_ttl_ms
        while self.sessions:
            oldest = next(iter(self.sessions.values()))
            if oldest.last_active_ms >= horizon:
                return
            self.sessions.popitem(last=False)

    def _evict_if_full(self) -> None:
        while len(self.sessions) > self.max_sessions:
            self.sessions.popitem(last=False)

    # -- snapshots -------------------------------------------------------------------------
    def capture(self) -> Capture:
        sessions = [
            (cid, sess.last_active_ms, sess.first_unacked_seq, dict(sess.results))
            for cid, sess in self.sessions.items()
        ]
        apps = {name: app.capture() for name, app in self.apps.items()}
        frozen, release = self.store.freeze()
        return Capture(frozen, self.revision, self.clock_ms, sessions, apps, release)

    @staticmethod
    def verify_snapshot(snapshot: bytes) -> None:
        """Raise ValueError unless ``restore`` would accept ``snapshot``: checked before the
        node replaces its log with it, so a bad one is refused instead of stopping the node."""
        try:
            unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=False,
                                        max_buffer_size=max(len(snapshot), 1))
            unpacker.feed(snapshot)
            header = next(unpacker)
            if type(header) is not dict or header.get("v") != SNAPSHOT_FORMAT:
                raise ValueError("not a state machine snapshot of a known format")
            for name in ("revision", "clock_ms", "chunks"):
                if type(header.get(name)) is not int:
                    raise ValueError(f"header field {name} is not an int")
            if not isinstance(header.get("sessions"), (list, tuple)) or not isinstance(
                header.get("apps", {}), dict
            ):
                raise ValueError("bad sessions or apps")
            for _ in range(header["chunks"]):
                for item in next(unpacker):
                    key, _value, revision = item
                    if type(key) is not str or type(revision) is not int:
                        raise ValueError("bad item")
        except (ValueError, TypeError, StopIteration, msgpack.UnpackException) as e:
            raise ValueError(f"invalid state machine snapshot: {e}") from e

    def restore(self, snapshot: bytes) -> None:
        """Replace the whole state by a snapshot produced by ``Capture.chunks``."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, use_list=False,
                                    max_buffer_size=max(len(snapshot), 1))
        unpacker.feed(snapshot)
        header = next(unpacker)
        if header.get("v") != SNAPSHOT_FORMAT:
            raise ValueError(f"unknown state machine snapshot format {header.get('v')!r}")
        data: dict[str, tuple[Any, int]] = {}
        for _ in range(header["chunks"]):
            for key, value, revision in next(unpacker):
                data[key] = (value, revision)
        self.store = LayeredDict(data)
        self.state_hash = sum(self._item_hash(k, v, r) for k, (v, r) in data.items()) & _MASK64
        self.revision = header["revision"]
        self.clock_ms = header["clock_ms"]
        self.sessions = OrderedDict(
            (cid, Session(last, first, {int(s): r for s, r in results.items()}))
            for cid, last, first, results in header["sessions"]
        )
        for name, state in header.get("apps", {}).items():
            if name in self.apps:
                self.apps[name].restore(state)

    # -- reads -----------------------------------------------------------------------------
    def get(self, key: str) -> tuple[bool, Any, int]:
        self.store.settle()
        item = self.store.get(key)
        if item is None:
            return False, None, 0
        return True, item[0], item[1]

    def whole(self) -> dict[str, Any]:
        self.store.settle()
        return {k: v for k, (v, _) in self.store.items()}

    def list(
        self, prefix: str, after: str | None, limit: int, max_bytes: int = LIST_PAGE_BYTES
    ) -> tuple[list[list[Any]], bool]:
        """One page: at most ``limit`` items, and no more once their sizes pass ``max_bytes``
        (a page of big values must still fit one response frame); never empty if items remain.
        """
        self.store.settle()
        # The first limit+1 keys in order, without sorting them all (a large state is listed
        # page by page, each a scan of it).
        keys = heapq.nsmallest(limit + 1, (
            k for k, _ in self.store.items()
            if k.startswith(prefix) and (after is None or k > after)
        ))
        page: list[list[Any]] = []
        size = 0
        for key in keys[:limit]:
            value, revision = self.store.get(key)
            size += value_bytes(key) + value_bytes(value)
            if page and size > max_bytes:
                return page, True
            page.append([key, value, revision])
        return page, len(keys) > limit

    def _item_hash(self, key: str, value: Any, revision: int) -> int:
        packed = self._pack_item((key, value, revision))
        return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little")

    def digest(self) -> str:
        """A hash of the user-visible state, equal on members that applied the same entries."""
        return f"{self.state_hash:016x}"


def value_bytes(value: Any) -> int:
    """The size of a value as ``max_entry_bytes`` and list pages count it: the bytes of a
    string (UTF-8) or of a bytes value, the msgpack encoding of anything else."""
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, str):
        return len(value.encode())
    return len(msgpack.packb(value, use_bin_type=True))


_MASK64 = (1 << 64) - 1
_OPTIONAL_INT = (type(None), int)


def _well_formed(cmd: Any) -> bool:
    """Whether ``cmd`` has the shape ``encode_command`` gives (forged entries may not)."""
    return (
        type(cmd) is tuple
        and len(cmd) == 8
        and type(cmd[0]) is int
        and type(cmd[1]) is str
        and type(cmd[3]) in (type(None), str)
        and type(cmd[4]) in _OPTIONAL_INT
        and type(cmd[5]) in _OPTIONAL_INT
        and type(cmd[6]) in _OPTIONAL_INT
        and type(cmd[7]) is bool
        and (cmd[3] is None or (cmd[4] is not None and cmd[5] is not None))
    )


def _session_expired(client_id: str, seq: int) -> Result:
    return {
        "error": "session_expired",
        "message": f"session of client {client_id} no longer knows seq {seq}",
    }


def _condition_failed(key: str, why: str, revision: int) -> Result:
    return {"error": "condition_failed", "message": f"key {key!r} {why}", "revision": revision}

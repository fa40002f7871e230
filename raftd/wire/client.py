"""The client protocol (DESIGN.md "Client wire protocol") as pure functions and dataclasses.

``parse_request(obj)`` turns one decoded msgpack map into a request dataclass or raises
``BadRequest`` naming the offending field; the response builders ``result``, ``error`` and
``redirect`` make the maps sent back. Parsing is strict: unknown fields are refused, because a
misspelt condition (``if_revison``) silently ignored would turn a compare-and-set into a blind
write.

Session fields of ``append`` (exactly-once writes): ``client_id`` (str) and ``seq`` (int >= 1)
come together; ``first_unacked_seq`` (<= ``seq``, default ``seq``) is the smallest seq the
client still awaits, so the server may forget its cached replies below it. A client keeps one
``seq`` counter for its lifetime, so a session may start at any seq.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, cast

from raftd.wire.errors import BadRequest, FieldTooLarge
from raftd.wire.errors import short_repr as _short

__all__ = [
    "AppendRequest",
    "BadRequest",
    "ConfigRequest",
    "DiagnosticRequest",
    "ErrorCode",
    "GetRequest",
    "ListRequest",
    "Request",
    "error",
    "parse_address",
    "parse_request",
    "redirect",
    "result",
]

MAX_KEY_BYTES = 4096
MAX_CLIENT_ID_CHARS = 128
MAX_ADDRESS_CHARS = 255
INT_LIMIT = 2**63
"""Exclusive upper bound of ids, seqs, revisions and limits."""

Consistency = Literal["linearizable", "stale"]
AppendAction = Literal["change", "delete"]
ConfigAction = Literal["add", "delete", "promote"]
CONSISTENCY_LEVELS: tuple[str, ...] = ("linearizable", "stale")


class ErrorCode(enum.StrEnum):
    """Codes of ``{"type": "error"}`` responses, each with a default ``retryable``."""

    NOT_LEADER = "not_leader"
    NO_LEADER = "no_leader"
    TIMEOUT = "timeout"
    TOO_LARGE = "too_large"
    BAD_REQUEST = "bad_request"
    CONDITION_FAILED = "condition_failed"
    CONF_CHANGE_IN_PROGRESS = "conf_change_in_progress"
    TRANSFERRING = "transferring"
    NO_SPACE = "no_space"
    SESSION_EXPIRED = "session_expired"
    UNAUTHORIZED = "unauthorized"
    OVERLOADED = "overloaded"
    SHUTTING_DOWN = "shutting_down"

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed if sent again (perhaps to another node)."""
        return self in RETRYABLE_CODES


# Transient conditions that clear by themselves: an election, a leadership transfer, a full
# queue, a node going away, a previous membership change still committing (one change at a
# time, so the next one succeeds once it commits). A timed-out write is safe to resend because
# the session dedupes it. The rest depend on the request or on the client's state.
RETRYABLE_CODES: frozenset[str] = frozenset(
    {
        ErrorCode.NOT_LEADER,
        ErrorCode.NO_LEADER,
        ErrorCode.TIMEOUT,
        ErrorCode.TRANSFERRING,
        ErrorCode.OVERLOADED,
        ErrorCode.SHUTTING_DOWN,
        ErrorCode.CONF_CHANGE_IN_PROGRESS,
    }
)


# Requests are not frozen: a frozen dataclass's __init__ sets each field through
# object.__setattr__, about a microsecond more per request on the hot path. Nothing mutates them.
@dataclass(slots=True, kw_only=True)
class GetRequest:
    """``key`` None reads the whole state."""

    key: str | None
    consistency: Consistency = "linearizable"
    id: int | None = None


@dataclass(slots=True, kw_only=True)
class ListRequest:
    """Keys starting with ``prefix`` and sorting after ``after``; ``limit`` None: server's."""

    prefix: str = ""
    after: str | None = None
    limit: int | None = None
    id: int | None = None


@dataclass(slots=True, kw_only=True)
class AppendRequest:
    """A write. ``value`` is None for a delete; the session fields are all None or all set."""

    action: AppendAction
    key: str
    value: Any = None
    client_id: str | None = None
    seq: int | None = None
    first_unacked_seq: int | None = None
    if_revision: int | None = None
    if_absent: bool = False
    id: int | None = None


@dataclass(slots=True, kw_only=True)
class DiagnosticRequest:
    id: int | None = None


@dataclass(slots=True, kw_only=True)
class ConfigRequest:
    """A membership change; ``address`` is ``host:port`` (the seed's ``port`` field merged)."""

    action: ConfigAction
    address: str
    learner: bool = False
    id: int | None = None


@dataclass(slots=True, kw_only=True)
class TransferLeaderRequest:
    """Hand leadership to ``address`` (None: the most caught-up voter)."""

    address: str | None = None
    id: int | None = None


@dataclass(slots=True, kw_only=True)
class HealthRequest:
    """The leader commits a no-op; a follower proves, by a ReadIndex round, that it reaches one."""

    id: int | None = None


@dataclass(slots=True, kw_only=True)
class SnapshotRequest:
    """A consistent copy of the whole state, taken by the leader after a ReadIndex round."""

    id: int | None = None


@dataclass(slots=True, kw_only=True)
class AppRequest:
    """A request for an application hosted by raftd (``fl_*``: federated learning).

    ``kind`` is the request type; ``body`` the other fields, validated by the application.
    """

    app: str
    kind: str
    body: dict[str, Any]
    id: int | None = None


APP_PREFIXES: dict[str, str] = {"fl_": "fl"}
"""Request-type prefix -> application name."""


Request = (
    AppRequest
    | SnapshotRequest
    | HealthRequest
    | GetRequest
    | ListRequest
    | AppendRequest
    | DiagnosticRequest
    | ConfigRequest
    | TransferLeaderRequest
)


def parse_request(obj: object) -> Request:
    """Validate one decoded request map; raises ``BadRequest`` (carrying ``id`` if readable)."""
    if type(obj) is not dict:
        raise BadRequest(f"a request must be a map, not {type(obj).__name__}")
    rid = _parse_id(obj)
    kind = obj.get("type")
    parser = _PARSERS.get(kind) if type(kind) is str else None
    if parser is None and type(kind) is str:
        for prefix, app in APP_PREFIXES.items():
            if kind.startswith(prefix) and len(kind) <= 64:
                body = {k: v for k, v in obj.items() if k not in _ENVELOPE}
                return AppRequest(app=app, kind=kind, body=body, id=rid)
    if parser is None:
        raise BadRequest(f"field 'type': unknown request type {_short(kind)}", id=rid)
    return parser(obj, rid)


def result(*, id: int | None = None, success: bool = True, **fields: Any) -> dict[str, Any]:
    """``{"type": "result", "success": ..., **fields}``, echoing ``id`` when given."""
    response = {"type": "result", "success": success, **fields}
    if id is not None:
        response["id"] = id
    return response


def error(
    code: ErrorCode, message: str, retryable: bool | None = None, *, id: int | None = None
) -> dict[str, Any]:
    """An error response; ``retryable`` defaults to the code's ``ErrorCode.retryable``."""
    response: dict[str, Any] = {
        "type": "error",
        "code": code.value,
        "message": message,
        "retryable": code.retryable if retryable is None else retryable,
    }
    if id is not None:
        response["id"] = id
    return response


def redirect(leader: str | None, *, id: int | None = None) -> dict[str, Any]:
    """Tell a client to send its write to ``leader`` (None: no leader known yet)."""
    response: dict[str, Any] = {"type": "redirect", "leader": leader}
    if id is not None:
        response["id"] = id
    return response


def parse_address(text: str) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` too); raises ``ValueError`` with a reason."""
    if not 0 < len(text) <= MAX_ADDRESS_CHARS:
        raise ValueError(f"expected host:port, got {_short(text)}")
    host, sep, port = text.rpartition(":")
    if not sep or not host or host.isspace() or any(c.isspace() for c in text):
        raise ValueError(f"expected host:port, got {_short(text)}")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise ValueError(f"port must be 1-65535 in {_short(text)}")
    if host.startswith("[") and host.endswith("]"):
        # Node ids of IPv6 nodes are written [addr]:port (raftd.config.format_address);
        # sockets want the bare address.
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{_short(host)} is not an IPv6 address") from None
    return host, int(port)


# -- parsers, one per request type -----------------------------------------------------------

_ENVELOPE = frozenset({"type", "id"})
_GET_FIELDS = _ENVELOPE | {"key", "consistency"}


def _parse_get(obj: dict[Any, Any], rid: int | None) -> GetRequest:
    _only(obj, _GET_FIELDS, rid)
    key = obj.get("key")
    if key is not None:
        _key(key, "key", rid)
    consistency = obj.get("consistency", "linearizable")
    if type(consistency) is not str or consistency not in CONSISTENCY_LEVELS:
        raise BadRequest(
            f"field 'consistency': expected one of {', '.join(CONSISTENCY_LEVELS)}", id=rid
        )
    return GetRequest(key=key, consistency=cast(Consistency, consistency), id=rid)


def _parse_list(obj: dict[Any, Any], rid: int | None) -> ListRequest:
    _only(obj, _ENVELOPE | {"prefix", "after", "limit"}, rid)
    prefix = obj.get("prefix", "")
    if type(prefix) is not str or (prefix and not _fits(prefix)):
        kind = FieldTooLarge if _too_long(prefix) else BadRequest
        raise kind(f"field 'prefix': expected a str of <= {MAX_KEY_BYTES} bytes", id=rid)
    after = obj.get("after")
    if after is not None:
        _key(after, "after", rid)
    limit = obj.get("limit")
    if limit is not None:
        _int(limit, "limit", rid, minimum=1)
    return ListRequest(prefix=prefix, after=after, limit=limit, id=rid)


_APPEND_FIELDS = frozenset(
    {"action", "key", "value", "client_id", "seq", "first_unacked_seq", "if_revision", "if_absent"}
)
_APPEND_ENVELOPE = _ENVELOPE | {"data"}


def _parse_append(obj: dict[Any, Any], rid: int | None) -> AppendRequest:
    _only(obj, _APPEND_ENVELOPE, rid)
    data = obj.get("data")
    if type(data) is not dict:
        raise BadRequest("field 'data': expected a map", id=rid)
    _only(data, _APPEND_FIELDS, rid, where="data.")
    action = data.get("action")
    if type(action) is not str or action not in ("change", "delete"):
        raise BadRequest("field 'data.action': expected 'change' or 'delete'", id=rid)
    key = _key(data.get("key"), "data.key", rid)
    if action == "change":
        if "value" not in data:
            raise BadRequest("field 'data.value': required by 'change'", id=rid)
    elif "value" in data:
        raise BadRequest("field 'data.value': not allowed with 'delete'", id=rid)

    client_id = data.get("client_id")
    seq = data.get("seq")
    first_unacked = data.get("first_unacked_seq")
    if client_id is not None or seq is not None or first_unacked is not None:
        if type(client_id) is not str or not 0 < len(client_id) <= MAX_CLIENT_ID_CHARS:
            raise BadRequest(
                f"field 'data.client_id': expected a non-empty str of <= {MAX_CLIENT_ID_CHARS}"
                " chars (the session fields come together)",
                id=rid,
            )
        seq = _int(seq, "data.seq", rid, minimum=1)
        if first_unacked is None:
            first_unacked = seq
        _int(first_unacked, "data.first_unacked_seq", rid, minimum=1)
        if first_unacked > seq:
            raise BadRequest("field 'data.first_unacked_seq': must be <= 'data.seq'", id=rid)

    if_revision = data.get("if_revision")
    if if_revision is not None:
        _int(if_revision, "data.if_revision", rid, minimum=0)
    if_absent = data.get("if_absent", False)
    if type(if_absent) is not bool:
        raise BadRequest("field 'data.if_absent': expected a bool", id=rid)
    if if_absent and (action == "delete" or if_revision is not None):
        raise BadRequest(
            "field 'data.if_absent': only with 'change' and without 'if_revision'", id=rid
        )
    return AppendRequest(
        action=cast(AppendAction, action),  # an alias: cast(Literal[...]) costs a subscript
        key=key,
        value=data.get("value"),
        client_id=client_id,
        seq=seq,
        first_unacked_seq=first_unacked,
        if_revision=if_revision,
        if_absent=if_absent,
        id=rid,
    )


def _parse_diagnostic(obj: dict[Any, Any], rid: int | None) -> DiagnosticRequest:
    _only(obj, _ENVELOPE, rid)
    return DiagnosticRequest(id=rid)


def _parse_config(obj: dict[Any, Any], rid: int | None) -> ConfigRequest:
    _only(obj, _ENVELOPE | {"action", "address", "port", "learner"}, rid)
    action = obj.get("action")
    if type(action) is not str or action not in ("add", "delete", "promote"):
        raise BadRequest("field 'action': expected 'add', 'delete' or 'promote'", id=rid)
    address = obj.get("address")
    if type(address) is not str:
        raise BadRequest("field 'address': expected a 'host:port' str", id=rid)
    port = obj.get("port")
    if port is not None:
        # The seed sent host and port apart; a port repeated in both places must agree.
        _int(port, "port", rid, minimum=1)
        host, sep, tail = address.rpartition(":")
        if sep and tail.isdigit() and host and not host.endswith(":"):
            if int(tail) != port:
                raise BadRequest("field 'port': differs from the port in 'address'", id=rid)
        else:
            address = f"{address}:{port}"
    try:
        parse_address(address)
    except ValueError as exc:
        raise BadRequest(f"field 'address': {exc}", id=rid) from None
    learner = obj.get("learner", False)
    if type(learner) is not bool:
        raise BadRequest("field 'learner': expected a bool", id=rid)
    if learner and action != "add":
        raise BadRequest("field 'learner': only with action 'add'", id=rid)
    action = cast(ConfigAction, action)
    return ConfigRequest(action=action, address=address, learner=learner, id=rid)


def _parse_snapshot(obj: dict[Any, Any], rid: int | None) -> SnapshotRequest:
    _only(obj, _ENVELOPE, rid)
    return SnapshotRequest(id=rid)


def _parse_health(obj: dict[Any, Any], rid: int | None) -> HealthRequest:
    _only(obj, _ENVELOPE, rid)
    return HealthRequest(id=rid)


def _parse_transfer_leader(obj: dict[Any, Any], rid: int | None) -> TransferLeaderRequest:
    _only(obj, _ENVELOPE | {"address"}, rid)
    address = obj.get("address")
    if address is not None:
        if type(address) is not str:
            raise BadRequest("field 'address': expected a 'host:port' str", id=rid)
        try:
            parse_address(address)
        except ValueError as exc:
            raise BadRequest(f"field 'address': {exc}", id=rid) from None
    return TransferLeaderRequest(address=address, id=rid)


_PARSERS: dict[str, Callable[[dict[Any, Any], int | None], Request]] = {
    "get": _parse_get,
    "list": _parse_list,
    "append": _parse_append,
    "diagnostic": _parse_diagnostic,
    "config": _parse_config,
    "transfer_leader": _parse_transfer_leader,
    "health": _parse_health,
    "snapshot": _parse_snapshot,
}


# -- field checks -----------------------------------------------------------------------------


def _parse_id(obj: dict[Any, Any]) -> int | None:
    rid = obj.get("id")
    if rid is None:
        return None
    if type(rid) is not int or not 0 <= rid < INT_LIMIT:
        raise BadRequest("field 'id': expected an int in [0, 2**63)")
    return rid


def _only(obj: dict[Any, Any], allowed: frozenset[str], rid: int | None, where: str = "") -> None:
    if obj.keys() <= allowed:
        return  # one C-level comparison; the loop below only finds the name to report
    for name in obj:
        if name not in allowed:
            label = f"{where}{name}" if type(name) is str else f"{where}{name!r}"
            raise BadRequest(f"field {_short(label)}: unknown", id=rid)


def _int(value: object, field: str, rid: int | None, *, minimum: int) -> int:
    if type(value) is not int or not minimum <= value < INT_LIMIT:
        raise BadRequest(f"field '{field}': expected an int in [{minimum}, 2**63)", id=rid)
    return value


def _key(value: object, field: str, rid: int | None) -> str:
    if type(value) is not str or not value or not _fits(value):
        kind = FieldTooLarge if _too_long(value) else BadRequest
        raise kind(
            f"field '{field}': expected a non-empty str of <= {MAX_KEY_BYTES} UTF-8 bytes", id=rid
        )
    return value


def _too_long(value: object) -> bool:
    """A str over ``MAX_KEY_BYTES``: a limit (``too_large``), not a malformed request."""
    return type(value) is str and len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES


def utf8_size(text: str) -> int | None:
    """The UTF-8 length of ``text``, or None if it is no valid UTF-8 (lone surrogates, as
    undecodable command-line bytes arrive)."""
    try:
        return len(text.encode())
    except UnicodeEncodeError:
        return None


def _fits(text: str) -> bool:
    """``text`` is valid UTF-8 (no lone surrogates) of at most ``MAX_KEY_BYTES`` bytes."""
    if len(text) > MAX_KEY_BYTES:
        return False
    size = utf8_size(text)
    return size is not None and size <= MAX_KEY_BYTES

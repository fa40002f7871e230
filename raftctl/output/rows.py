"""Shape server answers into rows once; every printer renders the same rows.

Pure functions over plain data, so table, plain and JSON output can never disagree about
what a field means (etcdctl's printer.go / makeMemberListTable split).
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from raftctl.client import Item

# pre_candidate is an internal PreVote phase; users see it as a candidate (DESIGN.md roles).
_ROLES = {"pre_candidate": "candidate"}

Diagnostic = Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRow:
    """One cluster member as `raftctl status` reports it (DESIGN.md field names).

    ``lag``: entries of the leader's log the member lacks (the leader's view);
    ``last_contact_ms``: how long ago the leader last heard from it, when the leader says.
    """

    address: str
    role: str | None
    term: int | None
    leader: str | None
    commit_index: int | None
    applied_index: int | None
    last_log_index: int | None
    lag: int | None
    last_contact_ms: int | None
    reachable: bool
    error: str | None = None
    catching_up: bool | None = None


def _leader_view(
    address: str, leader: Diagnostic | None, *, reachable: bool
) -> tuple[int | None, int | None]:
    """(lag, last contact in ms) of ``address`` as the answering leader reports them.

    A match index of 0 is a blank member catching up, or, for a member we cannot reach, only
    the lack of an ack in this leader's term: then nobody knows its lag."""
    if leader is None:
        return None, None
    if _self(leader) == address:
        return 0, None
    last = _section(leader, "log").get("lastLogIndex")
    match = _mapping(leader.get("matchIndex")).get(address)
    known = isinstance(last, int) and isinstance(match, int) and (reachable or match > 0)
    lag = last - match if known else None
    contact = _mapping(leader.get("lastContactMs")).get(address)
    return (None if lag is None else max(lag, 0)), (contact if isinstance(contact, int) else None)


def status_row(address: str, diagnostic: Diagnostic, leader: Diagnostic | None) -> StatusRow:
    """The row for a member that answered `diagnostic`; ``leader``: the leader's, if known."""
    persist = _section(diagnostic, "persist")
    volatile = _section(diagnostic, "volatile")
    log = _section(diagnostic, "log")
    status = diagnostic.get("status")
    lag, contact = _leader_view(address, leader, reachable=True)
    return StatusRow(
        address=address,
        role=_ROLES.get(status, status) if isinstance(status, str) else None,
        term=persist.get("currentTerm"),
        leader=volatile.get("leaderId") or None,
        commit_index=log.get("commitIndex"),
        applied_index=log.get("appliedIndex"),
        last_log_index=log.get("lastLogIndex"),
        lag=lag,
        last_contact_ms=contact,
        reachable=True,
        catching_up=diagnostic.get("catchingUp"),
    )


def unreachable_row(address: str, error: str, leader: Diagnostic | None) -> StatusRow:
    """A member that did not answer us; the leader may still report hearing from it."""
    lag, contact = _leader_view(address, leader, reachable=False)
    return StatusRow(
        address=address,
        role=None,
        term=None,
        leader=None,
        commit_index=None,
        applied_index=None,
        last_log_index=None,
        lag=lag,
        last_contact_ms=contact,
        reachable=False,
        error=error,
    )


def status_records(rows: Sequence[StatusRow]) -> list[dict[str, Any]]:
    """JSON objects, one per member."""
    return [asdict(row) for row in rows]


STATUS_HEADER = (
    "ADDRESS",
    "ROLE",
    "TERM",
    "LEADER",
    "COMMIT",
    "APPLIED",
    "LAST",
    "LAG",
    "CONTACT",
    "REACHABLE",
    "ERROR",
)


def status_cells(rows: Sequence[StatusRow]) -> list[tuple[str, ...]]:
    """Text cells under `STATUS_HEADER`; "-" where a value is unknown."""
    return [
        (
            row.address,
            _cell(row.role),
            _cell(row.term),
            _cell(row.leader),
            _cell(row.commit_index),
            _cell(row.applied_index),
            _cell(row.last_log_index),
            _cell(row.lag),
            duration_text(row.last_contact_ms),
            "yes" if row.reachable else "no",
            _cell(row.error),
        )
        for row in rows
    ]


def cluster_leader(rows: Sequence[StatusRow]) -> StatusRow | None:
    """The member leading in the highest term any member reports (a deposed leader cut off
    from the others may still call itself leader in its old term)."""
    terms = [row.term for row in rows if row.term is not None]
    if not terms:
        return None
    top = max(terms)
    return next((r for r in rows if r.role == "leader" and r.term == top), None)


# -- health ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthRow:
    """One member's answer to a health check: a committed no-op, or a ReadIndex round."""

    address: str
    healthy: bool
    took_ms: float | None
    leader: str | None
    commit_index: int | None
    error: str | None = None


HEALTH_HEADER = ("ADDRESS", "HEALTHY", "TOOK", "LEADER", "COMMIT", "ERROR")


def health_cells(rows: Sequence[HealthRow]) -> list[tuple[str, ...]]:
    return [
        (
            row.address,
            "yes" if row.healthy else "no",
            duration_text(row.took_ms),
            _cell(row.leader),
            _cell(row.commit_index),
            _cell(row.error),
        )
        for row in rows
    ]


def health_records(rows: Sequence[HealthRow]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


# -- keys --------------------------------------------------------------------------------------

ITEM_HEADER = ("KEY", "VALUE", "REVISION")


def item_record(item: Item, *, values: bool = True) -> dict[str, Any]:
    record = item._asdict()
    if not values:
        del record["value"]
    return record


def item_cells(item: Item, *, values: bool = True) -> tuple[str, ...]:
    """Cells of one key; its text is `key_text`, a value's made one line by `one_line`."""
    if not values:
        return (key_text(item.key), str(item.revision))
    return (key_text(item.key), one_line(item.value), str(item.revision))


def key_text(key: str) -> str:
    """A key as it is, or as a JSON string when it holds a character that is not printable
    (a tab, a line break, another control or invisible one) or starts with a double quote.

    So a key is always one cell of one line, and a cell starting with a double quote is JSON.
    Inside that JSON string, invisible characters are escaped too (``\\u200b``).
    """
    if key.isprintable() and not key.startswith('"'):
        return key
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in to_json(key))


def one_line(value: Any) -> str:
    """`scalar_text`, except strings holding tabs or line breaks print as JSON strings."""
    text = scalar_text(value)
    if isinstance(value, str) and any(c in text for c in "\t\n\r"):
        return to_json(value)
    return text


# -- text --------------------------------------------------------------------------------------


def duration_text(ms: float | None) -> str:
    """``830ms``, ``1.2s``, ``5m3s``; "-" when unknown."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms:.0f}ms" if ms >= 10 else f"{ms:.1f}ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    return f"{int(seconds // 60)}m{int(seconds % 60)}s"


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def _section(diagnostic: Diagnostic, name: str) -> Mapping[str, Any]:
    return _mapping(diagnostic.get(name))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _self(diagnostic: Diagnostic) -> str | None:
    address = _section(diagnostic, "volatile").get("address")
    return address if isinstance(address, str) else None


def flatten(value: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """``("log.commitIndex", "12")`` pairs for a nested map; lists stay one JSON value."""
    if isinstance(value, Mapping) and value:
        for key in value:
            yield from flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, scalar_text(value)


def scalar_text(value: Any) -> str:
    """How one value reads on a line: strings bare, everything else as JSON."""
    if isinstance(value, str):
        return value
    return to_json(value)


def to_json(value: Any, *, indent: int | None = None) -> str:
    """JSON for anything msgpack carries. JSON has no bytes, NaN or infinities: bytes that are
    not UTF-8 become ``{"base64": ...}``, and such floats ``{"float": "NaN"}`` (``"Infinity"``,
    ``"-Infinity"``). Map keys are strings: a bytes key is decoded, or written ``base64:...``."""
    try:
        return _dumps(value, indent)
    except (ValueError, TypeError):  # NaN or infinity, or a bytes map key: rare, so only now
        return _dumps(_json_tree(value), indent)


def _dumps(value: Any, indent: int | None) -> str:
    return json.dumps(
        value, default=_jsonable, ensure_ascii=False, allow_nan=False, indent=indent
    )


def _json_tree(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": "NaN" if math.isnan(value) else "Infinity" if value > 0 else "-Infinity"}
    if isinstance(value, Mapping):
        return {_json_key(key): _json_tree(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_tree(item) for item in value]
    return value


def _json_key(key: Any) -> Any:
    if isinstance(key, bytes):
        text = _utf8(key)
        return text if text is not None else "base64:" + _base64(key)
    return key


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        text = _utf8(value)
        return text if text is not None else {"base64": _base64(value)}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _base64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")

"""Shape server answers into rows once; every printer renders the same rows.

Pure functions over plain data, so table, plain and JSON output can never disagree about
what a field means (etcdctl's printer.go / makeMemberListTable split).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# pre_candidate is an internal PreVote phase; users see it as a candidate (DESIGN.md roles).
_ROLES = {"pre_candidate": "candidate"}


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRow:
    """One cluster member as `raftctl status` reports it (DESIGN.md field names)."""

    address: str
    role: str | None
    term: int | None
    leader: str | None
    commit_index: int | None
    applied_index: int | None
    last_log_index: int | None
    reachable: bool
    error: str | None = None
    catching_up: bool | None = None


def status_row(address: str, diagnostic: Mapping[str, Any]) -> StatusRow:
    """The row for a member that answered `diagnostic`."""
    persist = diagnostic.get("persist") or {}
    volatile = diagnostic.get("volatile") or {}
    log = diagnostic.get("log") or {}
    status = diagnostic.get("status")
    return StatusRow(
        address=address,
        role=_ROLES.get(status, status) if isinstance(status, str) else None,
        term=persist.get("currentTerm"),
        leader=volatile.get("leaderId") or None,
        commit_index=log.get("commitIndex"),
        applied_index=log.get("appliedIndex"),
        last_log_index=log.get("lastLogIndex"),
        reachable=True,
        catching_up=diagnostic.get("catchingUp"),
    )


def unreachable_row(address: str, error: str) -> StatusRow:
    return StatusRow(
        address=address,
        role=None,
        term=None,
        leader=None,
        commit_index=None,
        applied_index=None,
        last_log_index=None,
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
    "LAST LOG",
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
            "yes" if row.reachable else "no",
            _cell(row.error),
        )
        for row in rows
    ]


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


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
    """JSON for anything msgpack carries; bytes that are not UTF-8 become ``{"base64": ...}``."""
    return json.dumps(value, default=_jsonable, ensure_ascii=False, indent=indent)


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return {"base64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")

"""``raftctl status --watch``: what changed between two frames, and how a frame looks.

`changes` is pure: it compares two lists of rows. `StatusWatch` keeps the previous frame and
a short log of past events, so a leader change stays on screen after its frame is gone.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from rich.console import Group, RenderableType
from rich.text import Text

from raftctl.output.printers import status_table
from raftctl.output.rows import STATUS_HEADER, StatusRow, cluster_leader, status_cells

WATCHED = ("ROLE", "TERM", "LEADER", "ERROR")
"""Columns highlighted when they change; indexes and lag change all the time."""
EVENTS_SHOWN = 6


@dataclass(frozen=True, slots=True)
class Changes:
    cells: frozenset[tuple[str, str]]
    """(address, column) of every watched cell that differs from the previous frame."""
    events: tuple[str, ...]
    """What happened, e.g. "new leader B (was A)", "term 3 -> 4", "C unreachable: ..."."""


def changes(before: Sequence[StatusRow], after: Sequence[StatusRow]) -> Changes:
    """What differs from ``before`` to ``after``, two frames of the same cluster."""
    events = []
    old, new = cluster_leader(before), cluster_leader(after)
    old_leader = old.address if old else None
    new_leader = new.address if new else None
    if new_leader != old_leader:
        if new_leader is None:
            events.append(f"no leader (was {old_leader})")
        else:
            events.append(f"new leader {new_leader} (was {old_leader or 'none'})")
    old_term = max((r.term for r in before if r.term is not None), default=None)
    new_term = max((r.term for r in after if r.term is not None), default=None)
    if old_term is not None and new_term is not None and new_term > old_term:
        events.append(f"term {old_term} -> {new_term}")

    cells: set[tuple[str, str]] = set()
    previous = {row.address: (row, cells_) for row, cells_ in zip(before, status_cells(before))}
    for row, now in zip(after, status_cells(after), strict=True):
        if row.address not in previous:
            events.append(f"{row.address} joined")
            cells.add((row.address, "ADDRESS"))
            continue
        was, then = previous[row.address]
        for column, a, b in zip(STATUS_HEADER, then, now, strict=True):
            if column in WATCHED and a != b:
                cells.add((row.address, column))
        if was.reachable and not row.reachable:
            events.append(f"{row.address} unreachable: {row.error}")
        elif not was.reachable and row.reachable:
            events.append(f"{row.address} reachable again")
    current = {row.address for row in after}
    events.extend(f"{address} left" for address in previous if address not in current)
    return Changes(frozenset(cells), tuple(events))


class StatusWatch:
    """Turns successive survey results into frames for ``rich.live``."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.previous: list[StatusRow] | None = None
        self.log: deque[str] = deque(maxlen=EVENTS_SHOWN)
        self.error: str | None = None

    def frame(
        self, rows: Sequence[StatusRow] | None, error: str | None, now: datetime
    ) -> RenderableType:
        """The next frame: ``rows`` of this survey, or the ``error`` that prevented it."""
        stamp = now.strftime("%H:%M:%S")
        header = Text(f"{self.title}    {stamp}    (Ctrl-C to quit)", style="bold")
        if rows is None:
            if error != self.error:
                self.log.append(f"{stamp} {error}")
            self.error = error
            return Group(header, Text(f"Error: {error}", style="red"), self._events())
        self.error = None
        found = (
            changes(self.previous, rows) if self.previous is not None else Changes(frozenset(), ())
        )
        for event in found.events:
            self.log.append(f"{stamp} {event}")
        self.previous = list(rows)
        return Group(header, status_table(rows, found.cells), self._events())

    def _events(self) -> RenderableType:
        if not self.log:
            return Text("")
        lines = (Text(line, style="yellow") for line in self.log)
        return Group(Text("\nChanges:", style="bold"), *lines)

"""The Printer seam: commands hand data to a Printer, which alone decides how it looks.

Three printers: `TablePrinter` (rich, for terminals), `PlainPrinter` (tab-separated lines
for scripts) and `JsonPrinter` (JSON, never styled). `choose()` picks one from ``-o``.
All of them write to stdout only; messages go to stderr through `App`.
"""

from __future__ import annotations

import errno
import os
import sys
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Protocol, TextIO

import click
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from raftctl.client import Item
from raftctl.output.rows import (
    HEALTH_HEADER,
    ITEM_HEADER,
    STATUS_HEADER,
    HealthRow,
    StatusRow,
    flatten,
    health_cells,
    health_records,
    item_cells,
    item_record,
    scalar_text,
    status_cells,
    status_records,
    to_json,
)

FORMATS = ("table", "json", "plain")


class OutputError(Exception):
    """stdout could not be written (a full disk, stdout closed with ``>&-``).

    Not a reader that went away: that stays BrokenPipeError (exit 141, silent).
    """

    def __init__(self, cause: OSError) -> None:
        super().__init__(cause.strerror or str(cause))


@contextmanager
def writing_stdout() -> Iterator[None]:
    """Around a write to stdout: its OSError becomes OutputError, so that the error boundary
    (raftctl.cli) never mistakes another OSError for it, nor this one for another."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as err:
        raise OutputError(err) from err


def stdout() -> TextIO:
    """sys.stdout; started with stdout closed, Python sets it to None: writing it fails."""
    if sys.stdout is None:
        raise OutputError(OSError(errno.EBADF, os.strerror(errno.EBADF)))
    return sys.stdout


def echo(message: str | bytes = "", *, nl: bool = True) -> None:
    """Write one piece of data to stdout (bytes exactly)."""
    stdout()  # click.echo would drop the message silently
    with writing_stdout():
        # color=True: into a pipe or file click would strip escape sequences, which are data.
        click.echo(message, nl=nl, color=True)


class Printer(Protocol):
    def value(self, item: Item) -> None:
        """A key read by `get`."""

    def done(self, action: str, key: str, revision: int | None) -> None:
        """A write (`set`, `delete`) succeeded."""

    def items(self, items: Sequence[Item], *, values: bool) -> None:
        """Keys in order (`list`, `get --prefix`), with their values or not."""

    def status(self, rows: Sequence[StatusRow]) -> None:
        """One row per cluster member."""

    def health(self, rows: Sequence[HealthRow]) -> None:
        """One health check per cluster member."""

    def diagnostic(self, address: str, diagnostic: Mapping[str, Any]) -> None:
        """One node's raw diagnostic map."""

    def member(self, action: str, address: str) -> None:
        """A membership change (`add-node`, `promote`, `remove-node`) was applied."""

    def leader(self, address: str) -> None:
        """`transfer-leader` moved leadership to ``address``."""


def _write_value(value: Any) -> None:
    # The value is the data: no decoration, bytes exactly as stored, so `get k > file` works.
    if isinstance(value, bytes):
        echo(value, nl=False)
    else:
        echo(scalar_text(value))


class PlainPrinter:
    """Lines for scripts: values bare, rows tab-separated with no header, "-" for unknown."""

    def value(self, item: Item) -> None:
        _write_value(item.value)

    def done(self, action: str, key: str, revision: int | None) -> None:
        echo("OK")

    def items(self, items: Sequence[Item], *, values: bool) -> None:
        for item in items:
            echo("\t".join(item_cells(item, values=values)[: 2 if values else 1]))

    def status(self, rows: Sequence[StatusRow]) -> None:
        _lines(status_cells(rows))

    def health(self, rows: Sequence[HealthRow]) -> None:
        _lines(health_cells(rows))

    def diagnostic(self, address: str, diagnostic: Mapping[str, Any]) -> None:
        for key, text in flatten(diagnostic):
            echo(f"{key}\t{text}")

    def member(self, action: str, address: str) -> None:
        echo("OK")

    def leader(self, address: str) -> None:
        echo(address)


def _lines(cells: Sequence[Sequence[str]]) -> None:
    for row in cells:
        echo("\t".join(row))


class JsonPrinter:
    """Compact JSON documents, one per command, never styled."""

    def value(self, item: Item) -> None:
        echo(to_json(item_record(item)))

    def done(self, action: str, key: str, revision: int | None) -> None:
        record: dict[str, Any] = {"action": action, "key": key}
        if revision is not None:  # a delete reports none: no "revision": null to misread
            record["revision"] = revision
        echo(to_json(record))

    def items(self, items: Sequence[Item], *, values: bool) -> None:
        echo(to_json([item_record(item, values=values) for item in items]))

    def status(self, rows: Sequence[StatusRow]) -> None:
        echo(to_json(status_records(rows)))

    def health(self, rows: Sequence[HealthRow]) -> None:
        echo(to_json(health_records(rows)))

    def diagnostic(self, address: str, diagnostic: Mapping[str, Any]) -> None:
        echo(to_json(diagnostic))

    def member(self, action: str, address: str) -> None:
        echo(to_json({"action": action, "address": address}))

    def leader(self, address: str) -> None:
        echo(to_json({"leader": address}))


class TablePrinter(PlainPrinter):
    """rich tables for people at a terminal; single values print as in plain mode."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def items(self, items: Sequence[Item], *, values: bool) -> None:
        header = ITEM_HEADER if values else (ITEM_HEADER[0], ITEM_HEADER[2])
        table = _table(header, wrap=("VALUE",))
        for item in items:
            table.add_row(*(Text(cell) for cell in item_cells(item, values=values)))
        self.console.print(table)

    def status(self, rows: Sequence[StatusRow]) -> None:
        self.console.print(status_table(rows))

    def health(self, rows: Sequence[HealthRow]) -> None:
        # ERROR only when some member is unhealthy, as in `status`.
        width = len(HEALTH_HEADER) - all(row.healthy for row in rows)
        table = _table(HEALTH_HEADER[:width], wrap=("ERROR",))
        for row, cells in zip(rows, health_cells(rows), strict=True):
            table.add_row(*cells[:width], style=None if row.healthy else "red")
        self.console.print(table)

    def diagnostic(self, address: str, diagnostic: Mapping[str, Any]) -> None:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold", no_wrap=True)
        grid.add_column(overflow="fold")
        for key, value in diagnostic.items():
            if key == "stats" and isinstance(value, Mapping):
                for name, series in value.items():
                    grid.add_row(f"stats.{name}", Text(rate_text(series)))
            else:
                for path, text in flatten(value, key):
                    grid.add_row(path, Text(text))
        self.console.print(Panel(grid, title=f"diagnostic of {address}", expand=False))


def status_table(
    rows: Sequence[StatusRow], highlight: Collection[tuple[str, str]] = ()
) -> Table:
    """The member table; cells named in ``highlight`` as (address, column) stand out.

    REACHABLE is left out: an unreachable member is red and says why under ERROR, a column
    shown only when some member did not answer (it is the widest one).
    """
    errors = any(not row.reachable for row in rows)
    columns = [c for c in STATUS_HEADER if c != "REACHABLE" and (errors or c != "ERROR")]
    table = _table(columns, wrap=("ERROR",))
    for row, cells in zip(rows, status_cells(rows), strict=True):
        texts = []
        for column, cell in zip(STATUS_HEADER, cells, strict=True):
            if column in columns:
                changed = (row.address, column) in highlight
                texts.append(Text(cell, style="reverse" if changed else ""))
        style = "bold green" if row.role == "leader" else "red" if not row.reachable else None
        table.add_row(*texts, style=style)
    return table


def _table(header: Sequence[str], *, wrap: Collection[str] = ()) -> Table:
    """A borderless table: narrow enough for 80 columns; only ``wrap`` columns may wrap."""
    table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
    for name in header:
        table.add_column(name, no_wrap=name not in wrap, overflow="fold")
    return table


def rate_text(series: Any) -> str:
    """``3 5 0 1 /s (12:03:01-12:03:04)`` for a list of ``[unix_second, count]`` pairs."""
    if not isinstance(series, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, int) for x in p) for p in series
    ):
        return scalar_text(series)
    if not series:
        return "no samples yet"
    counts = " ".join(str(count) for _, count in series)
    first, last = (time.strftime("%H:%M:%S", time.localtime(series[i][0])) for i in (0, -1))
    return f"{counts} per second ({first}-{last})"


def choose(fmt: str, console: Console) -> Printer:
    if fmt == "json":
        return JsonPrinter()
    if fmt == "plain":
        return PlainPrinter()
    return TablePrinter(console)

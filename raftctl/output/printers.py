"""The Printer seam: commands hand data to a Printer, which alone decides how it looks.

Three printers: `TablePrinter` (rich, for terminals), `PlainPrinter` (tab-separated lines
for scripts) and `JsonPrinter` (JSON, never styled). `choose()` picks one from ``-o``.
All of them write to stdout only; messages go to stderr through `App`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from raftctl.output.rows import (
    STATUS_HEADER,
    StatusRow,
    flatten,
    scalar_text,
    status_cells,
    status_records,
    to_json,
)

FORMATS = ("table", "json", "plain")


class Printer(Protocol):
    def value(self, key: str, value: Any) -> None:
        """A value read by `get`."""

    def done(self, action: str, key: str, revision: int | None) -> None:
        """A write (`set`, `delete`) succeeded."""

    def status(self, rows: Sequence[StatusRow]) -> None:
        """One row per cluster member."""

    def diagnostic(self, address: str, diagnostic: Mapping[str, Any]) -> None:
        """One node's raw diagnostic map."""


def _write_value(value: Any) -> None:
    # The value is the data: no decoration, bytes exactly as stored, so `get k > file` works.
    if isinstance(value, bytes):
        click.echo(value, nl=False)
    else:
        click.echo(scalar_text(value))


class PlainPrinter:
    """Lines for scripts: values bare, rows tab-separated with no header, "-" for unknown."""

    def value(self, key: str, value: Any) -> None:
        _write_value(value)

    def done(self, action: str, key: str, revision: int | None) -> None:
        click.echo("OK")

    def status(self, rows: Sequence[StatusRow]) -> None:
        for cells in status_cells(rows):
            click.echo("\t".join(cells))

    def diagnostic(self, address: str, diagnostic: Mapping[str, Any]) -> None:
        for key, text in flatten(diagnostic):
            click.echo(f"{key}\t{text}")


class JsonPrinter:
    """Compact JSON documents, one per command, never styled."""

    def value(self, key: str, value: Any) -> None:
        click.echo(to_json({"key": key, "value": value}))

    def done(self, action: str, key: str, revision: int | None) -> None:
        click.echo(to_json({"action": action, "key": key, "revision": revision}))

    def status(self, rows: Sequence[StatusRow]) -> None:
        click.echo(to_json(status_records(rows)))

    def diagnostic(self, address: str, diagnostic: Mapping[str, Any]) -> None:
        click.echo(to_json(diagnostic))


class TablePrinter(PlainPrinter):
    """rich tables for people at a terminal; single values print as in plain mode."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def status(self, rows: Sequence[StatusRow]) -> None:
        table = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 1, 0, 0))
        # The ERROR column only when some member did not answer: it is the widest one.
        width = len(STATUS_HEADER) if any(row.error for row in rows) else len(STATUS_HEADER) - 1
        for name in STATUS_HEADER[:width]:
            # Addresses and roles are never broken across lines; long errors wrap instead.
            table.add_column(name, no_wrap=name in ("ADDRESS", "ROLE", "LEADER"), overflow="fold")
        for row, cells in zip(rows, status_cells(rows), strict=True):
            style = "bold green" if row.role == "leader" else "red" if not row.reachable else None
            table.add_row(*cells[:width], style=style)
        self.console.print(table)

    def diagnostic(self, address: str, diagnostic: Mapping[str, Any]) -> None:
        table = Table(title=f"diagnostic of {address}", box=None, show_header=False)
        table.add_column("key", style="bold")
        table.add_column("value", overflow="fold")
        for key, text in flatten(diagnostic):
            table.add_row(key, Text(text))
        self.console.print(table)


def choose(fmt: str, console: Console) -> Printer:
    if fmt == "json":
        return JsonPrinter()
    if fmt == "plain":
        return PlainPrinter()
    return TablePrinter(console)

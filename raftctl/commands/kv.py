"""Key-value verbs: set, get, delete."""

from __future__ import annotations

import sys
from typing import Any

import click

from raftctl.app import App
from raftctl.exitcodes import ExitCode

_MISSING = object()


def _stdin_value() -> str | bytes:
    data = sys.stdin.buffer.read()
    # Like shell $(...): `echo v | raftctl set k -` stores "v", not "v\n".
    if data.endswith(b"\n"):
        data = data[:-1]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data  # binary input is stored as bytes, exactly


@click.command("set")
@click.argument("key")
@click.argument("value")
@click.pass_obj
def set_(app: App, key: str, value: str) -> None:
    """Set KEY to VALUE (a string); VALUE "-" reads it from stdin.

    From stdin, one trailing newline is dropped, and input that is not UTF-8 is stored as
    bytes. Prints OK once the write is committed by a majority.
    """
    data: Any = _stdin_value() if value == "-" else value
    with app.client() as client:
        revision = client.set(key, data)
    app.printer.done("set", key, revision)


@click.command()
@click.argument("key")
@click.option(
    "--consistency",
    type=click.Choice(("linearizable", "stale")),
    default="linearizable",
    show_default=True,
    help="linearizable reads see every committed write; stale reads answer from any node's "
    "local state, faster but possibly behind.",
)
@click.pass_obj
def get(app: App, key: str, consistency: str) -> None:
    """Print the value of KEY on stdout; exit status 1 when KEY does not exist."""
    with app.client() as client:
        value = client.get(key, _MISSING, consistency=consistency)
    if value is _MISSING:
        app.abort(ExitCode.FAILED, f"key not found: {key}")
    app.printer.value(key, value)


@click.command()
@click.argument("key")
@click.pass_obj
def delete(app: App, key: str) -> None:
    """Delete KEY; exit status 1 when KEY does not exist."""
    with app.client() as client:
        found = client.delete(key)
    if not found:
        app.abort(ExitCode.FAILED, f"key not found: {key}")
    app.printer.done("delete", key, None)

"""Key-value verbs: set, get, delete, list."""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import click

from raftctl.app import App
from raftctl.commands.params import key_argument, prefix_argument
from raftctl.exitcodes import ExitCode
from raftctl.options import VerbCommand
from raftctl.output.rows import key_text


def _stdin_value() -> str | bytes:
    if sys.stdin is None:  # started with stdin closed (<&-): Python sets it to None
        raise click.BadParameter("'-' reads stdin, which is closed", param_hint="'VALUE'")
    try:
        data = sys.stdin.buffer.read()
    except (OSError, ValueError) as err:  # e.g. stdin opened write-only (0>file)
        reason = getattr(err, "strerror", None) or err
        raise click.BadParameter(f"cannot read stdin: {reason}", param_hint="'VALUE'") from None
    # Like shell $(...): `echo v | raftctl set k -` stores "v", not "v\n".
    if data.endswith(b"\n"):
        data = data[:-1]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data  # binary input is stored as bytes, exactly


def _parse_json(text: str | bytes) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except ValueError as err:
        raise click.BadParameter(f"not valid JSON: {err}", param_hint="'VALUE'") from None


def _no_constant(name: str) -> Any:
    # Python's json takes NaN, Infinity and -Infinity; JSON does not, nor would `get -o json`.
    raise ValueError(f"JSON has no {name}")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):  # 1e400 is valid JSON, but becomes an infinity
        raise click.BadParameter(
            f"number out of range of a 64-bit float: {text}", param_hint="'VALUE'"
        )
    return number


_IF_REVISION = click.option(
    "--if-revision",
    type=click.IntRange(min=0),
    metavar="R",
    help="Only if KEY's revision is still R (as printed by `get -o json`; 0: KEY does not "
    "exist). Otherwise nothing is written and the exit status is 1.",
)


@click.command("set", cls=VerbCommand, short_help='Set KEY to VALUE ("-": read it from stdin).')
@click.argument("key", callback=key_argument)
@click.argument("value")
@_IF_REVISION
@click.option(
    "--if-absent",
    is_flag=True,
    help="Only if KEY does not exist yet; otherwise nothing is written and the exit status is 1.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="VALUE is JSON: 42, true, [1, 2] or {\"a\": 1} are stored as a number, a bool, a list "
    "or a map instead of a string.",
)
@click.pass_obj
def set_(
    app: App, key: str, value: str, if_revision: int | None, if_absent: bool, as_json: bool
) -> None:
    """Set KEY to VALUE (a string); VALUE "-" reads it from stdin.

    From stdin, one trailing newline is dropped, and input that is not UTF-8 is stored as
    bytes. Prints OK once the write is committed by a majority; -o json prints the key's new
    revision. With --if-revision or --if-absent the write is a compare-and-set: a safe
    read-modify-write when several clients update one key.
    """
    if if_revision is not None and if_absent:
        raise click.UsageError("--if-revision and --if-absent exclude each other")
    data: Any = _stdin_value() if value == "-" else value
    if as_json:
        data = _parse_json(data)
    with app.client() as client:
        revision = client.set(key, data, if_revision=if_revision, if_absent=if_absent)
    app.printer.done("set", key, revision)


@click.command(cls=VerbCommand,
               short_help="Print the value of KEY, or of every key under --prefix.")
@click.argument("key", required=False, callback=key_argument)
@click.option(
    "--prefix",
    metavar="PREFIX",
    callback=prefix_argument,
    help="Instead of one KEY, print every key starting with PREFIX (\"\" for all) and its "
    "value, in key order.",
)
@click.option(
    "--consistency",
    type=click.Choice(("linearizable", "stale")),
    default="linearizable",
    show_default=True,
    help="linearizable reads see every committed write; stale reads answer from any node's "
    "local state, faster but possibly behind (one KEY only).",
)
@click.pass_obj
def get(app: App, key: str | None, prefix: str | None, consistency: str) -> None:
    """Print the value of KEY on stdout; exit status 1 when KEY does not exist.

    -o json prints {"key", "value", "revision"}. Give that revision to set or delete
    --if-revision to write only if KEY has not changed since.
    """
    if prefix is not None:
        if key is not None:
            raise click.UsageError("give KEY or --prefix, not both")
        if consistency != "linearizable":
            raise click.UsageError("--consistency stale reads one KEY only")
        with app.client() as client:
            app.printer.items(list(client.items(prefix)), values=True)
        return
    if key is None:
        raise click.UsageError("Missing argument 'KEY' (or give --prefix).")
    with app.client() as client:
        item = client.get_item(key, consistency=consistency)
    if item is None:
        app.abort(ExitCode.FAILED, f"key not found: {key_text(key)}")
    app.printer.value(item)


@click.command("list", cls=VerbCommand,
               short_help="List the keys starting with PREFIX (default: all).")
@click.argument("prefix", default="", callback=prefix_argument)
@click.pass_obj
def list_(app: App, prefix: str) -> None:
    """List the keys starting with PREFIX (all keys by default), in order.

    The keys travel in pages, so a large state is never one message. Exit status 0 even when
    no key matches.
    """
    with app.client() as client:
        app.printer.items(list(client.items(prefix)), values=False)


@click.command(cls=VerbCommand)
@click.argument("key", callback=key_argument)
@_IF_REVISION
@click.pass_obj
def delete(app: App, key: str, if_revision: int | None) -> None:
    """Delete KEY; exit status 1 when KEY does not exist."""
    with app.client() as client:
        found = client.delete(key, if_revision=if_revision)
    if not found:
        app.abort(ExitCode.FAILED, f"key not found: {key_text(key)}")
    app.printer.done("delete", key, None)

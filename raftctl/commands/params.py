"""Parameter checks shared by several verbs and the global options: usage errors (exit 2)."""

from __future__ import annotations

import click

from raftctl.client import key_problem
from raftctl.connection import parse_endpoints
from raftctl.errors import RaftctlError
from raftd.wire.client import MAX_KEY_BYTES, utf8_size


def node_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check one ``host:port`` argument; a usage error (exit status 2) otherwise."""
    if value is None:
        return None
    try:
        (address,) = parse_endpoints(value)
    except (RaftctlError, ValueError) as err:
        raise click.BadParameter(str(err)) from None
    return address


def _utf8_size(text: str, what: str) -> int:
    size = utf8_size(text)
    if size is None:
        raise click.BadParameter(f"{what} must be valid UTF-8")
    return size


def key_argument(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A KEY as the server takes it (non-empty, <= MAX_KEY_BYTES UTF-8 bytes), or None."""
    if value is None:
        return None
    problem = key_problem(value)
    if problem is not None:
        raise click.BadParameter(problem)
    return value


def prefix_argument(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A key PREFIX: like a KEY, but may be empty (every key)."""
    if value is not None and _utf8_size(value, "a prefix") > MAX_KEY_BYTES:
        raise click.BadParameter(f"a prefix is at most {MAX_KEY_BYTES} UTF-8 bytes")
    return value

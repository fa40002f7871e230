"""Parameter checks shared by several verbs and the global options: usage errors (exit 2)."""

from __future__ import annotations

import click

from raftctl.client import key_problem
from raftctl.connection import parse_endpoints


def node_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check one ``host:port`` argument; a usage error (exit status 2) otherwise."""
    if value is None:
        return None
    try:
        (address,) = parse_endpoints(value)
    except ValueError as err:  # InvalidEndpoint, or more than one
        raise click.BadParameter(str(err)) from None
    return address


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
    if value is None:
        return None
    problem = key_problem(value, what="a prefix", may_be_empty=True)
    if problem is not None:
        raise click.BadParameter(problem)
    return value

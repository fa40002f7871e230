"""Parameter types shared by several verbs."""

from __future__ import annotations

import click

from raftctl.connection import parse_endpoints
from raftctl.errors import RaftctlError


def node_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check one ``host:port`` argument; a usage error (exit status 2) otherwise."""
    if value is None:
        return None
    try:
        (address,) = parse_endpoints(value)
    except (RaftctlError, ValueError) as err:
        raise click.BadParameter(str(err)) from None
    return address

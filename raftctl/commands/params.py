"""Parameter checks shared by several verbs and the global options: usage errors (exit 2)."""

from __future__ import annotations

import ipaddress
import re

import click

from raftctl.connection import parse_endpoints
from raftctl.errors import InvalidEndpoint, RaftctlError
from raftd.wire.client import MAX_KEY_BYTES, utf8_size

# A DNS name, IDNA-encoded first: letters, digits, '-' inside a label, '_' for the names
# container runtimes give (not RFC 1123, but resolvers take them); an optional final dot.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
# Characters of some host form (name, IPv4, [IPv6%zone]); anything else is a typo.
_HOST_CHARS = re.compile(r"[A-Za-z0-9._:%\[\]-]")
_SEPARATORS = frozenset(";| ")


def _host_problem(host: str) -> str | None:
    """Why `host` (of host:port) is no host name or IP literal, or None if it may be one."""
    bad = next((c for c in host if c.isascii() and not _HOST_CHARS.fullmatch(c)), None)
    if bad is not None:
        hint = " (separate endpoints with commas)" if bad in _SEPARATORS else ""
        return f"{bad!r} is not allowed in a host name or IP address{hint}"
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif "[" in host or "]" in host:
        return "write IPv6 addresses as [addr]:port"
    elif ":" not in host:
        try:
            name = host.encode("idna").decode("ascii")  # bücher.example: an IDN is fine
        except UnicodeError:
            name = ""
        return None if _HOST_NAME.fullmatch(name) else f"{host!r} is not a valid host name"
    try:
        ipaddress.IPv6Address(host)  # [v6]:port, or the bare ::1:7001 the client also takes
    except ValueError:
        return f"{host!r} is not an IPv6 address"
    return None


def cli_endpoints(value: str) -> list[str]:
    """The endpoints of `value` ("h:p,h:p"); raises InvalidEndpoint, also for a host no node
    could have (``http://h:p``, ``h:p;h:p``), so a typo fails now rather than at connect."""
    endpoints = parse_endpoints(value)
    for endpoint in endpoints:
        if "://" in endpoint:
            raise InvalidEndpoint(f"invalid endpoint {endpoint!r}: give host:port, no URL scheme")
        problem = _host_problem(endpoint.rpartition(":")[0])
        if problem is not None:
            raise InvalidEndpoint(f"invalid endpoint {endpoint!r}: {problem}")
    return endpoints


def node_address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Check one ``host:port`` argument; a usage error (exit status 2) otherwise."""
    if value is None:
        return None
    try:
        (address,) = cli_endpoints(value)
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
    if not value:
        raise click.BadParameter("a key must not be empty")
    size = _utf8_size(value, "a key")
    if size > MAX_KEY_BYTES:
        raise click.BadParameter(f"a key is at most {MAX_KEY_BYTES} UTF-8 bytes, not {size}")
    return value


def prefix_argument(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A key PREFIX: like a KEY, but may be empty (every key)."""
    if value is not None and _utf8_size(value, "a prefix") > MAX_KEY_BYTES:
        raise click.BadParameter(f"a prefix is at most {MAX_KEY_BYTES} UTF-8 bytes")
    return value

"""Cluster verbs: status (every member at once) and diagnostic (one node's raw map)."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import click

from raftctl.app import App
from raftctl.client import AsyncClient, parse_endpoints
from raftctl.errors import ClusterUnavailable, RaftctlError, RequestTimeout
from raftctl.output.rows import StatusRow, status_row, unreachable_row

Diagnostic = Mapping[str, Any]


async def _ask(
    client: AsyncClient, addresses: Iterable[str]
) -> dict[str, Diagnostic | RaftctlError]:
    """Every address's diagnostic, or the error it gave; all asked at once."""
    addresses = list(addresses)
    answers = await asyncio.gather(
        *(client.diagnostic(a) for a in addresses), return_exceptions=True
    )
    out: dict[str, Diagnostic | RaftctlError] = {}
    for address, answer in zip(addresses, answers, strict=True):
        if isinstance(answer, BaseException) and not isinstance(answer, RaftctlError):
            raise answer
        out[address] = answer
    return out


def _reason(err: RaftctlError) -> str:
    """A short cell text for a member that did not answer, e.g. "connection refused"."""
    if isinstance(err, RequestTimeout):
        return "timed out"
    text = str(err)
    if isinstance(err, ClusterUnavailable):
        # Drop the "no node reachable (tried A): A: " framing; the row already names A.
        text = text.removeprefix(f"no node reachable (tried {', '.join(err.endpoints)})")
        text = text.removeprefix(": ")
        for endpoint in err.endpoints:
            text = text.removeprefix(f"{endpoint}: ")
    errno = re.match(r"\[Errno (\d+)\]", text)
    if errno:
        return os.strerror(int(errno.group(1))).lower()
    return text or "unreachable"


def _unavailable(errors: Mapping[str, RaftctlError]) -> ClusterUnavailable:
    detail = "; ".join(f"{address}: {_reason(err)}" for address, err in errors.items())
    return ClusterUnavailable(list(errors), detail)


def _self_address(endpoint: str, diagnostic: Diagnostic) -> str:
    volatile = diagnostic.get("volatile")
    address = volatile.get("address") if isinstance(volatile, Mapping) else None
    return address if isinstance(address, str) and address else endpoint


def _members(answered: Mapping[str, Diagnostic]) -> list[str]:
    """The member list: from the leader if it answered (it is the most recent), else any."""
    ranked = sorted(answered.values(), key=lambda d: d.get("status") != "leader")
    for diagnostic in ranked:
        volatile = diagnostic.get("volatile")
        cluster = volatile.get("cluster") if isinstance(volatile, Mapping) else None
        if isinstance(cluster, list) and all(isinstance(m, str) for m in cluster):
            return list(cluster)
    return []


async def collect_status(endpoints: Sequence[str], timeout: float) -> list[StatusRow]:
    """One row per cluster member, plus any answering endpoint that is not a member.

    Raises ClusterUnavailable when no endpoint answers at all.
    """
    async with AsyncClient(endpoints, timeout) as client:
        first = await _ask(client, endpoints)
        answered: dict[str, Diagnostic] = {}
        errors: dict[str, RaftctlError] = {}
        for endpoint, answer in first.items():
            if isinstance(answer, RaftctlError):
                errors[endpoint] = answer
            else:
                # Key by the node's own address: "-e localhost:7001" and the member list's
                # "127.0.0.1:7001" are the same node.
                answered[_self_address(endpoint, answer)] = answer
        if not answered:
            raise _unavailable(errors)
        members = _members(answered)
        missing = [m for m in members if m not in answered and m not in errors]
        for address, answer in (await _ask(client, missing)).items():
            if isinstance(answer, RaftctlError):
                errors[address] = answer
            else:
                answered[address] = answer
    rows = []
    for address in members + [a for a in answered if a not in members]:
        if address in answered:
            rows.append(status_row(address, answered[address]))
        else:
            rows.append(unreachable_row(address, _reason(errors[address])))
    return rows


async def first_diagnostic(endpoints: Sequence[str], timeout: float) -> tuple[str, Diagnostic]:
    """The diagnostic of the first endpoint (in the given order) that answers."""
    async with AsyncClient(endpoints, timeout) as client:
        answers = await _ask(client, endpoints)
    for endpoint, answer in answers.items():
        if not isinstance(answer, RaftctlError):
            return endpoint, answer
    raise _unavailable({e: a for e, a in answers.items() if isinstance(a, RaftctlError)})


@click.command()
@click.pass_obj
def status(app: App) -> None:
    """Show every cluster member: role, term, leader and log indexes.

    All members are asked in parallel; the member list comes from any node that answers
    (the leader's, when it answers). Members that do not answer are shown as unreachable.
    Exit status 3 when no node answers at all.
    """
    app.printer.status(asyncio.run(collect_status(app.endpoints, app.timeout)))


def _address(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        (address,) = parse_endpoints(value)
    except (RaftctlError, ValueError) as err:
        raise click.BadParameter(str(err)) from None
    return address


@click.command()
@click.argument("address", required=False, callback=_address)
@click.pass_obj
def diagnostic(app: App, address: str | None) -> None:
    """Show one node's raw diagnostic map: role, term, log indexes, request statistics.

    ADDRESS (host:port) defaults to the first endpoint that answers.
    """
    if address is None:
        address, answer = asyncio.run(first_diagnostic(app.endpoints, app.timeout))
    else:
        answer = asyncio.run(_one(address, app.timeout))
    app.printer.diagnostic(address, answer)


async def _one(address: str, timeout: float) -> Diagnostic:
    async with AsyncClient([address], timeout) as client:
        return await client.diagnostic(address)

"""Cluster verbs: status (every member at once, or live), diagnostic (one node), health."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime

import click
from rich.live import Live

from raftctl.app import App
from raftctl.client import AsyncClient
from raftctl.commands.params import node_address
from raftctl.errors import RaftctlError, Unauthorized
from raftctl.exitcodes import ExitCode
from raftctl.options import Seconds, VerbCommand
from raftctl.output.printers import echo
from raftctl.output.rows import StatusRow
from raftctl.output.watch import StatusWatch
from raftctl.survey import collect_status, first_diagnostic, health_rows, status_rows

DEFAULT_WATCH_SECONDS = 2.0
MIN_WATCH_TIMEOUT = 1.0

Survey = tuple[list[StatusRow] | None, str | None]


@click.command(cls=VerbCommand, short_help="Show every member's role, term, log indexes and lag.")
@click.option(
    "-w",
    "--watch",
    type=Seconds(min=0.1, min_open=False),
    is_flag=False,
    flag_value=DEFAULT_WATCH_SECONDS,
    default=None,
    metavar="[SECONDS]",
    help=f"Refresh every SECONDS (default {DEFAULT_WATCH_SECONDS:g}) until Ctrl-C, highlighting "
    "what changed: a new leader, a term bump, a member becoming unreachable. With -o json, "
    "one JSON array per line per refresh; with -o plain, one block of rows per refresh.",
)
@click.pass_obj
def status(app: App, watch: float | None) -> None:
    """Show every cluster member: role, term, leader, log indexes, lag and last contact.

    All members are asked in parallel; the member list comes from any node that answers
    (the leader's, when it answers). COMMIT, APPLIED and LAST are the member's commit,
    applied and last log indexes; LAG counts the entries of the leader's log it lacks;
    CONTACT is how long ago the leader last heard from it, when the leader reports it.
    Members that do not answer are shown as unreachable, with the reason. Exit status 1
    when the nodes answer only with an error (such as unauthorized), 3 when no node answers
    at all (a watch keeps trying instead, except when it is unauthorized).
    """
    if watch is None:
        app.printer.status(asyncio.run(collect_status(app.endpoints, app.timeout, **app.access)))
        return
    try:
        asyncio.run(_watch_live(app, watch) if app.output == "table" else _watch_lines(app, watch))
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a watch ends: exit status 0, the last frame left on screen


async def _surveys(app: App, interval: float) -> AsyncIterator[Survey]:
    """The member rows (or why there are none) every ``interval`` seconds, forever."""
    loop = asyncio.get_running_loop()
    # A member that does not answer within the interval shows as timed out, not a late frame.
    timeout = min(app.timeout, max(interval, MIN_WATCH_TIMEOUT))
    async with AsyncClient(app.endpoints, timeout, **app.access) as client:
        while True:
            started = loop.time()
            try:
                survey: Survey = (await status_rows(client, app.endpoints), None)
            except Unauthorized:
                raise  # the nodes answer, and no retry brings the token: end as status does
            except RaftctlError as err:
                survey = (None, str(err))
            yield survey
            await asyncio.sleep(max(0.0, started + interval - loop.time()))


async def _watch_live(app: App, interval: float) -> None:
    watch = StatusWatch(f"Every {interval:g}s: raftctl status")
    if not app.console.is_terminal:
        # Into a file or pipe (-o table), frames follow each other: redrawing needs a terminal.
        async for rows, error in _surveys(app, interval):
            app.console.print(watch.frame(rows, error, datetime.now()))
        return
    with Live(console=app.console, auto_refresh=False) as live:
        async for rows, error in _surveys(app, interval):
            live.update(watch.frame(rows, error, datetime.now()), refresh=True)


async def _watch_lines(app: App, interval: float) -> None:
    async for rows, error in _surveys(app, interval):
        if rows is None:
            click.echo(f"Error: {error}", err=True)
            continue
        app.printer.status(rows)
        if app.output == "plain":
            echo()  # a blank line ends each block


@click.command(cls=VerbCommand, short_help="Show one node's diagnostic map: role, log, rates.")
@click.argument("address", required=False, callback=node_address)
@click.pass_obj
def diagnostic(app: App, address: str | None) -> None:
    """Show one node's diagnostic map: role, terms, log indexes, request rates and more.

    ADDRESS (host:port) defaults to the first endpoint that answers. stats.reads, writes and
    append are per-second counts over the last 10 seconds, each with its UNIX second in
    -o json.
    """
    if address is None:
        address, answer = asyncio.run(first_diagnostic(app.endpoints, app.timeout, **app.access))
    else:
        answer = asyncio.run(_one(address, app))
    app.printer.diagnostic(address, answer)


async def _one(address: str, app: App) -> dict[str, object]:
    async with AsyncClient([address], app.timeout, **app.access) as client:
        return await client.diagnostic(address)


@click.command(cls=VerbCommand, short_help="Check that every member takes part in committing.")
@click.pass_obj
def health(app: App) -> None:
    """Check that every member takes part in committing, and time it.

    The leader commits an empty entry; each other member confirms the leader's commit
    index with a majority (a ReadIndex round). TOOK is the round trip seen from here. Exit
    status 0 when every member is healthy, 1 (naming the reason) when one is not or the
    nodes answer only with an error, 3 when no node answers at all.
    """
    rows = asyncio.run(health_rows(app.endpoints, app.timeout, **app.access))
    app.printer.health(rows)
    sick = [row for row in rows if not row.healthy]
    if sick:
        reasons = "; ".join(f"{row.address}: {row.error}" for row in sick)
        app.abort(ExitCode.FAILED, f"{len(sick)} of {len(rows)} members unhealthy ({reasons})")

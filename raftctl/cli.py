"""The ``raftctl`` root group: global options, the App, and the one error boundary.

Every client-library exception is turned into one stderr line and a named exit code here
(`RaftctlGroup.invoke`), so no command needs its own try/except and no user ever sees a
traceback (etcdctl's cobrautl.ExitWithError).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from raftctl.app import App
from raftctl.commands.bench import bench
from raftctl.commands.cluster import diagnostic, health, status
from raftctl.commands.kv import delete, get, list_, set_
from raftctl.commands.membership import add_node, promote, remove_node, transfer_leader
from raftctl.commands.snapshot import snapshot
from raftctl.connection import parse_endpoints, tls_context
from raftctl.errors import (
    ClusterUnavailable,
    ConditionFailed,
    InvalidEndpoint,
    RaftctlError,
    RequestTimeout,
    ServerError,
)
from raftctl.exitcodes import ExitCode
from raftctl.fl.cli import fl
from raftctl.output.printers import FORMATS
from raftd import __version__

DEFAULT_ENDPOINTS = "127.0.0.1:7001"
DEFAULT_TIMEOUT = 5.0


def exit_code_for(err: RaftctlError) -> ExitCode:
    if isinstance(err, (ClusterUnavailable, RequestTimeout)):
        return ExitCode.UNREACHABLE
    if isinstance(err, InvalidEndpoint):
        return ExitCode.USAGE
    return ExitCode.FAILED


def error_message(err: RaftctlError, endpoints: tuple[str, ...]) -> str:
    if isinstance(err, RequestTimeout):
        return f"timed out ({err}; endpoints tried: {', '.join(endpoints)})"
    if isinstance(err, ConditionFailed):
        return f"condition failed: {err.message or 'the key changed'}"
    if isinstance(err, ServerError):
        return f"the cluster answered with an error: {err}"
    return str(err)


class RaftctlGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        """In the order registered: key-value verbs, then cluster ones, then membership."""
        return list(self.commands)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RaftctlError as err:
            app = ctx.obj
            endpoints = app.endpoints if isinstance(app, App) else ()
            click.echo(f"Error: {error_message(err, endpoints)}", err=True)
            ctx.exit(int(exit_code_for(err)))


def _endpoints(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    try:
        return tuple(parse_endpoints(value))
    except InvalidEndpoint as err:
        raise click.BadParameter(str(err)) from None


@click.group(cls=RaftctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-e",
    "--endpoints",
    envvar="RAFTCTL_ENDPOINTS",
    show_envvar=True,
    default=DEFAULT_ENDPOINTS,
    show_default=True,
    metavar="HOST:PORT,...",
    callback=_endpoints,
    help="Comma-separated cluster nodes to contact; any one is enough.",
)
@click.option(
    "-o",
    "--output",
    type=click.Choice(FORMATS),
    help="Output format. Default: table on a terminal, plain otherwise.",
)
@click.option(
    "--timeout",
    envvar="RAFTCTL_TIMEOUT",
    show_envvar=True,
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_TIMEOUT,
    show_default=True,
    metavar="SECONDS",
    help="Give up on a request after this long (exit status 3).",
)
@click.option(
    "--token",
    envvar="RAFTCTL_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="Client token, for nodes with [security] client_token_file (prefer the environment "
    "variable: command lines are visible to other users).",
)
@click.option(
    "--tls",
    is_flag=True,
    envvar="RAFTCTL_TLS",
    show_envvar=True,
    help="Speak TLS to the nodes, verified against the system's CAs (implied by --cacert "
    "and --cert).",
)
@click.option(
    "--cacert",
    envvar="RAFTCTL_CACERT",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="PEM CA certificates that signed the nodes' certificates; turns TLS on.",
)
@click.option(
    "--cert",
    envvar="RAFTCTL_CERT",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="PEM client certificate, for nodes that verify clients ([security] tls_ca).",
)
@click.option(
    "--key",
    envvar="RAFTCTL_KEY",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    metavar="FILE",
    help="PEM private key of --cert (when not inside the --cert file).",
)
@click.version_option(__version__, "-V", "--version", prog_name="raftctl")
@click.pass_context
def cli(
    ctx: click.Context,
    endpoints: tuple[str, ...],
    output: str | None,
    timeout: float,
    token: str | None,
    tls: bool,
    cacert: str | None,
    cert: str | None,
    key: str | None,
) -> None:
    """raftctl: read and write keys in a rafty cluster, watch it and change its members.

    Any one reachable endpoint is enough: raftctl finds the leader and follows redirects.
    Data goes to stdout, messages to stderr. Exit status: 0 success; 1 not found, a
    condition failed, or the cluster answered with an error; 2 usage error; 3 no node
    reachable or timed out.
    """
    if output is None:
        output = "table" if sys.stdout.isatty() else "plain"
    if key is not None and cert is None:
        raise click.BadParameter("needs --cert as well", param_hint="--key")
    # The TLS files are loaded once, here: a bad one is a usage error, before any command.
    try:
        context = tls_context(tls, cacert=cacert, cert=cert, key=key)
    except RaftctlError as err:
        raise click.BadParameter(str(err), param_hint="--cacert/--cert/--key") from None
    access = {"token": token, "tls": context} if context is not None else {"token": token}
    ctx.obj = App(endpoints=endpoints, timeout=timeout, output=output, access=access)


COMMANDS = (
    set_,
    get,
    delete,
    list_,
    status,
    diagnostic,
    health,
    add_node,
    promote,
    remove_node,
    transfer_leader,
    snapshot,
    bench,
)
for command in COMMANDS:
    cli.add_command(command)
cli.add_command(fl)


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="raftctl")

"""The global options, before or after the verb, and the App built from them.

``raftctl -o json get k`` and ``raftctl get k -o json`` mean the same (etcdctl takes its flags
anywhere too). The root group declares the options (`global_options`) and applies environment
variables and defaults there, as ever. Every verb and nested group is a `VerbCommand` or a
`VerbGroup`, which declares them again (`GlobalOption`, the same help text); those count
only when typed on the command line, and the one typed last (on the deepest command) wins. Just
before the verb runs, `VerbCommand.invoke` merges them (`resolve`) into the one `App`
every verb gets with ``@click.pass_obj``; no callback ever sees the options themselves.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Any

import click
from click.core import ParameterSource

from raftctl.app import App, stdout_isatty
from raftctl.connection import Credentials, parse_endpoints
from raftctl.errors import InvalidEndpoint, RaftctlError
from raftctl.output.printers import FORMATS

DEFAULT_ENDPOINTS = "127.0.0.1:7001"
DEFAULT_TIMEOUT = 5.0
HEADING = "Global options (also before the command)"


def _endpoints(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    try:
        return tuple(parse_endpoints(value))
    except InvalidEndpoint as err:
        raise click.BadParameter(str(err)) from None


class Seconds(click.FloatRange):
    """A finite duration above ``min`` (> 0 by default): FloatRange lets nan through (no
    comparison holds) and inf too."""

    name = "number of seconds"  # click: "'abc' is not a valid number of seconds."

    def __init__(self, min: float = 0, *, min_open: bool = True) -> None:
        super().__init__(min=min, min_open=min_open)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds.", param, ctx)
        return seconds


OPTIONS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (("-e", "--endpoints"), dict(
        envvar="RAFTCTL_ENDPOINTS", show_envvar=True, default=DEFAULT_ENDPOINTS,
        show_default=True, metavar="HOST:PORT,...", callback=_endpoints,
        help="Comma-separated cluster nodes to contact; any one is enough.")),
    (("-o", "--output"), dict(
        type=click.Choice(FORMATS),
        help="Output format. Default: table on a terminal, plain otherwise.")),
    (("--timeout",), dict(
        envvar="RAFTCTL_TIMEOUT", show_envvar=True, type=Seconds(),
        default=DEFAULT_TIMEOUT, show_default=True, metavar="SECONDS",
        help="Give up on a request after this long (exit status 3).")),
    (("--token",), dict(
        envvar="RAFTCTL_TOKEN", show_envvar=True, metavar="TOKEN",
        help="Client token, for nodes with [security] client_token_file (prefer the "
        "environment variable: command lines are visible to other users).")),
    (("--tls",), dict(
        is_flag=True, envvar="RAFTCTL_TLS", show_envvar=True,
        help="Speak TLS to the nodes, verified against the system's CAs (implied by --cacert "
        "and --cert).")),
    (("--cacert",), dict(
        envvar="RAFTCTL_CACERT", show_envvar=True, type=click.Path(exists=True, dir_okay=False),
        metavar="FILE",
        help="PEM CA certificates that signed the nodes' certificates; turns TLS on.")),
    (("--cert",), dict(
        envvar="RAFTCTL_CERT", show_envvar=True, type=click.Path(exists=True, dir_okay=False),
        metavar="FILE",
        help="PEM client certificate, for nodes that verify clients ([security] tls_ca).")),
    (("--key",), dict(
        envvar="RAFTCTL_KEY", show_envvar=True, type=click.Path(exists=True, dir_okay=False),
        metavar="FILE", help="PEM private key of --cert (when not inside the --cert file).")),
)
"""(declarations, attributes) of each global option, in help order."""

PREFIX = "global_"
"""Of each option's parameter name, so that none clashes with a verb's own (``get KEY``)."""


def _declarations(decls: tuple[str, ...]) -> tuple[str, ...]:
    return (*decls, PREFIX + max(decls, key=len).lstrip("-").replace("-", "_"))


NAMES = tuple(_declarations(decls)[-1] for decls, _ in OPTIONS)

Callback = Callable[..., Any]


def global_options(func: Callback) -> Callback:
    """Declare the global options on the root group, where the environment and defaults apply."""
    for decls, attrs in reversed(OPTIONS):
        func = click.option(*_declarations(decls), cls=RootOption, **attrs)(func)
    return func


class _BadFromEnvironment:
    """A root option's environment variable that did not parse: an error only if the value
    stays in effect (``resolve``), not when the option is typed again after the verb."""

    def __init__(self, error: click.BadParameter) -> None:
        self.error = error


class RootOption(click.Option):
    """A global option on the root group: a bad environment variable fails late (see above)."""

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        try:
            return super().process_value(ctx, value)
        except click.BadParameter as err:
            if ctx.get_parameter_source(self.name or "") is not ParameterSource.ENVIRONMENT:
                raise
            err.ctx, err.param = ctx, self  # click names the option and its variable
            return _BadFromEnvironment(err)


class GlobalOption(click.Option):
    """A global option declared again on a verb: it counts only when typed after that verb."""

    def value_from_envvar(self, ctx: click.Context) -> Any:
        # The root reads the environment (once); read again here, a bad variable would fail
        # the verb even when the option is typed.
        return None


def without_globals(callback: Callback) -> Callback:
    """`callback`, called without the global options (they reach it as the App)."""

    @functools.wraps(callback)
    def call(*args: Any, **kwargs: Any) -> Any:
        return callback(*args, **{k: v for k, v in kwargs.items() if k not in NAMES})

    return call


def _declare_again(command: click.Command) -> None:
    taken = {p.name for p in command.params}
    taken.update(opt for p in command.params for opt in (*p.opts, *p.secondary_opts))
    for decls, attrs in OPTIONS:
        option = GlobalOption(_declarations(decls), **attrs)
        clash = taken & {option.name, *option.opts}
        if clash:
            raise TypeError(f"{command.name}: {', '.join(sorted(map(str, clash)))} is global")
        command.params.append(option)
    if command.callback is not None:
        command.callback = without_globals(command.callback)


def _write_options(
    command: click.Command,
    ctx: click.Context,
    formatter: click.HelpFormatter,
    *,
    shared: bool,
) -> None:
    """The command's own options, or the global ones under their own heading."""
    records = [
        record
        for param in command.get_params(ctx)
        if isinstance(param, click.Option) and isinstance(param, GlobalOption) == shared
        and (record := param.get_help_record(ctx)) is not None
    ]
    if records:
        with formatter.section(HEADING if shared else "Options"):
            formatter.write_dl(records)


def resolve(ctx: click.Context) -> dict[str, Any]:
    """The global options in effect for the command of `ctx`, by name (``endpoints``, ...).

    The outermost command that declares an option gives its value (from the command line, the
    environment or the default); a deeper one overrides it only with a value typed on the
    command line. A bad environment variable still in effect is a usage error here.
    """
    chain = []
    at: click.Context | None = ctx
    while at is not None:
        chain.append(at)
        at = at.parent
    values: dict[str, Any] = {}
    for at in reversed(chain):
        for name in NAMES:
            if name in at.params and (
                name not in values
                or at.get_parameter_source(name) is ParameterSource.COMMANDLINE
            ):
                values[name] = at.params[name]
    for value in values.values():
        if isinstance(value, _BadFromEnvironment):
            raise value.error
    return {name.removeprefix(PREFIX): value for name, value in values.items()}


def make_app(ctx: click.Context, values: Mapping[str, Any]) -> App:
    """The App of the resolved global options; a bad combination is a usage error (exit 2)."""
    output = values["output"] or ("table" if stdout_isatty() else "plain")
    cacert, cert, key = values["cacert"], values["cert"], values["key"]
    if key is not None and cert is None:
        raise click.BadParameter("needs --cert as well", ctx=ctx, param_hint="--key")
    credentials = Credentials(token=values["token"], tls=values["tls"], cacert=cacert,
                              cert=cert, key=key)
    # The TLS files are loaded once, here: a bad one is a usage error, before the verb runs.
    try:
        credentials.client_options()
    except RaftctlError as err:
        raise click.BadParameter(
            str(err), ctx=ctx, param_hint="--cacert/--cert/--key"
        ) from None
    return App(endpoints=values["endpoints"], timeout=values["timeout"], output=output,
               credentials=credentials)


class VerbCommand(click.Command):
    """A verb: also takes the global options after its name, then runs with the App."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _declare_again(self)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _write_options(self, ctx, formatter, shared=False)
        _write_options(self, ctx, formatter, shared=True)

    def invoke(self, ctx: click.Context) -> Any:
        app = make_app(ctx, resolve(ctx))
        at: click.Context | None = ctx
        while at is not None:  # the root's error boundary names the endpoints tried
            at.obj = app
            at = at.parent
        return super().invoke(ctx)


class OrderedGroup(click.Group):
    """Lists its commands in the order registered; every one is a verb with the options."""

    command_class = VerbCommand

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not isinstance(cmd, VerbCommand | VerbGroup):
            raise TypeError(f"{cmd.name}: declare it with cls=VerbCommand or cls=VerbGroup")
        super().add_command(cmd, name)


class VerbGroup(OrderedGroup):
    """A group of verbs (``snapshot``, ``bench``, ``fl``): the options may follow it too."""

    group_class = type  # nested groups are VerbGroups as well

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _declare_again(self)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        _write_options(self, ctx, formatter, shared=False)
        self.format_commands(ctx, formatter)
        _write_options(self, ctx, formatter, shared=True)


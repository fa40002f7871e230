"""The ``raftctl`` root group: the verbs, and the one error boundary.

The global options and the App built from them live in `raftctl.options`.

Every client-library exception is turned into one stderr line and a named exit code here
(`RaftctlGroup.invoke`), so no command needs its own try/except and no user ever sees a
traceback (etcdctl's cobrautl.ExitWithError).
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import Any

import click

from raftctl.app import App
from raftctl.commands.bench import bench
from raftctl.commands.cluster import diagnostic, health, status
from raftctl.commands.kv import delete, get, list_, set_
from raftctl.commands.membership import add_node, promote, remove_node, transfer_leader
from raftctl.commands.snapshot import snapshot
from raftctl.errors import (
    ClusterUnavailable,
    ConditionFailed,
    InvalidArgument,
    RaftctlError,
    RequestTimeout,
    ServerError,
)
from raftctl.exitcodes import ExitCode
from raftctl.fl.cli import fl
from raftctl.options import OrderedGroup, VerbGroup, global_options, without_globals
from raftctl.output.printers import OutputError, writing_stdout
from raftd import __version__


def exit_code_for(err: RaftctlError) -> ExitCode:
    if isinstance(err, (ClusterUnavailable, RequestTimeout)):
        return ExitCode.UNREACHABLE
    if isinstance(err, InvalidArgument):  # refused before sending: nothing was tried
        return ExitCode.USAGE
    return ExitCode.FAILED


def error_message(err: RaftctlError, endpoints: tuple[str, ...]) -> str:
    if isinstance(err, RequestTimeout):
        return f"{err}; endpoints tried: {', '.join(endpoints)}"
    if isinstance(err, ConditionFailed):
        return f"condition failed: {err.message or 'the key changed'}"
    if isinstance(err, ServerError):
        return f"the cluster answered with an error: {err}"
    return str(err)


class RaftctlGroup(OrderedGroup):
    """The root: the global options' home, and the error boundary of every verb."""

    group_class = VerbGroup

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.callback is not None:
            self.callback = without_globals(self.callback)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            result = super().invoke(ctx)
            if sys.stdout is not None:  # None when started with stdout closed (>&-)
                with writing_stdout():
                    sys.stdout.flush()  # a closed pipe shows here, not as a warning at exit
            return result
        except RaftctlError as err:
            app = ctx.obj
            endpoints = app.endpoints if isinstance(app, App) else ()
            click.echo(f"Error: {error_message(err, endpoints)}", err=True)
            ctx.exit(int(exit_code_for(err)))
        except KeyboardInterrupt:
            # click would print "Aborted!" and exit 1, which scripts read as "not found".
            # (status --watch ends on Ctrl-C by design and catches it itself: exit 0.)
            newline = "\n" if sys.stderr and sys.stderr.isatty() else ""  # after ^C
            click.echo(f"{newline}Interrupted", err=True)
            ctx.exit(int(ExitCode.INTERRUPTED))
        except BrokenPipeError:
            # Like `yes | head`: stop quietly. Python's recipe (signal docs, "Note on SIGPIPE"):
            # send what stdout still buffers to /dev/null, or it fails again at exit.
            _stdout_to_devnull()
            ctx.exit(int(ExitCode.PIPE_CLOSED))
        except OutputError as err:
            # Like `echo hi > /dev/full`; what stdout still buffers would fail again at exit.
            _stdout_to_devnull()
            click.echo(f"Error: cannot write the output: {err}", err=True)
            ctx.exit(int(ExitCode.FAILED))


def _stdout_to_devnull() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (CliRunner): nothing flushes it at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


@click.group(cls=RaftctlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@global_options
@click.version_option(__version__, "-V", "--version", prog_name="raftctl")
def cli() -> None:
    """raftctl: read and write keys in a rafty cluster, watch it and change its members.

    Any one reachable endpoint is enough: raftctl finds the leader and follows redirects.
    Data goes to stdout, messages to stderr. Exit status: 0 success; 1 not found, a
    condition failed, the cluster answered with an error, or stdout could not be written;
    2 usage error; 3 no node reachable or timed out; 130 interrupted (Ctrl-C); 141 stdout
    closed by its reader.

    The options below may also follow the command (raftctl get KEY -o json). Given both
    before and after it, an option takes the value given after it.
    """


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
    # SIGTERM (kill, timeout(1), a service manager) unwinds like Ctrl-C: a command that started
    # local nodes or load generators (bench --servers, fl demo) stops them before it exits,
    # instead of leaving them running. The exit status is still the signal's, 128 + 15.
    signal.signal(signal.SIGTERM, _terminated)
    try:
        cli.main(prog_name="raftctl")
    except OSError as err:
        # Outside any command: click writing --help or --version into a full device. Commands
        # report their own (OutputError); of the rest only a file can be full, and stdout is
        # the one file raftctl writes without handling it.
        if err.errno not in _FULL:
            raise
        _stdout_to_devnull()
        click.echo(f"Error: cannot write the output: {err.strerror or err}", err=True)
        sys.exit(int(ExitCode.FAILED))


_FULL = frozenset((errno.ENOSPC, errno.EDQUOT, errno.EFBIG))


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(int(ExitCode.TERMINATED))

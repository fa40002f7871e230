"""App: what every raftctl command needs, built once by the root group (hatch's Application).

Commands get it with ``@click.pass_obj`` and never print or exit on their own: data goes to
``app.printer`` (stdout), messages to ``app.abort`` (stderr).
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass, field
from typing import Any, NoReturn

import click
from rich.console import Console

from raftctl.blocking import Client
from raftctl.connection import Credentials
from raftctl.exitcodes import ExitCode
from raftctl.output.printers import Printer, choose, stdout, writing_stdout

_UNBOUNDED = 1 << 16


class _Console(Console):
    def on_broken_pipe(self) -> None:
        # rich exits 1 here; let the root's error boundary (raftctl.cli) choose the status.
        self.quiet = True  # nothing more to print, e.g. when a Live display stops
        raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))

    def _check_buffer(self) -> None:
        # Where rich writes; it handles only a closed pipe (above). Other write errors must
        # reach the error boundary as such, and with stdout closed rich would write nowhere.
        if not self.quiet:
            stdout()
        with writing_stdout():
            super()._check_buffer()


def stdout_isatty() -> bool:
    # sys.stdout is None when raftctl started with stdout closed (>&-).
    return sys.stdout is not None and sys.stdout.isatty()


def make_console() -> Console:
    """The stdout console for tables."""
    # Into a pipe or file, rich would assume 80 columns and elide cells: never lose data.
    width = None if stdout_isatty() else _UNBOUNDED
    # Data must come out exactly as stored: no markup, emoji or number highlighting.
    return _Console(markup=False, emoji=False, highlight=False, width=width)


@dataclass
class App:
    endpoints: tuple[str, ...]
    timeout: float
    output: str
    credentials: Credentials = field(default_factory=Credentials)
    """``--token`` and the TLS options, as given (bench passes them to its load generators)."""
    console: Console = field(init=False)
    """stdout, for rich renderables (tables, the live status view)."""
    printer: Printer = field(init=False)

    def __post_init__(self) -> None:
        self.console = make_console()
        self.printer = choose(self.output, self.console)

    @property
    def access(self) -> dict[str, Any]:
        """Keyword arguments of every client: ``token`` and ``tls`` (the TLS files are read
        once per process)."""
        return self.credentials.client_options()

    def client(self) -> Client:
        """A blocking client of the cluster; use it as a context manager."""
        return Client(self.endpoints, timeout=self.timeout, **self.access)

    def abort(self, code: ExitCode, message: str) -> NoReturn:
        """Print one line on stderr and exit with `code`."""
        click.echo(f"Error: {message}", err=True)
        raise click.exceptions.Exit(int(code))

"""``raftctl bench``: load and election benchmarks, locally or spread over machines.

The work lives in ``raftctl.bench`` (one module per concern); this module only turns options
into a `LoadSpec`, picks the cluster (started here with ``--servers`` or reached with
``-e``), and hands the record to ``raftctl.bench.report``.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import uvloop

from raftctl.app import App
from raftctl.bench import plot as plots
from raftctl.bench.distributed import head, join
from raftctl.bench.election import run_election
from raftctl.bench.report import emit, progress_bar
from raftctl.bench.results import Extras, WorkerResult, summarize
from raftctl.bench.runner import LoadSpec, RunFailed, preload, require_success, run_load
from raftctl.bench.target import Target, existing, local_cluster
from raftctl.connection import parse_endpoints
from raftctl.exitcodes import ExitCode
from raftctl.options import Seconds, VerbGroup
from raftctl.output.printers import echo
from raftctl.output.rows import to_json

DEFAULT_DURATION = 10.0
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def _load_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options every load benchmark shares (write, read, serve --head)."""
    options: list[Decorator] = [
        click.option("--servers", type=click.IntRange(1), metavar="N",
                     help="Start a local cluster of N raftd processes for the run (in a temporary "
                          "directory, stopped afterwards). Default: use the cluster at "
                          "-e/--endpoints."),
        click.option("--fsync/--no-fsync", default=True, show_default=True,
                     help="Whether the cluster started by --servers fsyncs its log."),
        click.option("--clients", type=click.IntRange(1), default=1, show_default=True,
                     metavar="C", help="Closed-loop clients, each with its own connection."),
        click.option("--workers", type=click.IntRange(1), default=2, show_default=True,
                     metavar="W", help="Load generator processes the clients are spread over."),
        click.option("--entries", type=click.IntRange(1), metavar="E",
                     help="Stop after E requests in all (shared evenly by the clients)."),
        click.option("--duration", type=Seconds(), metavar="S",
                     help=f"Stop after S seconds (default {DEFAULT_DURATION:g} unless --entries)."),
        click.option("--size", type=click.IntRange(0), default=100, show_default=True,
                     metavar="BYTES", help="Size of each value."),
        click.option("--pipeline", type=click.IntRange(1), default=1, show_default=True,
                     metavar="K", help="Requests each client keeps outstanding."),
        click.option("--keys", type=click.IntRange(1), default=10_000, show_default=True,
                     metavar="K",
                     help="Distinct keys written (split among clients) or read (preloaded)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _plot_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--plot", type=click.Path(dir_okay=False, path_type=Path),
                        metavar="FILE.png",
                        help="Also draw the results with matplotlib "
                             "(pip install 'rafty[plot]').")(func)


def _spec(op: str, *, clients: int, workers: int, entries: int | None, duration: float | None,
          size: int, pipeline: int, keys: int, timeout: float, consistency: str = "linearizable",
          spread: bool = False) -> LoadSpec:
    if entries is not None and duration is not None:
        raise click.UsageError("give --entries or --duration, not both")
    if entries is None and duration is None:
        duration = DEFAULT_DURATION
    # About twenty points per run on the plot, none narrower than a tenth of a second.
    interval = 1.0 if duration is None else max(0.1, min(1.0, duration / 20))
    return LoadSpec(op=op, consistency=consistency, spread=spread, clients=clients,
                    workers=workers, pipeline=pipeline, size=size, keys=keys,
                    duration=duration, entries=entries, timeout=timeout, interval=interval)


@contextlib.contextmanager
def _target(app: App, servers: int | None, fsync: bool) -> Iterator[Target]:
    if servers is not None:
        with local_cluster(servers, fsync=fsync, timeout=app.timeout) as target:
            yield target
    else:
        yield uvloop.run(existing(app.endpoints, app.timeout, app.credentials))


def load_record(spec: LoadSpec, target: Target, merged: WorkerResult, extras: Extras,
                servers: int | None) -> dict[str, Any]:
    """The record of a write or read run: what was run against what, then the figures."""
    return {
        "benchmark": spec.op,
        "servers": servers,
        "members": list(target.members),
        "leader": target.leader,
        "fsync": target.fsync,
        "config": {k: v for k, v in spec.to_wire().items()
                   if k not in ("op", "timeout", "protocol")},
        **summarize(merged, extras),
    }


@contextlib.contextmanager
def _failures(app: App) -> Iterator[None]:
    """A run whose requests failed: one line and exit 1, or 3 if they went unanswered."""
    try:
        yield
    except RunFailed as err:
        app.abort(ExitCode.UNREACHABLE if err.timed_out else ExitCode.FAILED, str(err))


def _run(app: App, spec: LoadSpec, servers: int | None, fsync: bool, plot: Path | None) -> None:
    if plot is not None:
        plots.require()
    with _failures(app):
        with _target(app, servers, fsync) as target:
            if spec.op == "read":
                uvloop.run(preload(target, spec))
            with progress_bar(spec, f"bench {spec.op}") as progress:
                merged, extras = uvloop.run(run_load(spec, target, progress))
        record = load_record(spec, target, merged, extras, servers)
        require_success(record)
    emit(record, app.output, app.console)
    if plot is not None:
        plots.plot_load(record, plot)


@click.group(cls=VerbGroup, short_help="Measure throughput, latency and election times.")
def bench() -> None:
    """Measure a cluster: write and read load, elections, and load from several machines.

    Clients are closed loops: each sends its next request as soon as the previous one is
    answered (or keeps --pipeline K outstanding), over its own connection, inside its own
    session, spread over --workers processes. Results: throughput, latency percentiles, the
    CPU the cluster and the load generator spent per 1000 requests (from /proc, for members
    running on this machine), and the leader changes seen during the run (ideally 0). The
    cluster and the load generator share this machine's cores.
    """


@bench.command()
@_load_options
@_plot_option
@click.pass_obj
def write(app: App, /, servers: int | None, fsync: bool, plot: Path | None, **load: Any) -> None:
    """Write load: every request sets a key (values of --size bytes).

    Keys cycle through --keys distinct names, split among the clients.
    """
    _run(app, _spec("write", timeout=app.timeout, **load), servers, fsync, plot)


@bench.command(short_help="Read load: every request gets one of --keys preloaded keys.")
@_load_options
@click.option("--consistency", type=click.Choice(["linearizable", "stale"]),
              default="linearizable", show_default=True,
              help="linearizable reads take a ReadIndex round; stale ones read local state.")
@click.option("--spread", is_flag=True,
              help="Spread the clients over every member (default: all at the leader).")
@_plot_option
@click.pass_obj
def read(app: App, /, servers: int | None, fsync: bool, plot: Path | None, consistency: str,
         spread: bool, **load: Any) -> None:
    """Read load: every request gets one of --keys keys, written before the run starts."""
    spec = _spec("read", timeout=app.timeout, consistency=consistency, spread=spread, **load)
    _run(app, spec, servers, fsync, plot)


@bench.command(short_help="Time failovers and elections by killing the leader repeatedly.")
@click.option("--servers", type=click.IntRange(1), default=5, show_default=True, metavar="N",
              help="Size of the local cluster started for the trials.")
@click.option("--trials", type=click.IntRange(1), default=20, show_default=True, metavar="N",
              help="Times the leader is killed.")
@click.option("--sigstop", is_flag=True,
              help="Freeze the leader with SIGSTOP (resumed after the trial) instead of "
                   "SIGKILL (restarted after the trial).")
@click.option("--fsync/--no-fsync", default=True, show_default=True,
              help="Whether the cluster fsyncs its log.")
@_plot_option
@click.pass_obj
def election(app: App, servers: int, trials: int, sigstop: bool, fsync: bool,
             plot: Path | None) -> None:
    """Kill the leader of an idle local cluster repeatedly; time failover and election.

    Failover: from the signal until a new leader has committed an entry (a write sent to it
    is acknowledged). Election: from the first candidacy of any survivor until the winner
    leads (from the members' logs). Prints percentiles and the share under 50, 80 and 100
    ms (elections) and under 250 and 400 ms (failovers); --plot draws the cumulative
    distributions as in the Raft paper's Figure 16.
    """
    if plot is not None:
        plots.require()
    spec = LoadSpec(entries=trials, duration=None)
    with progress_bar(spec, "bench election") as progress:
        record = run_election(servers, trials, sigstop=sigstop, fsync=fsync,
                              timeout=app.timeout, progress=progress)
    emit(record, app.output, app.console)
    if plot is not None:
        plots.plot_election(record, plot)


@bench.command(short_help="Host a cluster (--servers) or a distributed run (--head).")
@click.option("--head", "head_", is_flag=True,
              help="Coordinate a run: store its configuration in the cluster, wait for "
                   "--joiners, start them together, merge their results into --report.")
@_load_options
@click.option("--joiners", type=click.IntRange(1), default=1, show_default=True, metavar="J",
              help="With --head: joiners to wait for (raftctl bench join).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("bench-report.json"), show_default=True,
              help="With --head: where the merged report (JSON) is written.")
@click.option("--wait", type=Seconds(), default=300.0,
              show_default=True, metavar="S",
              help="Give up waiting for the joiners after S seconds.")
@click.pass_obj
def serve(app: App, /, head_: bool, servers: int | None, fsync: bool, joiners: int, report: Path,
          wait: float, **load: Any) -> None:
    """Serve a distributed benchmark: the cluster (--servers) and, with --head, the run.

    With --head the load comes from the joiners, C --clients each: on every load machine
    run `raftctl bench join HEAD`, HEAD being any endpoint of the cluster. The merged report
    gets the cluster's CPU when its members run on this machine. Without --head, --servers
    N starts a local cluster, prints its endpoints and keeps it up until interrupted.
    """
    if not head_:
        if servers is None:
            raise click.UsageError("bench serve needs --head, or --servers N to host a cluster")
        _host(app, servers, fsync)
        return
    spec = _spec("write", timeout=app.timeout, **load)
    with _target(app, servers, fsync) as target:
        click.echo(f"waiting for {joiners} joiner(s): raftctl bench join "
                   f"{','.join(target.members)}", err=True)
        with _failures(app):
            outcome = uvloop.run(head(spec, target, joiners, wait))
    record = load_record(spec, target, outcome.merged, outcome.extras, servers)
    record["joiners"] = outcome.joiners
    report.write_text(to_json(record, indent=2) + "\n", encoding="utf-8")
    click.echo(f"report written to {report}", err=True)
    with _failures(app):
        require_success(record)
    emit(record, app.output, app.console)


def _host(app: App, servers: int, fsync: bool) -> None:
    """Start a local cluster and keep it until SIGINT or SIGTERM (then stop it)."""
    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with _target(app, servers, fsync) as target:
            echo(",".join(target.members))
            click.echo("serving until interrupted (Ctrl-C)", err=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


@bench.command(name="join",
               short_help="Take part in a distributed run (raftctl bench serve --head).")
@click.argument("head_endpoints", metavar="HEAD")
@click.option("--wait", type=Seconds(), default=300.0,
              show_default=True, metavar="S",
              help="Give up waiting for the head's configuration or start after S seconds.")
@click.pass_obj
def join_(app: App, head_endpoints: str, wait: float) -> None:
    """Take part in the run a head (raftctl bench serve --head) published.

    HEAD: endpoints of the cluster (host:port, comma-separated). Fetches the configuration,
    connects its clients, starts on the head's signal, pushes its results back, and prints
    its own share of the figures.
    """
    endpoints = tuple(parse_endpoints(head_endpoints))
    with _failures(app):
        spec, target, merged, extras = uvloop.run(
            join(endpoints, wait, app.timeout, app.credentials))
        record = load_record(spec, target, merged, extras, None)
        require_success(record)
    emit(record, app.output, app.console)

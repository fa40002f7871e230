"""The ``raftd`` command: run a node (`start`) or write configs for a new cluster (`init`).

User errors (bad config, bad flags, files in the way) end with one line on stderr and exit
code 2 (usage/config) or 1 (anything else); never a traceback.
"""

from __future__ import annotations

import logging
import shlex
from pathlib import Path

import click

from raftd import __version__
from raftd.config import (
    ConfigError,
    format_address,
    load_config,
    parse_address,
    write_cluster_configs,
)
from raftd.logs import FORMATS, setup_logging

EXIT_FAILED = 1
EXIT_USAGE = 2

log = logging.getLogger("raftd")


def _fail(message: str, code: int) -> click.exceptions.Exit:
    click.echo(f"raftd: {message}", err=True)
    return click.exceptions.Exit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="raftd")
def cli() -> None:
    """raftd: one node of a rafty cluster, a Raft-replicated key-value store.

    Create configs for a local cluster with `raftd init`, then run each node with
    `raftd start --config FILE`. Talk to the cluster with `raftctl`.
    """


@cli.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Node config file (TOML), e.g. as written by `raftd init`.",
)
@click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="Log lines on stderr as human-readable text or as JSON objects.",
)
def start(config_path: Path, log_format: str) -> None:
    """Run one node until SIGTERM or SIGINT.

    The config is validated first; any problem is reported as one line naming the key, and
    the node does not start (exit status 2).
    """
    try:
        config = load_config(config_path)
    except ConfigError as err:
        raise _fail(str(err), EXIT_USAGE) from None
    setup_logging(log_format)
    try:
        # Imported here so `raftd init` and `--help` work without loading the server stack.
        from raftd import server

        code = server.run(config)
    except KeyboardInterrupt:
        code = 130
    except Exception:
        # A crash is a bug, not a user error: keep the details, but in the log format.
        log.critical("raftd stopped on an unexpected error", exc_info=True)
        code = EXIT_FAILED
    raise click.exceptions.Exit(code)


@cli.command()
@click.option(
    "-n",
    "--nodes",
    type=click.IntRange(1, 99),
    required=True,
    help="How many nodes the cluster has (3 or 5 tolerate 1 or 2 failures).",
)
@click.option(
    "-d",
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for the node configs; node K keeps its data in DIR/data/nK.",
)
@click.option(
    "--base-port",
    type=click.IntRange(1, 65535),
    default=7001,
    show_default=True,
    help="Port of node 1; node K listens on BASE_PORT+K-1 (UDP and TCP).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Host every node advertises and binds.",
)
def init(nodes: int, directory: Path, base_port: int, host: str) -> None:
    """Write one config per node (nodeK.toml) for a new cluster.

    Existing files are never overwritten. When every address is a loopback address, large
    datagrams are allowed (max_datagram_bytes = 65000), since loopback never fragments.
    """
    if base_port + nodes - 1 > 65535:
        raise click.BadParameter(
            f"{nodes} nodes from port {base_port} run past port 65535", param_hint="--base-port"
        )
    addresses = [format_address(host.strip("[]"), base_port + k) for k in range(nodes)]
    try:
        parse_address(addresses[0])
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--host") from None
    try:
        paths = write_cluster_configs(directory, addresses)
    except FileExistsError as err:
        raise _fail(str(err), EXIT_FAILED) from None
    except OSError as err:
        raise _fail(f"cannot write {err.filename}: {err.strerror}", EXIT_FAILED) from None
    click.echo(f"Wrote {nodes} node config{'s' if nodes > 1 else ''} to {directory}.")
    click.echo("Start each node (e.g. in its own terminal):")
    for path in paths:
        click.echo(f"  raftd start --config {shlex.quote(str(path))}")
    click.echo("Then check the cluster:")
    click.echo(f"  raftctl -e {','.join(addresses)} status")


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="raftd")

"""The ``raftd`` command: run a node (`start`), write configs for a new cluster (`init`), or
create a data dir for a new cluster from a backup (`restore`).

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
    DataDirUnavailable,
    format_address,
    load_config,
    new_secret,
    parse_address,
    prepare_data_dir,
    write_cluster_configs,
)
from raftd.logs import FORMATS, setup_logging

EXIT_FAILED = 1
EXIT_USAGE = 2

log = logging.getLogger("raftd")


def _fail(message: str, code: int) -> click.exceptions.Exit:
    click.echo(f"raftd: {message}", err=True)
    return click.exceptions.Exit(code)


def _fail_start(message: str, code: int, log_format: str) -> click.exceptions.Exit:
    """A node that cannot start says why in its log format: a JSON log pipeline must not
    drop the one line that explains an outage."""
    if log_format == "json":
        log.error("%s", message)
        return click.exceptions.Exit(code)
    return _fail(message, code)


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
@click.option(
    "--force-new-cluster",
    is_flag=True,
    help="UNSAFE, only when a majority of the cluster is lost for good: first turn this "
    "node's data dir into a one-member cluster holding every entry of its log, committed or "
    "not, then serve. See below.",
)
def start(config_path: Path, log_format: str, force_new_cluster: bool) -> None:
    """Run one node until SIGTERM or SIGINT.

    The config is validated first, and the data dir created if missing and tried; any problem
    is reported as one line naming the key, and the node does not start (exit status 2).

    --force-new-cluster is for disaster recovery when the other members are gone and will
    not come back. This node becomes the only voter and keeps its data, but since it cannot
    know which of its log entries were committed, it applies them all: writes that never
    succeeded may reappear, and writes it never received are lost. It logs what it did. Use
    it once, on one survivor; never restart the old members with their old data dirs: wipe
    them and add them back with `raftctl add-node`.
    """
    setup_logging(log_format)
    try:
        config = load_config(config_path)
        prepare_data_dir(config, reclaim=force_new_cluster)
    except ConfigError as err:
        raise _fail_start(str(err), EXIT_USAGE, log_format) from None
    except DataDirUnavailable as err:  # a full disk, say: a later restart may succeed
        raise _fail_start(str(err), EXIT_FAILED, log_format) from None
    # Imported here so `raftd init` and `--help` work without loading the server stack.
    from raftd import recovery, server
    from raftd.metrics import MetricsError

    if force_new_cluster:
        try:
            recovery.force_new_cluster(config)
        except Exception as e:  # noqa: BLE001 - storage problems, reported in one line
            log.error("--force-new-cluster failed; the node does not start: %s", e)
            raise click.exceptions.Exit(EXIT_FAILED) from None
    try:
        code = server.run(config)
    except KeyboardInterrupt:
        code = 130
    except MetricsError as e:  # like a taken node port: may clear up, so a restart may help
        log.error("%s", e)
        code = EXIT_FAILED
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
    """Write one config per node (nodeK.toml) and a cluster key for a new cluster.

    The key (DIR/cluster.key, mode 0600, 256 random bits) authenticates every datagram
    between the nodes; each config names it in [cluster] secret_file. Copy it, kept private,
    beside the configs on every machine. Existing files are never overwritten. When every
    address is a loopback address, large datagrams are allowed (max_datagram_bytes = 65000),
    since loopback never fragments.
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
        paths = write_cluster_configs(directory, addresses, secret=new_secret())
    except FileExistsError as err:
        raise _fail(str(err), EXIT_FAILED) from None
    except OSError as err:
        raise _fail(f"cannot write {err.filename}: {err.strerror}", EXIT_FAILED) from None
    click.echo(f"Wrote {nodes} node config{'s' if nodes > 1 else ''} and the cluster key "
               f"(cluster.key, keep it private) to {directory}.")
    click.echo("Start each node (e.g. in its own terminal):")
    for path in paths:
        click.echo(f"  raftd start --config {shlex.quote(str(path))}")
    click.echo("Then check the cluster:")
    click.echo(f"  raftctl -e {','.join(addresses)} status")


@cli.command()
@click.argument("backup_file", metavar="FILE", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data-dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The new node's data dir ([node] data_dir of its config); must be empty or absent.",
)
@click.option(
    "--members",
    metavar="HOST:PORT,...",
    help="Voters of the new cluster (comma separated). Default: the voters the backup records.",
)
def restore(backup_file: Path, data_dir: Path, members: str | None) -> None:
    """Create the data dir of a node of a NEW cluster from FILE, a `raftctl snapshot save` backup.

    Restore every node of the new cluster from the same FILE with the same --members, then
    start each one normally (`raftd start`). Their configs' [cluster] members are not used
    once a node has data: the configuration comes from the backup and --members. The backup
    is checked first (format, version, checksum); a data dir that holds anything is refused.
    Exit status 0 on success, 1 if the backup or the data dir is unusable, 2 on a usage error.
    """
    # Imported here: the state machine and storage stack is needed by this command alone.
    from raftd.backup import BackupError
    from raftd.recovery import RecoveryError, restore_backup

    voters = None
    if members is not None:
        voters = tuple(m.strip() for m in members.split(",") if m.strip())
        if not voters:
            raise click.BadParameter("expected at least one host:port", param_hint="--members")
        for address in voters:
            try:
                parse_address(address)
            except ValueError as err:
                raise click.BadParameter(f"{address!r}: {err}", param_hint="--members") from None
    try:
        done = restore_backup(str(backup_file), str(data_dir), voters)
    except (BackupError, RecoveryError) as err:
        raise _fail(str(err), EXIT_FAILED) from None
    click.echo(
        f"Restored {done.keys} keys at index {done.index} (term {done.term}) into {data_dir}; "
        f"state hash {done.state_hash}; voters {','.join(done.voters)}."
    )


def main() -> None:
    """Console-script entry point."""
    cli.main(prog_name="raftd")

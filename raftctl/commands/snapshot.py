"""Backup verbs: ``snapshot save FILE`` (restored with ``raftd restore FILE``).

The file format lives in ``raftd.backup``, shared with ``raftd restore``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from raftctl.app import App
from raftctl.client import AsyncClient
from raftctl.exitcodes import ExitCode
from raftctl.options import VerbGroup
from raftctl.output.printers import echo
from raftctl.output.rows import to_json
from raftd import backup
from raftd.storage.files import FsyncError

MAX_SNAPSHOT_BYTES = 2 << 30
"""Largest snapshot accepted: the server's own limit on a snapshot answer."""


@click.group(cls=VerbGroup, short_help="Back up the cluster's data, for `raftd restore`.")
def snapshot() -> None:
    """Back up the cluster's data (restore it with `raftd restore`)."""


@snapshot.command()
@click.argument("file", type=click.Path(dir_okay=False, writable=True, path_type=Path))
@click.pass_obj
def save(app: App, file: Path) -> None:
    """Save a consistent snapshot of the whole cluster state to FILE.

    The snapshot is taken by the leader (when it answers) after confirming its leadership,
    so it holds every write acknowledged before the command started. FILE is replaced
    atomically: it is either the old file or the complete new backup, with a sha256 checksum
    that `raftd restore` verifies. A symlink is followed (its target is replaced); anything
    but a regular file is refused. The file is created with mode 0600. A large state takes a
    while to transfer: raise --timeout. Prints the position (log index and term), size and
    checksum of the backup.
    """
    with _writing(app, file):
        backup.target(str(file))  # refuse a bad FILE before fetching what may be gigabytes
    taken = asyncio.run(_fetch(app))
    with _writing(app, file):
        size = backup.save(str(file), taken)
    record = {
        "file": str(file),
        "index": taken.index,
        "term": taken.term,
        "voters": list(taken.voters),
        "learners": list(taken.learners),
        "bytes": size,
        "sha256": taken.sha256,
    }
    if app.output == "json":
        echo(to_json(record))
    else:
        echo(
            f"Saved snapshot at index {taken.index} (term {taken.term}, {size} bytes, "
            f"sha256 {taken.sha256}) to {file}"
        )


@contextmanager
def _writing(app: App, file: Path) -> Iterator[None]:
    """Errors about FILE as one line: not a regular file is bad input (exit 2, like click's
    "is a directory"), a failed write is exit 1."""
    try:
        yield
    except backup.BadTarget as err:
        raise click.BadParameter(str(err), param_hint="'FILE'") from None
    except OSError as err:
        app.abort(ExitCode.FAILED, f"cannot write {file}: {err.strerror or err}")
    except FsyncError as err:
        app.abort(ExitCode.FAILED, str(err))


async def _fetch(app: App) -> backup.Backup:
    async with AsyncClient(app.endpoints, app.timeout, max_frame_bytes=MAX_SNAPSHOT_BYTES,
                           **app.access) as c:
        return await c.snapshot()

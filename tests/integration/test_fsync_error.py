"""An fsync error is fatal: a real ``raftd`` whose disk fails under it logs the failed fsync and
exits non-zero by itself, never acknowledging the write that fsync was for.

The failing disk is real: the node's data dir is an ext4 file system on a loop device. Once the
node has written through it, the test shrinks the device under the mounted file system to its
first 4 KiB (``losetup -c`` after truncating the backing file), so every later write-back of a
data block fails in the block layer ("attempt to access beyond end of device") and the kernel
reports it to ``fdatasync`` as EIO, as it would for a dying disk. (A full tmpfs gives ENOSPC
on write instead, and device-mapper's error targets are not available everywhere.) Needs root
for losetup and mount; skipped, saying why, where either is missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from raftctl import Client, ClusterUnavailable
from raftctl.errors import RequestTimeout
from tests.integration.conftest import ClusterFactory
from tests.integration.helpers import DEADLINE, wait_for_leader

IMAGE_BYTES = 512 << 20
"""Sparse; room for the WAL's first 64 MiB segment and its preallocated spare."""
SHRUNK_BYTES = 4096


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def failing_disk(mount_point: Path, image: Path) -> Iterator[Callable[[], None]]:
    """Mount a fresh ext4 (on a loop device over the sparse file ``image``) on
    ``mount_point`` for the duration of the block; yields ``fail()``, which makes every later
    write-back to it fail with EIO. Skips the calling test when this cannot be set up."""
    missing = [tool for tool in ("losetup", "mkfs.ext4", "mount", "umount")
               if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"a failing disk needs {', '.join(missing)}")
    if os.geteuid() != 0:
        pytest.skip("a failing disk (losetup, mount) needs root")
    with open(image, "wb") as f:
        f.truncate(IMAGE_BYTES)
    made = _run("mkfs.ext4", "-q", "-F", "-O", "^has_journal", str(image))
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
    attached = _run("losetup", "--find", "--show", str(image))
    if attached.returncode != 0:
        pytest.skip(f"no loop device: losetup: {attached.stderr.strip()}")
    device = attached.stdout.strip()
    try:
        mount_point.mkdir(parents=True, exist_ok=True)
        mounted = _run("mount", device, str(mount_point))
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount {device}: {mounted.stderr.strip()}")
        try:
            (mount_point / "lost+found").rmdir()  # the data dir starts empty

            def fail() -> None:
                os.truncate(image, SHRUNK_BYTES)
                resized = _run("losetup", "--set-capacity", device)
                assert resized.returncode == 0, resized.stderr

            yield fail
        finally:
            if _run("umount", str(mount_point)).returncode != 0:
                _run("umount", "-l", str(mount_point))  # still busy: detach now, freed on exit
    finally:
        _run("losetup", "--detach", device)


def test_an_fsync_error_stops_the_node_with_a_log_line_and_a_nonzero_status(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster = make_cluster(1)
    data_dir = cluster.base_dir / "data" / "n1"
    with failing_disk(data_dir, tmp_path / "disk.img") as fail:
        try:
            cluster.start_all()
            wait_for_leader(cluster)
            with Client(cluster.endpoints, timeout=DEADLINE) as client:
                client.set("before", "durable")  # fsync works so far
            fail()
            # The node dies on the fsync for this write: the client hears no answer.
            with Client(cluster.endpoints, timeout=2.0) as client, \
                    pytest.raises((RequestTimeout, ClusterUnavailable)):
                client.set("after", "never acknowledged")
            status = cluster.wait(0, DEADLINE)  # by itself: nobody signalled it
        finally:
            cluster.stop_all()  # before the unmount; a no-op once the node has exited
    assert status > 0  # an exit status, not death by a signal
    log = cluster.log_paths[0].read_text(errors="replace")
    fatal = re.search(r"CRITICAL .*: fsync of \S+ failed: Input/output error "
                      r"\(fatal, not retried\); exiting", log)
    assert fatal is not None, log[-3000:]
    assert "shutting down" not in log[fatal.end():].lower()  # no clean shutdown after it

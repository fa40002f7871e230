"""A small tmpfs for tests of a really full disk (ENOSPC from the kernel, not from a model).

Mounting needs root (or CAP_SYS_ADMIN); where it fails, the test using it is skipped with the
reason, never passed silently. The mount is always undone, even when the test fails.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


@contextlib.contextmanager
def mounted_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (mount's syntax: "2m") on ``mount_point`` (created) for the
    duration of the block; skips the calling test when it cannot be mounted."""
    mount_point.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(mount_point)]
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a {size} tmpfs to fill up ({' '.join(command)}: {e})")
    if done.returncode != 0:
        why = done.stderr.strip() or f"exit status {done.returncode}"
        pytest.skip(f"cannot mount a {size} tmpfs to fill up ({' '.join(command)}: {why}); "
                    f"this test needs root or CAP_SYS_ADMIN")
    try:
        yield mount_point
    finally:
        unmount = subprocess.run(["umount", str(mount_point)], check=False, capture_output=True,
                                 text=True, timeout=30)
        if unmount.returncode != 0:
            # Busy (a process we started still holds a file): detach it now, freed on exit.
            subprocess.run(["umount", "-l", str(mount_point)], check=True, timeout=30)

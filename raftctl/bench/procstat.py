"""CPU time of processes from /proc, and which local process listens on a TCP port.

Why /proc and not ``psutil``: two fields of one file are all a benchmark needs, and reading
them costs microseconds, so the cluster's and the load generator's CPU can be sampled at the
exact start and end of the measured window. The parsers are pure functions over text, so the
odd cases (a command name holding spaces or parentheses) are unit-tested without /proc.

Linux only; elsewhere the figures are reported as unknown (None).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

PROC = Path("/proc")
TCP_LISTEN = "0A"
"""The ``st`` column of /proc/net/tcp for a socket in state LISTEN."""


def clock_ticks() -> int:
    """Units of the utime and stime fields (USER_HZ, nearly always 100)."""
    return os.sysconf("SC_CLK_TCK")


def parse_stat_cpu(text: str, ticks_per_second: int) -> float:
    """User + system CPU seconds from the text of /proc/PID/stat.

    The second field, the command name, is in parentheses and may contain spaces and ``)``,
    so fields are counted from the *last* ``)``: utime and stime are fields 14 and 15
    (proc(5)), i.e. the 12th and 13th after the name.
    """
    _, sep, rest = text.rpartition(")")
    if not sep:
        raise ValueError("not a /proc/PID/stat line: no ')' after the command name")
    fields = rest.split()
    if len(fields) < 13:
        raise ValueError(f"not a /proc/PID/stat line: {len(fields)} fields after the name")
    return (int(fields[11]) + int(fields[12])) / ticks_per_second


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds used so far by process ``pid`` (all its threads); None if it is gone."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return parse_stat_cpu(text, clock_ticks())


def total_cpu(pids: Iterable[int]) -> float | None:
    """The sum over ``pids``; None when any of them cannot be read (the figure would lie)."""
    total = 0.0
    for pid in pids:
        seconds = cpu_seconds(pid)
        if seconds is None:
            return None
        total += seconds
    return total


def parse_listen_inodes(text: str, port: int) -> set[int]:
    """Socket inodes listening on TCP ``port`` (any address) in /proc/net/tcp{,6} text."""
    inodes = set()
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 10 or cols[3] != TCP_LISTEN:
            continue
        _, _, port_hex = cols[1].rpartition(":")
        if int(port_hex, 16) == port:
            inodes.add(int(cols[9]))
    return inodes


def listening_pid(port: int) -> int | None:
    """The local process listening on TCP ``port``, if this user may see it.

    How ``-e`` benchmarks of a cluster running on this machine still get its CPU figures.
    """
    inodes: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            inodes |= parse_listen_inodes((PROC / "net" / name).read_text(), port)
        except OSError:
            continue
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                if os.readlink(fd) in targets:
                    return int(entry.name)
        except OSError:
            continue  # not ours to read, or exited meanwhile
    return None

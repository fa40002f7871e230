"""Parsing /proc: CPU fields after odd command names, listening sockets; this process's CPU."""

from __future__ import annotations

import os
import socket

import pytest

from raftctl.bench.procstat import (
    cpu_seconds,
    listening_pid,
    parse_listen_inodes,
    parse_stat_cpu,
    total_cpu,
)

# pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
STAT = "4242 ({comm}) S 1 4242 4242 0 -1 4194560 1234 0 5 0 250 75 0 0 20 0 3 0 100 0 0"


@pytest.mark.parametrize("comm", ["raftd", "python3 -m raftd", "a) b) (c", ""])
def test_cpu_counts_fields_after_the_last_parenthesis(comm: str) -> None:
    assert parse_stat_cpu(STAT.format(comm=comm), 100) == pytest.approx(3.25)


def test_malformed_stat_lines_are_refused() -> None:
    with pytest.raises(ValueError):
        parse_stat_cpu("4242 no parentheses here", 100)
    with pytest.raises(ValueError):
        parse_stat_cpu("4242 (x) S 1 2", 100)


def test_this_process_uses_cpu() -> None:
    before = cpu_seconds(os.getpid())
    assert before is not None
    sum(i * i for i in range(3_000_000))
    after = cpu_seconds(os.getpid())
    assert after is not None and after > before
    assert total_cpu([os.getpid(), os.getpid()]) is not None


def test_a_missing_process_is_unknown() -> None:
    assert cpu_seconds(2**22 + 12345) is None
    assert total_cpu([os.getpid(), 2**22 + 12345]) is None


NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1B59 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
   1: 0100007F:1B59 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 00000000:1B5A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 333 1
"""


def test_listen_inodes_by_port_and_state() -> None:
    assert parse_listen_inodes(NET_TCP, 7001) == {111}  # the established socket is not LISTEN
    assert parse_listen_inodes(NET_TCP, 7002) == {333}
    assert parse_listen_inodes(NET_TCP, 7003) == set()


def test_listening_pid_finds_this_process() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert listening_pid(sock.getsockname()[1]) == os.getpid()

"""LocalCluster's helpers: ports a killed node can always take back, and scratch_dir, which
keeps the node logs a failing demo or benchmark names."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from raftctl.localcluster import _ephemeral_low, free_ports, scratch_dir


class NamesTheLogs(Exception):
    pass


def test_removed_after_success_and_after_other_errors() -> None:
    with scratch_dir("rafty-test-", keep_on=(NamesTheLogs,)) as base:
        (base / "node1.log").write_text("fine")
    assert not base.exists()
    with pytest.raises(KeyError), scratch_dir("rafty-test-", keep_on=(NamesTheLogs,)) as base:
        raise KeyError("not ours to explain")
    assert not base.exists()


def test_kept_when_the_error_names_its_logs() -> None:
    kept: Path | None = None
    try:
        with pytest.raises(NamesTheLogs):
            with scratch_dir("rafty-test-", keep_on=(NamesTheLogs,)) as kept:
                (kept / "node1.log").write_text("why it failed")
                raise NamesTheLogs(f"see {kept}/node1.log")
        assert (kept / "node1.log").read_text() == "why it failed"
    finally:
        if kept is not None:
            for path in kept.iterdir():
                path.unlink()
            kept.rmdir()


def test_free_ports_lie_below_the_ephemeral_range_and_are_free_on_both_protocols() -> None:
    """No outgoing socket can be handed such a port while a killed node is down."""
    low = _ephemeral_low()
    ports = free_ports(20)
    assert len(set(ports)) == 20 and all(10000 <= p < low for p in ports)
    for port in ports:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind(("127.0.0.1", port))


def test_the_ephemeral_range_defaults_when_the_kernel_does_not_say(tmp_path: Path) -> None:
    assert _ephemeral_low(str(tmp_path / "missing")) == 32768
    garbage = tmp_path / "range"
    garbage.write_text("not numbers")
    assert _ephemeral_low(str(garbage)) == 32768
    garbage.write_text("1024\t65535\n")  # ephemeral from 1024: draw from 10000-10999 then
    assert _ephemeral_low(str(garbage)) == 11000

"""`raftd start` refusing to run: unusable data dirs (exit 2), a locked one and a taken metrics
port (exit 1), each in one line that names the key."""

from __future__ import annotations

import fcntl
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from raftctl.localcluster import free_ports
from raftd.cli import cli
from raftd.config import load_config, prepare_data_dir


def write_config(tmp_path: Path, data_dir: str, extra: str = "") -> Path:
    port = free_ports(1)[0]
    path = tmp_path / "node.toml"
    path.write_text(f'[node]\naddress = "127.0.0.1:{port}"\ndata_dir = "{data_dir}"\n'
                    f'[cluster]\nmembers = ["127.0.0.1:{port}"]\n{extra}')
    return path


def start(path: Path) -> tuple[int, list[str]]:
    result = CliRunner().invoke(cli, ["start", "--config", str(path)])
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stderr.splitlines()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_a_data_dir_that_cannot_be_created_exits_2_naming_the_key(tmp_path: Path) -> None:
    # /proc passes the permission check (as root, everything does), yet mkdir fails there.
    path = write_config(tmp_path, "/proc/raftd-test/n1")
    code, lines = start(path)
    assert code == 2
    assert lines == [f"raftd: {path}: [node] data_dir cannot be created (No such file or "
                     "directory): /proc/raftd-test/n1"]


def test_a_data_dir_whose_lock_cannot_be_opened_exits_2(tmp_path: Path) -> None:
    (tmp_path / "data" / "LOCK").mkdir(parents=True)  # storage would fail to open it
    path = write_config(tmp_path, "data")
    code, lines = start(path)
    assert code == 2
    assert lines == [f"raftd: {path}: [node] data_dir is not writable (Is a directory): "
                     f"{tmp_path / 'data'}"]


def test_a_locked_data_dir_still_exits_1(tmp_path: Path) -> None:
    """Another raftd on the dir is not a config error: it ends when that node stops, so a
    supervisor's restart may succeed (exit 1, not 2)."""
    path = write_config(tmp_path, "data")
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / "LOCK", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, lines = start(path)
    assert code == 1
    assert len(lines) == 1 and lines[0].endswith(
        f"cannot start: {tmp_path / 'data' / 'LOCK'} is locked: another raftd is using this "
        "data dir"), lines
    # The node running there owns the dir: a mistaken start must not claim it for itself.
    assert not (tmp_path / "data" / "NODE").exists()


def test_a_taken_metrics_port_names_the_metrics_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics = f"127.0.0.1:{taken.getsockname()[1]}"
        path = write_config(tmp_path, "data", f'[metrics]\naddress = "{metrics}"\n')
        done = subprocess.run([sys.executable, "-m", "raftd", "start", "--config", str(path)],
                              capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and errors[0].endswith(
        f"raftd: cannot serve metrics on {metrics} ([metrics] address): Address already in use"
    ), done.stderr
    assert "Traceback" not in done.stderr


def test_a_data_dir_of_another_node_exits_2_naming_its_owner(tmp_path: Path) -> None:
    """A data_dir pasted into the wrong config: the node would inherit another node's votes
    and could vote twice in a term. The first start claims the dir (NODE); another refuses."""
    mine = load_config(write_config(tmp_path, "data"))
    prepare_data_dir(mine)  # what `raftd start` does first: the dir is now this node's
    assert (tmp_path / "data" / "NODE").read_text() == f"{mine.node.address}\n"
    prepare_data_dir(mine)  # its own dir, again: fine
    other = write_config(tmp_path, "data")
    second = load_config(other).node.address
    code, lines = start(other)
    assert code == 2
    assert lines == [f"raftd: {other}: [node] data_dir {tmp_path / 'data'} holds the votes and "
                     f"log of node {mine.node.address}, not of {second} ([node] address); give "
                     "this node an empty data dir (see raftctl add-node) or fix the path"]
    # --force-new-cluster (a survivor's disk, brought back under a new address) re-claims it.
    prepare_data_dir(load_config(other), reclaim=True)
    assert (tmp_path / "data" / "NODE").read_text() == f"{second}\n"
    os.remove(tmp_path / "data" / "NODE")  # the documented way out, for a dir not needed
    prepare_data_dir(mine)
    assert (tmp_path / "data" / "NODE").read_text() == f"{mine.node.address}\n"

"""`raftd init` output and raftd argument errors."""

from __future__ import annotations

import io
import json
import logging
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from raftctl.localcluster import free_ports
from raftd.cli import cli
from raftd.config import load_config
from raftd.logs import setup_logging


def test_init_writes_loadable_configs(tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    result = CliRunner().invoke(cli, ["init", "--nodes", "3", "--dir", str(out)])
    assert result.exit_code == 0, result.output
    members = ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")
    for k in (1, 2, 3):
        path = out / f"node{k}.toml"
        config = load_config(path)
        assert config.node.address == members[k - 1]
        assert config.node.data_dir == (out / "data" / f"n{k}").resolve()
        assert config.cluster.members == members
        # Loopback never fragments, so init raises the datagram limit.
        assert config.raft.max_datagram_bytes == 65000
        assert f"raftd start --config {path}" in result.stdout
    assert f"raftctl -e {','.join(members)} status" in result.stdout


def test_init_other_host_and_port(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["init", "-n", "2", "-d", str(tmp_path), "--host", "10.1.2.3", "--base-port", "9000"]
    )
    assert result.exit_code == 0, result.output
    config = load_config(tmp_path / "node2.toml")
    assert config.node.address == "10.1.2.3:9001"
    assert config.cluster.members == ("10.1.2.3:9000", "10.1.2.3:9001")
    assert config.raft.max_datagram_bytes == 1400
    assert "[raft]" not in (tmp_path / "node1.toml").read_text()


def test_init_refuses_to_overwrite(tmp_path: Path) -> None:
    (tmp_path / "node2.toml").write_text("mine\n")
    result = CliRunner().invoke(cli, ["init", "--nodes", "3", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.strip() == f"raftd: refusing to overwrite {tmp_path / 'node2.toml'}"
    assert (tmp_path / "node2.toml").read_text() == "mine\n"
    assert not (tmp_path / "node1.toml").exists()


@pytest.mark.parametrize(
    "args,expected",
    [
        (["init", "--dir", "x"], "Missing option '-n' / '--nodes'"),
        (["init", "--nodes", "3"], "Missing option '-d' / '--dir'"),
        (["init", "--nodes", "0", "--dir", "x"], "Invalid value for '-n' / '--nodes'"),
        (["init", "--nodes", "three", "--dir", "x"], "Invalid value for '-n' / '--nodes'"),
        (["init", "-n", "3", "-d", "x", "--base-port", "65534"], "run past port 65535"),
        (["init", "-n", "3", "-d", "x", "--host", "no such host"], "Invalid value for --host"),
        (["start"], "Missing option '-c' / '--config'"),
        (["start", "-c", "x.toml", "--log-format", "xml"], "Invalid value for '--log-format'"),
        (["stop"], "No such command 'stop'"),
    ],
)
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert "Traceback" not in result.output


def test_json_log_lines_carry_extra_fields() -> None:
    stream = io.StringIO()
    setup_logging("json", stream=stream)
    logging.getLogger("raftd.test").warning("became %s", "leader", extra={"term": 4})
    line = json.loads(stream.getvalue())
    assert line["level"] == "warning" and line["logger"] == "raftd.test"
    assert (line["msg"], line["term"]) == ("became leader", 4)


def test_free_ports_are_distinct_and_bindable_for_tcp_and_udp() -> None:
    ports = free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as sock:
                sock.bind(("127.0.0.1", port))

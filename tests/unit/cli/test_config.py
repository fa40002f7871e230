"""Node config validation: every bad case is refused with exit 2 and ONE line naming the key."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

import raftd
from raftd.cli import cli
from raftd.config import ConfigError, load_config, parse_address

GOOD = """\
[node]
address = "127.0.0.1:7001"
data_dir = "data/n1"

[cluster]
members = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_defaults_and_resolution(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    assert config.node.address == "127.0.0.1:7001"
    assert config.node.listen == "127.0.0.1:7001"
    # Relative data_dir is relative to the config file, not to the working directory.
    assert config.node.data_dir == (tmp_path / "data" / "n1").resolve()
    assert config.cluster.members == ("127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003")
    raft = config.raft
    assert (raft.tick_ms, raft.election_timeout_ms, raft.heartbeat_interval_ms) == (
        10,
        (150, 300),
        30,
    )
    assert raft.fsync is True
    assert raft.max_datagram_bytes == 1400
    assert raft.max_entry_bytes == 1048576
    assert (raft.snapshot_every, raft.snapshot_min_log_bytes) == (10000, 67108864)
    assert raft.promote_lag_entries == 1000
    assert (raft.election_ticks, raft.heartbeat_ticks) == ((15, 30), 3)


def test_every_raft_key_is_accepted(tmp_path: Path) -> None:
    text = (
        GOOD
        + """
[raft]
tick_ms = 5
election_timeout_ms = [100, 100]
heartbeat_interval_ms = 20
fsync = false
max_datagram_bytes = 65000
max_entry_bytes = 1000
snapshot_every = 50
snapshot_min_log_bytes = 0
promote_lag_entries = 0
"""
    )
    text = text.replace('data_dir = "data/n1"', 'data_dir = "data/n1"\nlisten = "0.0.0.0:7001"')
    config = load_config(write(tmp_path, text))
    assert config.node.listen == "0.0.0.0:7001"
    assert config.raft.election_ticks == (20, 20)
    assert config.raft.fsync is False


def _replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


NODE_ADDR = 'address = "127.0.0.1:7001"'
MEMBERS = 'members = ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"]'

BAD = {
    "tick not int": (
        GOOD + '[raft]\ntick_ms = "x"\n',
        '[raft] tick_ms must be a positive integer, got "x"',
    ),
    "tick zero": (
        GOOD + "[raft]\ntick_ms = 0\n",
        "[raft] tick_ms must be a positive integer, got 0",
    ),
    "tick bool": (GOOD + "[raft]\ntick_ms = true\n", "[raft] tick_ms must be a positive integer"),
    "typo key": (
        GOOD + "[raft]\nfsnyc = false\n",
        '[raft] unknown key "fsnyc" (did you mean "fsync"?)',
    ),
    "unknown section": (GOOD + "[nodes]\nx = 1\n", "unknown section [nodes]"),
    "top-level key": ("tick_ms = 10\n" + GOOD, 'key "tick_ms" must be inside a section'),
    "fsync not bool": (
        GOOD + '[raft]\nfsync = "yes"\n',
        '[raft] fsync must be true or false, got "yes"',
    ),
    "address no port": (_replace(NODE_ADDR, 'address = "localhost"'), "[node] address must be"),
    "address port range": (
        _replace(NODE_ADDR, 'address = "127.0.0.1:99999"'),
        "[node] address must be",
    ),
    "address not str": (_replace(NODE_ADDR, "address = 7001"), "[node] address must be"),
    "address bad host": (_replace(NODE_ADDR, 'address = "a b:7001"'), "[node] address must be"),
    "listen bad": (
        _replace(NODE_ADDR, NODE_ADDR + '\nlisten = "0.0.0.0"'),
        "[node] listen must be",
    ),
    "address missing": (_replace(NODE_ADDR, ""), "[node] address is required"),
    "data_dir missing": (_replace('data_dir = "data/n1"', ""), "[node] data_dir is required"),
    "data_dir empty": (
        _replace('data_dir = "data/n1"', 'data_dir = ""'),
        "[node] data_dir must be",
    ),
    "members missing": (_replace(MEMBERS, ""), "[cluster] members is required"),
    "members empty": (
        _replace(MEMBERS, "members = []"),
        "[cluster] members must be a non-empty list",
    ),
    "members bad entry": (_replace(MEMBERS, 'members = ["x"]'), "[cluster] members entry must be"),
    "members twice": (
        _replace(MEMBERS, 'members = ["127.0.0.1:7001", "127.0.0.1:7001"]'),
        '[cluster] members lists "127.0.0.1:7001" twice',
    ),
    "election not list": (
        GOOD + "[raft]\nelection_timeout_ms = 150\n",
        "[raft] election_timeout_ms must be [low, high]",
    ),
    "election reversed": (
        GOOD + "[raft]\nelection_timeout_ms = [300, 150]\n",
        "[raft] election_timeout_ms must be [low, high]",
    ),
    "election not multiple": (
        GOOD + "[raft]\nelection_timeout_ms = [155, 300]\n",
        "[raft] election_timeout_ms must be a multiple of tick_ms (10), got 155",
    ),
    "election not above tick": (
        GOOD
        + "[raft]\ntick_ms = 50\nelection_timeout_ms = [50, 100]\nheartbeat_interval_ms = 50\n",
        "[raft] election_timeout_ms must be bigger than tick_ms (50)",
    ),
    "heartbeat too slow": (
        GOOD + "[raft]\nheartbeat_interval_ms = 150\n",
        "[raft] heartbeat_interval_ms must be less than election_timeout_ms's low bound (150)",
    ),
    "heartbeat not multiple": (
        GOOD + "[raft]\nheartbeat_interval_ms = 25\n",
        "[raft] heartbeat_interval_ms must be a multiple of tick_ms (10), got 25",
    ),
    "datagram too small": (
        GOOD + "[raft]\nmax_datagram_bytes = 100\n",
        "[raft] max_datagram_bytes must be an integer from 512 to 65507",
    ),
    "entry bytes negative": (
        GOOD + "[raft]\nmax_entry_bytes = -1\n",
        "[raft] max_entry_bytes must be a positive integer",
    ),
    "raft not a table": ("raft = 1\n" + GOOD, "[raft] must be a section"),
    "secret_file": (
        _replace(MEMBERS, MEMBERS + '\nsecret_file = "k"'),
        "[cluster] secret_file cannot be read: No such file or directory",
    ),
    "security": (
        GOOD + '[security]\nclient_token_file = "t"\n',
        "[security] client_token_file cannot be read: No such file or directory",
    ),
    "tls": (GOOD + '[security]\ntls_cert = "c"\n', "[security] tls_cert and tls_key go together"),
    "metrics": (
        GOOD + '[metrics]\naddress = "localhost"\n',
        "[metrics] address",
    ),
    "federated updates": (
        GOOD + "[federated]\nenabled = true\nmin_updates = 0\n",
        "[federated] min_updates must be a positive integer, got 0",
    ),
    "federated seconds": (
        GOOD + '[federated]\nrotate_after_s = "30s"\n',
        '[federated] rotate_after_s must be a positive number of seconds, got "30s"',
    ),
    "invalid toml": (GOOD + "[raft\n", "invalid TOML"),
}


@pytest.mark.parametrize("text,expected", list(BAD.values()), ids=list(BAD))
def test_bad_config_exits_2_with_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    result = CliRunner().invoke(cli, ["start", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"raftd: {path}: ")
    assert expected in lines[0]
    with pytest.raises(ConfigError, match="^" + str(path)):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["start", "--config", str(tmp_path / "nope.toml")])
    assert result.exit_code == 2
    assert (
        result.stderr.strip()
        == f"raftd: {tmp_path / 'nope.toml'}: cannot read config: No such file or directory"
    )


def test_a_config_that_is_not_utf8_exits_2_with_one_line(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_bytes(b"\xff\xfe[node]\n")
    result = CliRunner().invoke(cli, ["start", "--config", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"raftd: {path}: invalid TOML: not UTF-8 text (byte 0xff at "
                             "offset 0); save the file as UTF-8\n")


def test_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("")
    for data_dir, expected in (
        ("blocker", "is not a directory"),
        ("blocker/n1", "cannot be created"),
    ):
        path = write(tmp_path, _replace('data_dir = "data/n1"', f'data_dir = "{data_dir}"'))
        with pytest.raises(ConfigError, match=rf"\[node\] data_dir {expected}"):
            load_config(path)


def test_start_runs_server_and_exits_with_its_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = []

    def run(config: object) -> int:
        seen.append(config)
        return 7

    fake = types.ModuleType("raftd.server")
    fake.run = run  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "raftd.server", fake)
    monkeypatch.setattr(raftd, "server", fake, raising=False)
    path = write(tmp_path, GOOD)
    result = CliRunner().invoke(cli, ["start", "--config", str(path), "--log-format", "json"])
    assert result.exit_code == 7
    assert seen == [load_config(path)]


@pytest.mark.parametrize(
    "text,expected",
    [
        ("127.0.0.1:7001", ("127.0.0.1", 7001)),
        ("node-1.example.com:80", ("node-1.example.com", 80)),
        ("[::1]:7001", ("::1", 7001)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["", "host", ":7001", "h:0", "h:65536", "h:x", "::1:7001", "[nope]:1", "a_b:1"]
)
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)

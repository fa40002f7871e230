"""`[cluster] secret_file` and `[security]`: loading, refusals in one line, `raftd init`'s key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from raftd.cli import cli
from raftd.config import ConfigError, load_config

GOOD = """\
[node]
address = "127.0.0.1:7001"
data_dir = "data/n1"

[cluster]
members = ["127.0.0.1:7001"]
"""
KEY = b"a" * 64


def private(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_init_writes_a_private_key_every_config_names(tmp_path: Path) -> None:
    out = tmp_path / "cluster"
    result = CliRunner().invoke(cli, ["init", "--nodes", "3", "--dir", str(out)])
    assert result.exit_code == 0, result.output
    key = out / "cluster.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    secret = key.read_bytes().strip()
    assert len(secret) == 64 and int(secret, 16) >= 0  # 256 bits as hex digits
    for k in (1, 2, 3):
        loaded = load_config(out / f"node{k}.toml")
        assert loaded.cluster.secret_file == key.resolve()
        assert loaded.cluster.secret == secret
        assert secret.decode() not in repr(loaded)  # never in a log line by accident
    again = CliRunner().invoke(cli, ["init", "--nodes", "3", "--dir", str(tmp_path / "other")])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "other" / "cluster.key").read_bytes() != key.read_bytes()


def test_init_refuses_to_overwrite_a_key(tmp_path: Path) -> None:
    private(tmp_path / "cluster.key", b"mine")
    result = CliRunner().invoke(cli, ["init", "--nodes", "1", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "refusing to overwrite" in result.stderr and "cluster.key" in result.stderr
    assert (tmp_path / "cluster.key").read_bytes() == b"mine"
    assert not (tmp_path / "node1.toml").exists()


def test_security_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir()
    private(tmp_path / "keys" / "cluster.key", b"\n" + KEY + b"\n")
    private(tmp_path / "keys" / "client.token", b"t" * 16 + b"\n")
    for name in ("node.crt", "node.key", "ca.crt"):
        (tmp_path / "keys" / name).write_text("pem")
    text = GOOD.replace("members", 'secret_file = "keys/cluster.key"\nmembers') + (
        '[security]\nclient_token_file = "keys/client.token"\ntls_cert = "keys/node.crt"\n'
        'tls_key = "keys/node.key"\ntls_ca = "keys/ca.crt"\n'
    )
    loaded = load_config(config(tmp_path, text))
    assert loaded.cluster.secret == KEY
    sec = loaded.security
    assert sec.client_token == b"t" * 16
    assert (sec.tls_cert, sec.tls_key, sec.tls_ca) == tuple(
        (tmp_path / "keys" / n).resolve() for n in ("node.crt", "node.key", "ca.crt"))


def test_without_security_keys_nothing_is_required(tmp_path: Path) -> None:
    loaded = load_config(config(tmp_path, GOOD))
    assert loaded.cluster.secret is None and loaded.cluster.secret_file is None
    sec = loaded.security
    assert (sec.client_token, sec.tls_cert, sec.tls_key, sec.tls_ca) == (None, None, None, None)


@pytest.mark.parametrize(
    "files,section,expected",
    [
        ({"k": (KEY, 0o644)}, 'secret_file = "k"',
         "[cluster] secret_file must be private to its owner (mode 0644; chmod 600 it)"),
        ({"k": (b"short", 0o600)}, 'secret_file = "k"',
         "[cluster] secret_file must hold at least 32 bytes, has 5"),
        ({}, 'secret_file = "missing"', "[cluster] secret_file cannot be read"),
        ({"t": (b"x" * 15, 0o600)}, '[security]\nclient_token_file = "t"',
         "[security] client_token_file must hold at least 16 bytes"),
        ({"t": (b"x" * 20, 0o640)}, '[security]\nclient_token_file = "t"',
         "[security] client_token_file must be private to its owner"),
        ({"c": (b"pem", 0o644)}, '[security]\ntls_key = "c"',
         "[security] tls_cert and tls_key go together"),
        ({"c": (b"pem", 0o644)}, '[security]\ntls_cert = "c"\ntls_key = "nope"',
         "[security] tls_key cannot be read"),
        ({"c": (b"pem", 0o644)}, '[security]\ntls_ca = "c"', "[security] tls_ca needs tls_cert"),
        ({}, '[security]\ntls_cert = ""', "[security] tls_cert must be a non-empty path"),
    ],
)
def test_bad_security_settings_are_refused_in_one_line(
    tmp_path: Path, files: dict[str, tuple[bytes, int]], section: str, expected: str
) -> None:
    for name, (data, mode) in files.items():
        (tmp_path / name).write_bytes(data)
        os.chmod(tmp_path / name, mode)
    if section.startswith("secret_file"):
        text = GOOD.replace("members", f"{section}\nmembers")
    else:
        text = GOOD + section + "\n"
    path = config(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)
    assert "\n" not in str(info.value)
    result = CliRunner().invoke(cli, ["start", "--config", str(path)])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1

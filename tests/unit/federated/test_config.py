"""The [federated] config keys, and a node that cannot host federated learning refusing."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from raftd.apps import AppUnavailable, hosted_apps
from raftd.config import ConfigError, FederatedSection, NodeConfig, load_config

GOOD = """\
[node]
address = "127.0.0.1:7001"
data_dir = "data/n1"

[cluster]
members = ["127.0.0.1:7001"]
"""


def test_federated_is_off_by_default(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(GOOD)
    assert load_config(tmp_path / "node.toml").federated == FederatedSection()
    assert FederatedSection().enabled is False


def test_every_federated_key_is_read(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(GOOD + "[federated]\nenabled = true\nrotate_after_s = 2"
                                        "\nmin_updates = 5\nround_timeout_s = 0.5\n")
    fed = load_config(tmp_path / "node.toml").federated
    assert fed == FederatedSection(enabled=True, rotate_after_s=2.0, min_updates=5,
                                   round_timeout_s=0.5)


@pytest.mark.parametrize("line,message", [
    ("enabled = 1", "[federated] enabled must be true or false"),
    ("rotate_after_s = 0", "[federated] rotate_after_s must be a positive number of seconds"),
    ("round_timeout_s = -1.5", "[federated] round_timeout_s must be a positive number"),
    ("min_updates = 2.5", "[federated] min_updates must be a positive integer"),
    ("rotate_after = 3", '[federated] unknown key "rotate_after" (did you mean "rotate_after_s"?)'),
])
def test_bad_federated_values_name_the_key(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "node.toml").write_text(GOOD + f"[federated]\n{line}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "node.toml")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_enabled_without_the_extra_refuses_with_one_line(monkeypatch: pytest.MonkeyPatch,
                                                         tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(GOOD + "[federated]\nenabled = true\n")
    config: NodeConfig = load_config(tmp_path / "node.toml")
    monkeypatch.setitem(sys.modules, "raftd.federated.coordinator", None)  # import fails
    with pytest.raises(AppUnavailable) as err:
        hosted_apps(SimpleNamespace(config=config))  # type: ignore[arg-type]
    text = str(err.value)
    assert "\n" not in text and "rafty[federated]" in text and "[federated] enabled" in text


def test_disabled_hosts_nothing(tmp_path: Path) -> None:
    (tmp_path / "node.toml").write_text(GOOD)
    assert hosted_apps(SimpleNamespace(config=load_config(tmp_path / "node.toml"))) == {}  # type: ignore[arg-type]

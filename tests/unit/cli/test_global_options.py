"""The global options before or after the verb.

The client library is faked (what each command built its client with is recorded); the same
checks against a real node are in tests/integration/test_cli.py.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from raftctl import Client
from raftctl.cli import cli
from raftctl.localcluster import free_ports
from raftctl.manpage import walk
from raftctl.options import DEFAULT_ENDPOINTS, HEADING, OPTIONS, GlobalOption
from tests.unit.cli.test_raftctl_cli import A, B, C, FakeStore

NO_ENV: dict[str, str | None] = {
    "RAFTCTL_ENDPOINTS": None, "RAFTCTL_TIMEOUT": None, "RAFTCTL_TOKEN": None,
}


def run(*args: str, env: Mapping[str, str | None] | None = None, width: int = 80) -> Result:
    result = CliRunner().invoke(cli, list(args), env={**NO_ENV, **(env or {})},
                                prog_name="raftctl", terminal_width=width)
    assert "Traceback" not in result.output + result.stderr
    return result


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """(endpoints, timeout, token) of every Client a command built, over a FakeStore."""
    fake = FakeStore()
    for name in ("set", "get_item", "items", "delete"):
        method = getattr(fake, name)
        monkeypatch.setattr(Client, name, lambda self, *a, _m=method, **kw: _m(*a, **kw))
    built: list[tuple[Any, ...]] = []
    original = Client.__init__

    def init(self: Client, endpoints: Any, *args: Any, **kwargs: Any) -> None:
        built.append((tuple(endpoints), kwargs.get("timeout"), kwargs.get("token")))
        original(self, endpoints, *args, **kwargs)

    monkeypatch.setattr(Client, "__init__", init)
    return built


@pytest.mark.parametrize(
    "args",
    [
        ["-e", A, "-o", "json", "--timeout", "7", "--token", "t", "get", "k"],
        ["get", "k", "-e", A, "-o", "json", "--timeout", "7", "--token", "t"],
        ["-o", "json", "--token", "t", "get", "-e", A, "k", "--timeout", "7"],
    ],
    ids=["before", "after", "both sides"],
)
def test_before_or_after_the_verb_alike(clients: list[tuple[Any, ...]], args: list[str]) -> None:
    assert run("set", "k", "v").exit_code == 0
    result = run(*args)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"key": "k", "value": "v", "revision": 1}
    assert clients[-1] == ((A,), 7.0, "t")


def test_after_the_verb_wins(clients: list[tuple[Any, ...]]) -> None:
    run("set", "k", "v")
    result = run("-e", A, "-o", "json", "--timeout", "7", "--token", "t1", "get", "k",
                 "-e", f"{B},{C}", "-o", "plain", "--timeout", "2", "--token", "t2")
    assert (result.exit_code, result.stdout) == (0, "v\n")
    assert clients[-1] == ((B, C), 2.0, "t2")


def test_environment_and_defaults_apply_as_before(clients: list[tuple[Any, ...]]) -> None:
    env = {"RAFTCTL_ENDPOINTS": C, "RAFTCTL_TIMEOUT": "9", "RAFTCTL_TOKEN": "env"}
    run("get", "k")
    assert clients[-1] == ((DEFAULT_ENDPOINTS,), 5.0, None)
    run("get", "k", env=env)
    assert clients[-1] == ((C,), 9.0, "env")
    run("get", "k", "-e", A, "--timeout", "1", env=env)
    assert clients[-1] == ((A,), 1.0, "env")
    # The environment never overrides a value typed before the verb.
    run("-e", B, "--timeout", "3", "get", "k", env=env)
    assert clients[-1] == ((B,), 3.0, "env")
    # A bad variable is not read again at the verb: the value typed before it stands.
    result = run("-e", B, "--timeout", "3", "get", "k", env={"RAFTCTL_TIMEOUT": "abc"})
    assert clients[-1] == ((B,), 3.0, None), result.output  # ran (the fake finds no key)


@pytest.mark.parametrize(
    "variable,bad,typed",
    [
        ("RAFTCTL_ENDPOINTS", "garbage", ["-e", A]),
        ("RAFTCTL_ENDPOINTS", "http://h:1", ["-e", A]),
        ("RAFTCTL_TIMEOUT", "soon", ["--timeout", "2"]),
        ("RAFTCTL_TIMEOUT", "nan", ["--timeout", "2"]),
        ("RAFTCTL_TIMEOUT", "inf", ["--timeout", "2"]),
    ],
)
def test_a_bad_variable_typed_over_after_the_verb_is_no_error(
    clients: list[tuple[Any, ...]], variable: str, bad: str, typed: list[str]
) -> None:
    result = run("get", "k", *typed, env={variable: bad})
    assert result.exit_code == 1, result.stderr  # ran: the fake store has no key k
    assert variable not in result.stderr
    built = len(clients)
    result = run("get", "k", env={variable: bad})  # still in effect: a usage error
    assert (result.exit_code, len(clients)) == (2, built)
    assert f"(env var: '{variable}')" in result.stderr and bad in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["status", "-e", "{eps}"],
        ["snapshot", "save", "{file}", "-e", "{eps}"],
        ["snapshot", "-e", "{eps}", "save", "{file}"],
        ["fl", "status", "-e", "{eps}"],
        ["fl", "-e", "{eps}", "status"],
    ],
    ids=" ".join,
)
def test_nested_commands_take_them_too(args: list[str], tmp_path: Path) -> None:
    endpoints = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
    argv = [a.format(eps=endpoints, file=tmp_path / "s.snap") for a in args]
    result = run("-e", "overridden.invalid:7001", "--timeout", "30", *argv, "--timeout", "0.5")
    assert (result.exit_code, result.stdout) == (3, ""), result.stderr
    assert result.stderr.startswith("Error: no node reachable")
    assert endpoints.split(",")[0] in result.stderr and "overridden" not in result.stderr


@pytest.mark.parametrize(
    "args,expected",
    [
        (["get", "k", "-e", "nohost"], "Invalid value for '-e' / '--endpoints'"),
        (["get", "k", "--timeout", "0"], "Invalid value for '--timeout'"),
        (["status", "-o", "yaml"], "Invalid value for '-o' / '--output'"),
        (["bench", "-o", "yaml", "write"], "Invalid value for '-o' / '--output'"),
        (["fl", "status", "--timeout", "-1"], "Invalid value for '--timeout'"),
        (["get", "k", "--key", __file__], "needs --cert as well"),
    ],
)
def test_usage_errors_after_the_verb_exit_2(args: list[str], expected: str) -> None:
    result = run(*args)
    assert (result.exit_code, result.stdout) == (2, ""), result.output
    assert expected in result.stderr


def test_every_command_declares_them_with_the_root_help() -> None:
    ctx = cli.make_context("raftctl", [], resilient_parsing=True)
    root = {p.opts[0]: p.get_help_record(ctx) for p in cli.get_params(ctx)}
    for command, sub_ctx in walk(cli, ctx):
        again = [p for p in command.get_params(sub_ctx) if isinstance(p, GlobalOption)]
        assert [tuple(p.opts) for p in again] == [decls for decls, _ in OPTIONS]
        assert all(p.get_help_record(sub_ctx) == root[p.opts[0]] for p in again)
        page = run(*sub_ctx.command_path.split()[1:], "--help").stdout
        assert f"\n{HEADING}:\n" in page

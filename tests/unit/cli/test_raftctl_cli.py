"""raftctl argument errors, exit codes and output shapes, with the client library faked.

Tests against real running nodes live in tests/integration.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from click.testing import CliRunner, Result

from raftctl.cli import cli
from raftctl.client import AsyncClient, Client
from raftctl.errors import ClusterUnavailable, NoLeader, RequestTimeout
from raftctl.localcluster import free_ports

A, B, C = "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"


def run(
    *args: str, input: str | bytes | None = None, env: Mapping[str, str] | None = None
) -> Result:
    result = CliRunner().invoke(cli, list(args), input=input, env=env, prog_name="raftctl")
    assert "Traceback" not in result.output + result.stderr
    return result


@pytest.mark.parametrize(
    "args,env,expected",
    [
        (["frobnicate"], {}, "No such command 'frobnicate'"),
        (["get"], {}, "Missing argument 'KEY'"),
        (["set", "k"], {}, "Missing argument 'VALUE'"),
        (["get", "k", "extra"], {}, "Got unexpected extra argument (extra)"),
        (["-e", "nohost", "get", "k"], {}, "Invalid value for '-e' / '--endpoints'"),
        (["-e", "", "get", "k"], {}, "no endpoint given"),
        (["get", "k"], {"RAFTCTL_ENDPOINTS": "h:99999"}, "RAFTCTL_ENDPOINTS"),
        (["--timeout", "0", "get", "k"], {}, "Invalid value for '--timeout'"),
        (["get", "k"], {"RAFTCTL_TIMEOUT": "soon"}, "RAFTCTL_TIMEOUT"),
        (["-o", "yaml", "status"], {}, "Invalid value for '-o' / '--output'"),
        (["get", "k", "--consistency", "eventual"], {}, "Invalid value for '--consistency'"),
        (["diagnostic", "nohost"], {}, "Invalid value for '[ADDRESS]'"),
        (["status", "--watch"], {}, "No such option '--watch'"),
    ],
)
def test_usage_errors_exit_2(args: list[str], env: dict[str, str], expected: str) -> None:
    result = run(*args, env=env)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args", [["get", "k"], ["set", "k", "v"], ["delete", "k"], ["status"], ["diagnostic"]]
)
def test_nothing_listening_exits_3_naming_the_endpoints(args: list[str]) -> None:
    endpoints = [f"127.0.0.1:{port}" for port in free_ports(2)]
    result = run("-e", ",".join(endpoints), "--timeout", "0.5", *args)
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("Error: no node reachable") and "\n" not in message
    assert all(e in message for e in endpoints)


# -- key-value verbs, client faked -------------------------------------------------------------


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    data: dict[str, Any] = {}

    def set_(self: Client, key: str, value: Any) -> int:
        data[key] = value
        return 7

    def get(self: Client, key: str, default: Any = None, *, consistency: str = "") -> Any:
        data["_consistency"] = consistency
        return data.get(key, default)

    def delete(self: Client, key: str) -> bool:
        return data.pop(key, None) is not None

    monkeypatch.setattr(Client, "set", set_)
    monkeypatch.setattr(Client, "get", get)
    monkeypatch.setattr(Client, "delete", delete)
    return data


def test_set_get_delete(store: dict[str, Any]) -> None:
    assert run("set", "k", "hello world").stdout == "OK\n"
    result = run("get", "k")
    assert (result.exit_code, result.stdout) == (0, "hello world\n")
    assert store["_consistency"] == "linearizable"
    run("get", "k", "--consistency", "stale")
    assert store["_consistency"] == "stale"
    assert run("delete", "k").exit_code == 0
    missing = run("get", "k")
    assert (missing.exit_code, missing.stdout, missing.stderr) == (
        1,
        "",
        "Error: key not found: k\n",
    )
    gone = run("delete", "k")
    assert (gone.exit_code, gone.stderr) == (1, "Error: key not found: k\n")


def test_set_from_stdin(store: dict[str, Any]) -> None:
    run("set", "k", "-", input="line one\nline two\n")
    assert store["k"] == "line one\nline two"
    run("set", "raw", "-", input=b"\xff\x00\n")
    assert store["raw"] == b"\xff\x00"
    assert run("get", "raw").stdout_bytes == b"\xff\x00"


def test_values_that_are_not_strings(store: dict[str, Any]) -> None:
    store["n"] = {"a": [1, 2.5, None, True]}
    assert run("get", "n").stdout == '{"a": [1, 2.5, null, true]}\n'
    assert json.loads(run("-o", "json", "get", "n").stdout) == {"key": "n", "value": store["n"]}


def test_json_output_of_writes(store: dict[str, Any]) -> None:
    result = run("-o", "json", "set", "k", "v")
    assert json.loads(result.stdout) == {"action": "set", "key": "k", "revision": 7}


@pytest.mark.parametrize(
    "error,code,text",
    [
        (
            NoLeader("no_leader", "election in progress"),
            1,
            "the cluster answered with an error: no_leader",
        ),
        (RequestTimeout("request timed out after 5s"), 3, f"endpoints tried: {A}, {B}"),
        (ClusterUnavailable([A, B]), 3, f"no node reachable (tried {A}, {B})"),
    ],
)
def test_client_errors_become_one_line_and_an_exit_code(
    monkeypatch: pytest.MonkeyPatch, error: Exception, code: int, text: str
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(Client, "get", fail)
    result = run("-e", f"{A},{B}", "get", "k")
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and text in result.stderr


# -- status and diagnostic, diagnostics faked --------------------------------------------------


def diagnostic(address: str, status: str, leader: str | None, term: int = 3) -> dict[str, Any]:
    return {
        "type": "result",
        "success": True,
        "status": status,
        "persist": {"votedFor": leader, "currentTerm": term},
        "volatile": {"leaderId": leader, "cluster": [A, B, C], "address": address},
        "log": {
            "commitIndex": 10,
            "appliedIndex": 9,
            "lastLogIndex": 11,
            "lastLogTerm": term,
            "firstIndex": 1,
        },
        "stats": {"reads": [[1700000000, 2]], "writes": [], "append": []},
        "catchingUp": False,
    }


@pytest.fixture
def nodes(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """address -> diagnostic map, or an exception to raise; records who was asked."""
    answers: dict[str, Any] = {
        A: diagnostic(A, "leader", A),
        B: diagnostic(B, "pre_candidate", None, term=2),
        C: ClusterUnavailable([C], f"{C}: [Errno 111] Connect call failed"),
    }
    asked: list[str] = []

    async def fake(self: AsyncClient, address: str) -> dict[str, Any]:
        asked.append(address)
        answer = answers[address]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(AsyncClient, "diagnostic", fake)
    answers["_asked"] = asked
    return answers


def test_status_json_has_one_object_per_member(nodes: dict[str, Any]) -> None:
    # Only A is given; B and C come from A's member list.
    result = run("-e", A, "-o", "json", "status")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["address"] for r in rows] == [A, B, C]
    assert rows[0] == {
        "address": A,
        "role": "leader",
        "term": 3,
        "leader": A,
        "commit_index": 10,
        "applied_index": 9,
        "last_log_index": 11,
        "reachable": True,
        "error": None,
        "catching_up": False,
    }
    assert (rows[1]["role"], rows[1]["leader"]) == ("candidate", None)
    assert rows[2]["reachable"] is False and rows[2]["error"] == "connection refused"
    assert sorted(nodes["_asked"]) == [A, B, C]


def test_status_plain_and_table(nodes: dict[str, Any]) -> None:
    plain = run("-e", f"{C},{B}", "status").stdout.splitlines()
    assert plain[0].split("\t") == [A, "leader", "3", A, "10", "9", "11", "yes", "-"]
    assert plain[2].split("\t") == [C, "-", "-", "-", "-", "-", "-", "no", "connection refused"]
    table = run("-e", A, "-o", "table", "status").stdout
    assert "LAST LOG" in table and "ERROR" in table and "connection refused" in table
    nodes[C] = diagnostic(C, "follower", A)
    assert "ERROR" not in run("-e", A, "-o", "table", "status").stdout


def test_status_exit_3_when_nobody_answers(nodes: dict[str, Any]) -> None:
    result = run("-e", C, "status")
    assert result.exit_code == 3
    assert result.stderr == f"Error: no node reachable (tried {C}): {C}: connection refused\n"


def test_diagnostic(nodes: dict[str, Any]) -> None:
    raw = json.loads(run("-o", "json", "diagnostic", B).stdout)
    assert raw == nodes[B]
    first = run("-e", f"{C},{A}", "diagnostic").stdout.splitlines()
    assert "status\tleader" in first and "log.commitIndex\t10" in first
    assert "volatile.cluster\t" + json.dumps([A, B, C]) in first
    assert "diagnostic of 127.0.0.1:7001" in run("-e", A, "-o", "table", "diagnostic").stdout
    down = run("diagnostic", C)
    assert down.exit_code == 3 and C in down.stderr


def test_shell_completion_lists_commands() -> None:
    result = CliRunner().invoke(
        cli,
        [],
        prog_name="raftctl",
        env={"_RAFTCTL_COMPLETE": "bash_complete", "COMP_WORDS": "raftctl s", "COMP_CWORD": "1"},
    )
    assert result.stdout.split() == ["plain,set", "plain,status"]

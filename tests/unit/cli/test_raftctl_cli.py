"""raftctl argument errors, exit codes and output shapes, with the client library faked.

Tests against real running nodes live in tests/integration/test_cli.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
from click.testing import CliRunner, Result

from raftctl import AsyncClient, Client, Item
from raftctl.cli import cli
from raftctl.errors import (
    BadRequest,
    ClusterUnavailable,
    ConditionFailed,
    NoLeader,
    RequestTimeout,
    ServerError,
    Unauthorized,
)
from raftctl.localcluster import free_ports
from raftctl.manpage import walk
from raftd.wire.client import MAX_KEY_BYTES

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
        (["--timeout", "nan", "get", "k"], {}, "'nan' is not a finite number of seconds"),
        (["get", "k", "--timeout", "inf"], {}, "'inf' is not a finite number of seconds"),
        (["--timeout", "-inf", "get", "k"], {}, "-inf is not in the range x>0"),
        (["get", "k"], {"RAFTCTL_TIMEOUT": "nan"}, "RAFTCTL_TIMEOUT"),
        (["status", "--watch", "nan"], {}, "'nan' is not a finite number of seconds"),
        (["bench", "write", "--duration", "inf"], {}, "'inf' is not a finite number of seconds"),
        (["bench", "write", "--entries", "5", "--duration", "1"], {},
         "give --entries or --duration, not both"),
        (["bench", "read", "--entries", "5", "--duration", "1"], {},
         "give --entries or --duration, not both"),
        (["bench", "serve"], {}, "bench serve needs --head, or --servers N to host a cluster"),
        (["-e", "http://127.0.0.1:21401", "get", "k"], {}, "no URL scheme"),
        (["-e", "127.0.0.1:1;127.0.0.1:2", "get", "k"], {}, "separate endpoints with commas"),
        (["-e", "a/b:1", "get", "k"], {}, "'/' is not allowed in a host name"),
        (["-e", "n1..example:1", "get", "k"], {}, "'n1..example' is not a valid host name"),
        (["-e", "[::zz]:1", "get", "k"], {}, "'::zz' is not an IPv6 address"),
        (["get", "k"], {"RAFTCTL_ENDPOINTS": "tcp://h:1"}, "RAFTCTL_ENDPOINTS"),
        (["add-node", "http://h:1"], {}, "Invalid value for 'ADDRESS': invalid endpoint"),
        (["set", "", "v"], {}, "Invalid value for 'KEY': a key must not be empty"),
        (["set", "k" * (MAX_KEY_BYTES + 1), "v"], {}, f"at most {MAX_KEY_BYTES} UTF-8 bytes"),
        (["get", ""], {}, "Invalid value for '[KEY]': a key must not be empty"),
        (["get", "é" * 2049], {}, f"at most {MAX_KEY_BYTES} UTF-8 bytes, not 4098"),
        (["get", "\udcff"], {}, "Invalid value for '[KEY]': a key must be valid UTF-8"),
        (["delete", ""], {}, "Invalid value for 'KEY': a key must not be empty"),
        (["get", "--prefix", "p" * 4097], {}, "Invalid value for '--prefix'"),
        (["list", "p" * 4097], {}, "Invalid value for '[PREFIX]'"),
        (["get", "k"], {"RAFTCTL_TIMEOUT": "soon"}, "RAFTCTL_TIMEOUT"),
        (["-o", "yaml", "status"], {}, "Invalid value for '-o' / '--output'"),
        (["get", "k", "--consistency", "eventual"], {}, "Invalid value for '--consistency'"),
        (["get", "k", "--prefix", "p"], {}, "give KEY or --prefix, not both"),
        (["get", "--prefix", "p", "--consistency", "stale"], {}, "one KEY only"),
        (["set", "k", "v", "--if-revision", "-1"], {}, "Invalid value for '--if-revision'"),
        (["set", "k", "v", "--if-revision", "3", "--if-absent"], {}, "exclude each other"),
        (["set", "k", "{", "--json"], {}, "Invalid value for 'VALUE': not valid JSON"),
        (["delete", "k", "--if-revision", "x"], {}, "Invalid value for '--if-revision'"),
        (["diagnostic", "nohost"], {}, "Invalid value for '[ADDRESS]'"),
        (["status", "--watch", "0"], {}, "Invalid value for '-w' / '--watch'"),
        (["add-node"], {}, "Missing argument 'ADDRESS'"),
        (["add-node", "h:0"], {}, "Invalid value for 'ADDRESS'"),
        (["promote", "a:1,b:2"], {}, "Invalid value for 'ADDRESS'"),
        (["remove-node", "nohost"], {}, "Invalid value for 'ADDRESS'"),
        (["transfer-leader", "nohost"], {}, "Invalid value for '[ADDRESS]'"),
        (["health", "extra"], {}, "Got unexpected extra argument (extra)"),
        (["fl", "status", "--rounds", "11"], {}, "11 is not in the range 0<=x<=10"),
        (["fl", "demo", "--servers", "2"], {}, "give at least 3, or --no-kill"),
    ],
)
def test_usage_errors_exit_2(args: list[str], env: dict[str, str], expected: str) -> None:
    result = run(*args, env=env)
    assert result.exit_code == 2, result.output
    assert expected in result.stderr
    assert result.stdout == ""


VERBS = [
    ["get", "k"],
    ["get", "--prefix", "p"],
    ["list"],
    ["set", "k", "v"],
    ["delete", "k"],
    ["status"],
    ["diagnostic"],
    ["health"],
    ["add-node", "127.0.0.1:1"],
    ["promote", "127.0.0.1:1"],
    ["remove-node", "127.0.0.1:1"],
    ["transfer-leader"],
    ["bench", "write"],
    ["bench", "read"],
]


@pytest.mark.parametrize("args", VERBS, ids=" ".join)
def test_nothing_listening_exits_3_naming_the_endpoints(args: list[str]) -> None:
    endpoints = [f"127.0.0.1:{port}" for port in free_ports(2)]
    result = run("-e", ",".join(endpoints), "--timeout", "0.5", *args)
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("Error: no node reachable") and "\n" not in message
    assert all(e in message for e in endpoints)


def test_bench_join_with_nothing_listening_exits_3_naming_the_head() -> None:
    heads = [f"127.0.0.1:{port}" for port in free_ports(2)]
    result = run("--timeout", "0.5", "bench", "join", ",".join(heads), "--wait", "5")
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    message = result.stderr.strip()
    assert message.startswith("Error: no node reachable") and "\n" not in message
    assert all(h in message for h in heads)


def test_help_of_every_verb_reads_well() -> None:
    listing = run("--help").stdout
    for args in VERBS:
        assert args[0] in listing
        page = run(args[0], "--help")
        assert page.exit_code == 0 and page.stdout.startswith(f"Usage: raftctl {args[0]}")


def _help_pages() -> list[list[str]]:
    ctx = cli.make_context("raftctl", [], resilient_parsing=True)
    return [[]] + [sub_ctx.command_path.split()[1:] for _, sub_ctx in walk(cli, ctx)]


@pytest.mark.parametrize("path", _help_pages(), ids=lambda p: " ".join(p) or "raftctl")
def test_help_pages_are_not_cut_or_split(path: list[str]) -> None:
    """At 80 columns: whole command summaries, no option name broken across two lines, and
    metavars that say what to give (N, SECONDS), not click's INTEGER RANGE."""
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="raftctl", terminal_width=80)
    page = result.stdout
    listing = page.partition("\nCommands:\n")[2].partition("\n\n")[0]
    assert "..." not in listing, f"summaries cut short:\n{listing}"
    split = [line for line in page.splitlines() if re.search(r"(?<![\w-])--?[\w-]*\w-$", line)]
    assert not split, f"an option name is split at the end of: {split}"
    assert not re.search(r"INTEGER|FLOAT|RANGE| TEXT\b", page), "click's default metavars"


# -- key-value verbs, client faked -------------------------------------------------------------


class FakeStore:
    """The blocking Client's key-value methods over a dict, recording what was asked."""

    def __init__(self) -> None:
        self.data: dict[str, Item] = {}
        self.revision = 0
        self.calls: list[tuple[str, Any]] = []

    def set(self, key: str, value: Any, *, if_revision: int | None, if_absent: bool) -> int:
        self.calls.append(("set", (key, if_revision, if_absent)))
        current = self.data.get(key)
        if if_absent and current is not None:
            raise ConditionFailed("condition_failed", f"key {key!r} exists", current.revision)
        have = current.revision if current else 0
        if if_revision is not None and if_revision != have:
            raise ConditionFailed("condition_failed", f"key {key!r} has revision {have}", have)
        self.revision += 1
        self.data[key] = Item(key, value, self.revision)
        return self.revision

    def get_item(self, key: str, *, consistency: str) -> Item | None:
        self.calls.append(("get", (key, consistency)))
        return self.data.get(key)

    def items(self, prefix: str = "") -> list[Item]:
        self.calls.append(("items", prefix))
        return [self.data[k] for k in sorted(self.data) if k.startswith(prefix)]

    def delete(self, key: str, *, if_revision: int | None) -> bool:
        self.calls.append(("delete", (key, if_revision)))
        return self.data.pop(key, None) is not None


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    for name in ("set", "get_item", "items", "delete"):
        method = getattr(fake, name)
        monkeypatch.setattr(Client, name, lambda self, *a, _m=method, **kw: _m(*a, **kw))
    return fake


def test_set_get_delete(store: FakeStore) -> None:
    assert run("set", "k", "hello world").stdout == "OK\n"
    result = run("get", "k")
    assert (result.exit_code, result.stdout) == (0, "hello world\n")
    assert store.calls[-1] == ("get", ("k", "linearizable"))
    run("get", "k", "--consistency", "stale")
    assert store.calls[-1] == ("get", ("k", "stale"))
    assert run("delete", "k").exit_code == 0
    missing = run("get", "k")
    assert (missing.exit_code, missing.stdout, missing.stderr) == (
        1,
        "",
        "Error: key not found: k\n",
    )
    gone = run("delete", "k")
    assert (gone.exit_code, gone.stderr) == (1, "Error: key not found: k\n")


def test_keys_up_to_the_limit_and_names_of_every_kind_pass(store: FakeStore) -> None:
    assert run("set", "é" * (MAX_KEY_BYTES // 2), "v").exit_code == 0
    assert run("get", "--prefix", "").exit_code == 0
    for endpoints in ("n1.example.com:7001", "[::1]:7001", "my_node:1", "bücher.example:1",
                      "localhost.:1,127.0.0.1:2", "[fe80::1%eth0]:1"):
        result = run("-e", endpoints, "get", "é" * (MAX_KEY_BYTES // 2))
        assert (result.exit_code, result.stdout) == (0, "v\n"), result.stderr


def test_set_from_stdin(store: FakeStore) -> None:
    run("set", "k", "-", input="line one\nline two\n")
    assert store.data["k"].value == "line one\nline two"
    run("set", "raw", "-", input=b"\xff\x00\n")
    assert store.data["raw"].value == b"\xff\x00"
    assert run("get", "raw").stdout_bytes == b"\xff\x00"


def test_json_values(store: FakeStore) -> None:
    run("set", "n", '{"a": [1, 2.5, null, true]}', "--json")
    assert store.data["n"].value == {"a": [1, 2.5, None, True]}
    run("set", "m", "-", "--json", input="42\n")
    assert store.data["m"].value == 42
    assert run("get", "n").stdout == '{"a": [1, 2.5, null, true]}\n'
    assert json.loads(run("-o", "json", "get", "n").stdout) == {
        "key": "n",
        "value": store.data["n"].value,
        "revision": 1,
    }


def test_json_output_of_writes(store: FakeStore) -> None:
    result = run("-o", "json", "set", "k", "v")
    assert json.loads(result.stdout) == {"action": "set", "key": "k", "revision": 1}
    result = run("-o", "json", "delete", "k")
    assert json.loads(result.stdout) == {"action": "delete", "key": "k"}


def test_compare_and_set(store: FakeStore) -> None:
    run("set", "k", "v1")
    stale = run("set", "k", "v2", "--if-revision", "7")
    assert (stale.exit_code, stale.stdout) == (1, "")
    assert stale.stderr == "Error: condition failed: key 'k' has revision 1\n"
    assert run("set", "k", "v2", "--if-revision", "1").exit_code == 0
    assert store.data["k"].value == "v2"
    exists = run("set", "k", "v3", "--if-absent")
    assert (exists.exit_code, exists.stderr) == (1, "Error: condition failed: key 'k' exists\n")
    assert run("set", "fresh", "v", "--if-absent").exit_code == 0
    assert run("delete", "k", "--if-revision", "2").exit_code == 0
    assert store.calls[-1] == ("delete", ("k", 2))


def test_list_and_get_prefix(store: FakeStore) -> None:
    for key, value in [("b/2", "two\tcols"), ("a", "x"), ("b/1", [1]), ("c", "line\nbreak")]:
        run("set", key, value if isinstance(value, str) else json.dumps(value),
            *(["--json"] if not isinstance(value, str) else []))
    assert run("list").stdout == "a\nb/1\nb/2\nc\n"
    assert run("list", "b/").stdout == "b/1\nb/2\n"
    assert run("list", "zzz").stdout == ""
    assert json.loads(run("-o", "json", "list", "b/").stdout) == [
        {"key": "b/1", "revision": 3},
        {"key": "b/2", "revision": 1},
    ]
    # Values are made one line: tabs and newlines would break the columns.
    assert run("get", "--prefix", "").stdout.splitlines() == [
        "a\tx",
        "b/1\t[1]",
        'b/2\t"two\\tcols"',
        'c\t"line\\nbreak"',
    ]
    assert json.loads(run("-o", "json", "get", "--prefix", "b/").stdout) == [
        {"key": "b/1", "value": [1], "revision": 3},
        {"key": "b/2", "value": "two\tcols", "revision": 1},
    ]
    table = run("-o", "table", "get", "--prefix", "b/").stdout.splitlines()
    assert table[0].split() == ["KEY", "VALUE", "REVISION"]
    assert table[1].split() == ["b/1", "[1]", "3"]


@pytest.mark.parametrize(
    "error,code,text",
    [
        (
            NoLeader("no_leader", "election in progress"),
            1,
            "the cluster answered with an error: no_leader",
        ),
        (RequestTimeout("request timed out after 5s"), 3,
         f"request timed out after 5s; endpoints tried: {A}, {B}"),
        (ClusterUnavailable([A, B]), 3, f"no node reachable (tried {A}, {B})"),
        (BadRequest("bad_request", "field 'key': too long"), 1, "bad_request: field 'key'"),
    ],
)
def test_client_errors_become_one_line_and_an_exit_code(
    monkeypatch: pytest.MonkeyPatch, error: Exception, code: int, text: str
) -> None:
    def fail(*args: Any, **kwargs: Any) -> Any:
        raise error

    monkeypatch.setattr(Client, "get_item", fail)
    result = run("-e", f"{A},{B}", "get", "k")
    assert result.exit_code == code
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and text in result.stderr


# -- membership verbs, client faked ------------------------------------------------------------


@pytest.fixture
def members(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    asked: list[tuple[str, ...]] = []

    def add_node(self: Client, address: str, *, learner: bool = False) -> None:
        if address == C:
            raise BadRequest("bad_request", f"{C} is already a member")
        asked.append(("add", address, str(learner)))

    monkeypatch.setattr(Client, "add_node", add_node)
    monkeypatch.setattr(Client, "promote", lambda self, a: asked.append(("promote", a)))
    monkeypatch.setattr(Client, "remove_node", lambda self, a: asked.append(("remove", a)))

    def transfer(self: Client, address: str | None = None) -> str:
        if address == "127.0.0.1:9":
            raise ServerError("timeout", "the transfer timed out")
        asked.append(("transfer", str(address)))
        return address or B

    monkeypatch.setattr(Client, "transfer_leader", transfer)
    return asked


def test_membership_verbs(members: list[tuple[str, ...]]) -> None:
    assert run("add-node", "127.0.0.1:7004").stdout == "OK\n"
    assert run("add-node", "127.0.0.1:7005", "--learner").exit_code == 0
    assert run("promote", "127.0.0.1:7005").exit_code == 0
    result = run("-o", "json", "remove-node", "127.0.0.1:7004")
    assert json.loads(result.stdout) == {"action": "remove-node", "address": "127.0.0.1:7004"}
    assert run("transfer-leader").stdout == f"{B}\n"
    assert json.loads(run("-o", "json", "transfer-leader", C).stdout) == {"leader": C}
    assert members == [
        ("add", "127.0.0.1:7004", "False"),
        ("add", "127.0.0.1:7005", "True"),
        ("promote", "127.0.0.1:7005"),
        ("remove", "127.0.0.1:7004"),
        ("transfer", "None"),
        ("transfer", C),
    ]
    dup = run("add-node", C)
    assert (dup.exit_code, dup.stdout) == (1, "")
    assert dup.stderr == (f"Error: the cluster answered with an error: bad_request: {C} is "
                          "already a member\n")
    late = run("transfer-leader", "127.0.0.1:9")
    assert late.exit_code == 1 and "timeout: the transfer timed out" in late.stderr


# -- status, diagnostic and health, diagnostics faked ------------------------------------------


def diagnostic(address: str, status: str, leader: str | None, term: int = 3) -> dict[str, Any]:
    answer: dict[str, Any] = {
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
        "stats": {"reads": [[1700000000, 2], [1700000001, 5]], "writes": [], "append": []},
        "catchingUp": False,
    }
    if status == "leader":
        answer["matchIndex"] = {A: 11, B: 8, C: 4}
        answer["lastContactMs"] = {B: 12, C: 5300}
    return answer


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
        "lag": 0,
        "last_contact_ms": None,
        "reachable": True,
        "error": None,
        "catching_up": False,
    }
    assert (rows[1]["role"], rows[1]["leader"], rows[1]["lag"]) == ("candidate", None, 3)
    assert rows[1]["last_contact_ms"] == 12
    # Unreachable from here, but the leader reports when it last heard from it.
    assert rows[2]["reachable"] is False and rows[2]["error"] == "connection refused"
    assert (rows[2]["lag"], rows[2]["last_contact_ms"]) == (7, 5300)
    assert sorted(nodes["_asked"]) == [A, B, C]


def test_status_lag_of_an_unreachable_member_never_acked_is_unknown(
    nodes: dict[str, Any],
) -> None:
    """A new leader has no ack from a member that died (say, the old leader): its match
    index is 0 only for want of news, so the lag is unknown, not the whole log."""
    nodes[A]["matchIndex"][C] = 0
    rows = json.loads(run("-e", A, "-o", "json", "status").stdout)
    assert (rows[2]["reachable"], rows[2]["lag"]) == (False, None)


def test_status_plain_and_table(nodes: dict[str, Any]) -> None:
    plain = run("-e", f"{C},{B}", "status").stdout.splitlines()
    assert plain[0].split("\t") == [A, "leader", "3", A, "10", "9", "11", "0", "-", "yes", "-"]
    assert plain[1].split("\t")[7:9] == ["3", "12ms"]
    assert plain[2].split("\t") == [
        C, "-", "-", "-", "-", "-", "-", "7", "5.3s", "no", "connection refused"
    ]
    table = run("-e", A, "-o", "table", "status").stdout
    header = table.splitlines()[0].split()
    assert header == ["ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "LAG",
                      "CONTACT", "ERROR"]
    assert "connection refused" in table
    nodes[C] = diagnostic(C, "follower", A)
    assert "ERROR" not in run("-e", A, "-o", "table", "status").stdout


def test_status_exit_3_when_nobody_answers(nodes: dict[str, Any]) -> None:
    result = run("-e", C, "status")
    assert result.exit_code == 3
    assert result.stderr == f"Error: no node reachable (tried {C}): {C}: connection refused\n"


def test_status_health_diagnostic_exit_1_when_nodes_answer_only_with_errors(
    nodes: dict[str, Any],
) -> None:
    # C is unreachable, A answers but refuses: the cluster answered, so not exit status 3.
    nodes[A] = Unauthorized("unauthorized", "this node requires a client token (raftctl --token)")
    for verb in ("status", "health", "diagnostic"):
        result = run("-e", f"{C},{A}", verb)
        assert (result.exit_code, result.stdout) == (1, ""), result.output
        assert result.stderr == ("Error: the cluster answered with an error: unauthorized: "
                                 "this node requires a client token (raftctl --token)\n")


def test_status_exit_3_when_the_only_answer_is_a_passing_error(nodes: dict[str, Any]) -> None:
    # A node shutting down is as good as unreachable: exit 3, which scripts retry.
    nodes[A] = ServerError("shutting_down", "the node is stopping")
    for verb in ("status", "health", "diagnostic"):
        result = run("-e", f"{C},{A}", verb)
        assert result.exit_code == 3, result.output
        assert result.stderr.startswith("Error: no node reachable"), result.stderr


def test_status_watch_json_lines_until_interrupted(
    nodes: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """-o json --watch prints one array per refresh; Ctrl-C ends it with exit status 0."""
    frames = iter(range(3))

    async def sleep(seconds: float) -> None:
        if next(frames) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr("raftctl.commands.cluster.asyncio.sleep", sleep)
    result = run("-e", A, "-o", "json", "status", "--watch", "0.5")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 3 and all(len(json.loads(line)) == 3 for line in lines)


def test_diagnostic(nodes: dict[str, Any]) -> None:
    raw = json.loads(run("-o", "json", "diagnostic", B).stdout)
    assert raw == nodes[B]
    first = run("-e", f"{C},{A}", "diagnostic").stdout.splitlines()
    assert "status\tleader" in first and "log.commitIndex\t10" in first
    assert "volatile.cluster\t" + json.dumps([A, B, C]) in first
    panel = run("-e", A, "-o", "table", "diagnostic").stdout
    assert "diagnostic of 127.0.0.1:7001" in panel
    assert "2 5 per second" in panel
    down = run("diagnostic", C)
    assert down.exit_code == 3 and C in down.stderr


@pytest.fixture
def health(nodes: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    answers: dict[str, Any] = {
        A: {"leader": A, "commit_index": 12},
        B: {"leader": A, "commit_index": 12},
        C: {"leader": A, "commit_index": 12},
    }

    async def fake(self: AsyncClient, address: str | None = None) -> dict[str, Any]:
        answer = answers[address or A]
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(AsyncClient, "health", fake)
    return answers


def test_health(nodes: dict[str, Any], health: dict[str, Any]) -> None:
    nodes[B] = diagnostic(B, "follower", A)
    nodes[C] = diagnostic(C, "follower", A)
    good = run("-e", A, "-o", "json", "health")
    assert good.exit_code == 0, good.stderr
    rows = json.loads(good.stdout)
    assert [(r["address"], r["healthy"], r["leader"]) for r in rows] == [
        (A, True, A), (B, True, A), (C, True, A)
    ]
    assert all(isinstance(r["took_ms"], float) for r in rows)
    health[B] = NoLeader("no_leader", "no leader is known")
    nodes[C] = ClusterUnavailable([C], f"{C}: [Errno 111] Connect call failed")
    bad = run("-e", A, "health")
    assert bad.exit_code == 1
    assert bad.stdout.splitlines()[1].split("\t") == [B, "no", "-", "-", "-",
                                                      "no_leader: no leader is known"]
    assert bad.stderr == (
        f"Error: 2 of 3 members unhealthy ({B}: no_leader: no leader is known; "
        f"{C}: connection refused)\n"
    )


def test_shell_completion_lists_commands() -> None:
    result = CliRunner().invoke(
        cli,
        [],
        prog_name="raftctl",
        env={"_RAFTCTL_COMPLETE": "bash_complete", "COMP_WORDS": "raftctl s", "COMP_CWORD": "1"},
    )
    assert result.stdout.split() == ["plain,set", "plain,status", "plain,snapshot"]

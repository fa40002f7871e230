"""raftd.wire.client: request parsing (strict, errors naming the field) and response builders."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftd.wire.client import (
    AppendRequest,
    ConfigRequest,
    DiagnosticRequest,
    ErrorCode,
    GetRequest,
    ListRequest,
    error,
    parse_address,
    parse_request,
    redirect,
    result,
)
from raftd.wire.errors import BadRequest, DecodeError
from tests.unit.wire.strategies import msgpack_values


def change(**data: Any) -> dict[str, Any]:
    return {"type": "append", "data": {"action": "change", "key": "k", "value": 1, **data}}


def refused(obj: Any) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_request(obj)
    return info.value


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"type": "get"}, GetRequest(key=None)),
        ({"type": "get", "key": None, "id": 0}, GetRequest(key=None, id=0)),
        (
            {"type": "get", "key": "k", "consistency": "stale", "id": 7},
            GetRequest(key="k", consistency="stale", id=7),
        ),
        ({"type": "list"}, ListRequest()),
        (
            {"type": "list", "prefix": "a/", "after": "a/b", "limit": 10},
            ListRequest(prefix="a/", after="a/b", limit=10),
        ),
        (
            change(),
            AppendRequest(action="change", key="k", value=1),
        ),
        (
            {"type": "append", "data": {"action": "change", "key": "k", "value": None}},
            AppendRequest(action="change", key="k", value=None),
        ),
        (
            change(client_id="c1", seq=5, first_unacked_seq=3, if_revision=0),
            AppendRequest(
                action="change",
                key="k",
                value=1,
                client_id="c1",
                seq=5,
                first_unacked_seq=3,
                if_revision=0,
            ),
        ),
        (
            change(client_id="c1", seq=5),
            AppendRequest(
                action="change", key="k", value=1, client_id="c1", seq=5, first_unacked_seq=5
            ),
        ),
        (
            change(if_absent=True),
            AppendRequest(action="change", key="k", value=1, if_absent=True),
        ),
        (
            {"type": "append", "data": {"action": "delete", "key": "k", "if_revision": 4}},
            AppendRequest(action="delete", key="k", if_revision=4),
        ),
        ({"type": "diagnostic", "id": 3}, DiagnosticRequest(id=3)),
        (
            {"type": "config", "action": "add", "address": "10.0.0.1:7004", "learner": True},
            ConfigRequest(action="add", address="10.0.0.1:7004", learner=True),
        ),
        (
            {"type": "config", "action": "delete", "address": "10.0.0.1", "port": 7004},
            ConfigRequest(action="delete", address="10.0.0.1:7004"),
        ),
        (
            {"type": "config", "action": "promote", "address": "h:7004", "port": 7004},
            ConfigRequest(action="promote", address="h:7004"),
        ),
        (
            {"type": "config", "action": "add", "address": "[::1]:7004"},
            ConfigRequest(action="add", address="[::1]:7004"),
        ),
    ],
)
def test_valid_requests(obj: dict[str, Any], expected: Any) -> None:
    assert parse_request(obj) == expected


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ({"type": "get", "key": ""}, "'key'"),
        ({"type": "get", "key": 1}, "'key'"),
        ({"type": "get", "key": "é" * 2049}, "'key'"),  # 4098 UTF-8 bytes
        ({"type": "get", "key": "\ud800"}, "'key'"),  # not encodable as UTF-8
        ({"type": "get", "consistency": "strong"}, "'consistency'"),
        ({"type": "get", "keys": "k"}, "'keys'"),
        ({"type": "list", "prefix": 1}, "'prefix'"),
        ({"type": "list", "after": ""}, "'after'"),
        ({"type": "list", "limit": 0}, "'limit'"),
        ({"type": "list", "limit": True}, "'limit'"),
        ({"type": "append"}, "'data'"),
        ({"type": "append", "data": []}, "'data'"),
        ({"type": "append", "data": {"action": "put", "key": "k"}}, "'data.action'"),
        ({"type": "append", "data": {"action": "change", "value": 1}}, "'data.key'"),
        ({"type": "append", "data": {"action": "change", "key": "k"}}, "'data.value'"),
        (
            {"type": "append", "data": {"action": "delete", "key": "k", "value": 1}},
            "'data.value'",
        ),
        (change(if_revison=3), "'data.if_revison'"),
        (change(if_revision=-1), "'data.if_revision'"),
        (change(if_revision=True), "'data.if_revision'"),
        (change(if_absent=1), "'data.if_absent'"),
        (change(if_absent=True, if_revision=2), "'data.if_absent'"),
        (change(seq=1), "'data.client_id'"),
        (change(client_id="c"), "'data.seq'"),
        (change(client_id="", seq=1), "'data.client_id'"),
        (change(client_id=b"c", seq=1), "'data.client_id'"),
        (change(client_id="c", seq=0), "'data.seq'"),
        (change(client_id="c", seq=2, first_unacked_seq=3), "'data.first_unacked_seq'"),
        ({"type": "diagnostic", "verbose": True}, "'verbose'"),
        ({"type": "config", "action": "add"}, "'address'"),
        ({"type": "config", "action": "join", "address": "h:1"}, "'action'"),
        ({"type": "config", "action": "add", "address": "h"}, "'address'"),
        ({"type": "config", "action": "add", "address": "h:0"}, "'address'"),
        ({"type": "config", "action": "add", "address": "h:99999"}, "'address'"),
        ({"type": "config", "action": "add", "address": "h:1", "port": 2}, "'port'"),
        ({"type": "config", "action": "add", "address": "h", "port": "1"}, "'port'"),
        ({"type": "config", "action": "delete", "address": "h:1", "learner": True}, "'learner'"),
        ({"type": "config", "action": "add", "address": "h:1", "learner": 1}, "'learner'"),
        ({"type": "nope"}, "'type'"),
        ({"type": 1}, "'type'"),
        ({}, "'type'"),
        ({"type": "get", "id": -1}, "'id'"),
        ({"type": "get", "id": True}, "'id'"),
        ({"type": "get", "id": "1"}, "'id'"),
        ({"type": "get", "id": 2**63}, "'id'"),
    ],
)
def test_bad_requests_name_the_field(obj: dict[str, Any], field: str) -> None:
    assert field in refused(obj).message


def test_a_bad_request_carries_the_id_when_readable() -> None:
    assert refused({"type": "get", "key": 1, "id": 9}).id == 9
    assert refused({"type": "nope", "id": 9}).id == 9
    assert refused({"type": "get", "id": "9"}).id is None


def test_a_bad_request_is_a_decode_error() -> None:
    assert isinstance(refused("get"), DecodeError)


def test_error_messages_are_bounded() -> None:
    assert len(refused({"type": "x" * 100_000}).message) < 200


@given(msgpack_values)
def test_random_objects_raise_only_bad_request(obj: Any) -> None:
    with contextlib.suppress(BadRequest):
        parse_request(obj)


TEMPLATES: list[dict[str, Any]] = [
    {"type": "get", "key": "k", "consistency": "stale", "id": 1},
    {"type": "list", "prefix": "p", "after": "q", "limit": 5, "id": 1},
    change(client_id="c", seq=3, first_unacked_seq=2, if_revision=1, id=1),
    {"type": "append", "data": {"action": "delete", "key": "k", "if_revision": 2}},
    {"type": "diagnostic", "id": 1},
    {"type": "config", "action": "add", "address": "h", "port": 7, "learner": True},
]


@given(template=st.sampled_from(TEMPLATES), value=msgpack_values, data=st.data())
def test_any_field_replaced_by_anything(
    template: dict[str, Any], value: Any, data: st.DataObject
) -> None:
    obj = {**template, "data": dict(template["data"])} if "data" in template else dict(template)
    target = obj["data"] if "data" in obj and data.draw(st.booleans()) else obj
    target[data.draw(st.sampled_from(sorted(target)))] = value
    with contextlib.suppress(BadRequest):
        parse_request(obj)


def test_retryable_defaults() -> None:
    retryable = {code.value for code in ErrorCode if code.retryable}
    assert retryable == {
        "not_leader",
        "no_leader",
        "timeout",
        "transferring",
        "overloaded",
        "shutting_down",
        "conf_change_in_progress",
    }


def test_response_builders() -> None:
    assert result(found=True, value=1, revision=3) == {
        "type": "result",
        "success": True,
        "found": True,
        "value": 1,
        "revision": 3,
    }
    assert result(id=4, success=False) == {"type": "result", "success": False, "id": 4}
    assert error(ErrorCode.NO_LEADER, "election") == {
        "type": "error",
        "code": "no_leader",
        "message": "election",
        "retryable": True,
    }
    assert error(ErrorCode.TIMEOUT, "slow", retryable=False, id=0)["retryable"] is False
    assert error(ErrorCode.TIMEOUT, "slow", id=0)["id"] == 0
    assert redirect("h:1", id=2) == {"type": "redirect", "leader": "h:1", "id": 2}
    assert redirect(None) == {"type": "redirect", "leader": None}
    assert type(error(ErrorCode.TOO_LARGE, "x")["code"]) is str


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:7001", ("127.0.0.1", 7001)), ("[::1]:1", ("::1", 1)), ("h:65535", ("h", 65535)),
     ("[fe80::1%eth0]:7001", ("fe80::1%eth0", 7001))],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "text", ["", "h", ":1", "h:", "h:x", "h:0", "h:65536", "h :1", "h:\uff11", "[h]:1", "[]:1"]
)
def test_parse_address_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_address(text)

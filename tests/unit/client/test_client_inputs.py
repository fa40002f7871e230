"""Arguments the client refuses itself, before sending: endpoints no node could have, values
msgpack cannot carry or nodes would refuse, keys a DistributedDict cannot hold.

Each is an ``InvalidArgument`` (a ``ValueError``), never a ``ServerError``: the cluster never
saw it. A FakeNode (a real TCP endpoint) shows that nothing was sent.
"""

from __future__ import annotations

import asyncio
import re
import traceback
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner

from raftctl import AsyncClient, Client, DistributedDict, ServerError, Unauthorized
from raftctl.cli import cli
from raftctl.errors import InvalidArgument, InvalidEndpoint
from raftd.wire.client import MAX_KEY_BYTES
from tests.unit.client.fakenode import FakeNode

Response = dict[str, Any]


def ok(**fields: Any) -> Response:
    return {"type": "result", "success": True, **fields}


@pytest.fixture
def node() -> Iterator[FakeNode]:
    """A node that finds no key and acknowledges every write at revision 1."""
    def answer(request: Response) -> Response:
        if request["type"] == "get":
            return ok(found=False, value=None, revision=0)
        return ok(revision=1, found=True)

    with FakeNode(answer) as fake:
        yield fake


# -- endpoints ----------------------------------------------------------------------------------

BAD_ENDPOINTS = [
    ("http://x:1", "invalid endpoint 'http://x:1': give host:port, no URL scheme"),
    ("127.0.0.1:27001;127.0.0.1:27002",
     "';' is not allowed in a host name or IP address (separate endpoints with commas)"),
    ("::1:27001", "write IPv6 addresses as [addr]:port ([::1]:27001)"),
    ("a/b:1", "'/' is not allowed in a host name"),
]


@pytest.mark.parametrize(("endpoint", "message"), BAD_ENDPOINTS)
def test_constructors_refuse_what_the_cli_refuses(endpoint: str, message: str) -> None:
    for make in (Client, AsyncClient, DistributedDict):
        with pytest.raises(InvalidEndpoint, match=re.escape(message)) as info:
            make(endpoint)
        assert isinstance(info.value, ValueError) and not isinstance(info.value, ServerError)
    result = CliRunner().invoke(cli, ["-e", endpoint, "get", "k"])
    assert result.exit_code == 2 and message in result.stderr, result.output


@pytest.mark.parametrize("endpoint", ["[::1]:7001", "bücher.example:1", "node_1.local.:7001"])
def test_good_endpoints_still_construct(endpoint: str) -> None:
    with Client(endpoint) as client:
        assert client.endpoints == [endpoint]


def test_one_node_calls_check_their_address(node: FakeNode) -> None:
    with Client(node.address) as client:
        with pytest.raises(InvalidEndpoint, match="no URL scheme"):
            client.diagnostic("http://127.0.0.1:1")
        with pytest.raises(InvalidEndpoint, match=r"\[::1\]:7001"):
            client.health("::1:7001")
    assert node.requests == []


# -- values -------------------------------------------------------------------------------------

cyclic: list[Any] = []
cyclic.append(cyclic)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2**64, "cannot encode the value: integer out of range (msgpack holds -2**63 .. 2**64-1)"),
        (-(2**63) - 1, "cannot encode the value: integer out of range"),
        ({1, 2}, "cannot encode the value: set is not a msgpack type"),
        (cyclic, "cannot encode the value: nested too deep, or it contains itself"),
    ],
)
def test_values_nodes_cannot_take_are_refused_before_sending(
    node: FakeNode, value: Any, message: str
) -> None:
    with Client(node.address) as client:
        with pytest.raises(InvalidArgument) as info:
            client.set("k", value)
        assert message in str(info.value)
        assert not isinstance(info.value, ServerError)
        assert node.requests == []
        # The refused write opened no session: the next one opens it (seq 1).
        assert client.set("k", {"s": [{b"bytes": 1}], "n": 2**64 - 1}) == 1
    [append] = node.requests
    assert append["data"]["seq"] == 1
    assert append["data"]["value"] == {"s": [{b"bytes": 1}], "n": 2**64 - 1}


def test_a_field_other_than_the_value_is_named_as_the_request(node: FakeNode) -> None:
    async def main() -> None:
        async with AsyncClient(node.address) as client:
            with pytest.raises(InvalidArgument, match="^cannot encode the request: integer"):
                await client.set("k", "v", if_revision=2**64)

    asyncio.run(main())
    assert node.requests == []


def test_the_cli_says_the_value_cannot_be_encoded(node: FakeNode) -> None:
    result = CliRunner().invoke(
        cli, ["-e", node.address, "set", "--json", "j3", "123456789012345678901234567890"])
    assert result.stderr == ("Error: cannot encode the value: integer out of range "
                             "(msgpack holds -2**63 .. 2**64-1)\n"), result.output
    assert result.exit_code == 2 and node.requests == []


# -- DistributedDict keys -----------------------------------------------------------------------

UNHOLDABLE: list[Any] = [5, b"k", None, "", "k" * (MAX_KEY_BYTES + 1), "\udcff"]


def test_keys_the_cluster_cannot_hold_are_missing_without_a_round_trip(node: FakeNode) -> None:
    with DistributedDict(node.address) as d:
        for key in UNHOLDABLE:
            assert key not in d
            assert d.get(key, "default") == "default"
            with pytest.raises(KeyError):
                d[key]
            with pytest.raises(KeyError):
                del d[key]
            with pytest.raises(KeyError):
                d.revision(key)
            with pytest.raises(KeyError):
                d.modify(key, lambda v: v)
        assert node.requests == []
        assert "k" * MAX_KEY_BYTES not in d  # the longest key is asked for
    assert node.types() == ["get"]


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "a key must not be empty"),
        ("é" * MAX_KEY_BYTES, f"at most {MAX_KEY_BYTES} UTF-8 bytes, not {2 * MAX_KEY_BYTES}"),
        ("\udcff", "a key must be valid UTF-8"),
    ],
)
def test_writing_a_key_the_cluster_cannot_hold_raises(
    node: FakeNode, key: str, message: str
) -> None:
    with DistributedDict(node.address) as d:
        wrong_type: list[Any] = [5, b"k", None]
        for other in wrong_type:
            with pytest.raises(TypeError, match="keys are str, not"):
                d[other] = 1
        with pytest.raises(InvalidArgument, match=message):
            d[key] = 1
        with pytest.raises(InvalidArgument, match=message):
            d.cas(key, 1, 1)
        with pytest.raises(InvalidArgument, match=message):
            d.set_if_absent(key, 1)
        with pytest.raises(InvalidArgument, match=message):
            d.modify(key, lambda v: v, default=0)
    assert node.requests == []


# -- unauthorized -------------------------------------------------------------------------------


def test_unauthorized_tells_programs_about_token_keeping_the_nodes_words(
    node: FakeNode,
) -> None:
    refusal = "this node requires a client token (raftctl --token)"
    node.answer = lambda request: {"type": "error", "code": "unauthorized", "message": refusal}
    with Client(node.address) as client, pytest.raises(Unauthorized) as info:
        client.get("k")
    assert str(info.value) == f"unauthorized: {refusal}"  # raftctl prints it as it is
    shown = "".join(traceback.format_exception(info.value))
    assert "take the token as token=..." in shown

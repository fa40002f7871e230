"""raftctl client library behaviour that needs no server: endpoints, errors, unreachable nodes.

Tests against real raftd processes belong to tests/integration.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

import raftctl
from raftctl.client import parse_endpoints


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("h:1", ["h:1"]),
        ("h:1, g:2,,h:1", ["h:1", "g:2"]),
        (["h:1", "g:2,f:3"], ["h:1", "g:2", "f:3"]),
        (("[::1]:7001",), ["[::1]:7001"]),
    ],
)
def test_parse_endpoints(given: str | list[str], expected: list[str]) -> None:
    assert parse_endpoints(given) == expected


@pytest.mark.parametrize("given", ["", " , ", [], ["h"], "h:0", [1]])
def test_invalid_endpoints(given: object) -> None:
    with pytest.raises(raftctl.InvalidEndpoint) as info:
        parse_endpoints(given)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)


def test_exception_hierarchy() -> None:
    server_errors: list[type[Exception]] = [
        raftctl.NoLeader,
        raftctl.ConditionFailed,
        raftctl.SessionExpired,
        raftctl.TooLarge,
        raftctl.BadRequest,
    ]
    assert all(issubclass(cls, raftctl.ServerError) for cls in server_errors)
    others: list[type[Exception]] = [
        raftctl.ServerError,
        raftctl.ClusterUnavailable,
        raftctl.RequestTimeout,
    ]
    assert all(issubclass(cls, raftctl.RaftctlError) for cls in others)
    assert not issubclass(raftctl.RequestTimeout, OSError)  # callers catching OSError miss it


def test_blocking_client_names_the_endpoints_it_tried() -> None:
    endpoints = [f"127.0.0.1:{closed_port()}", f"127.0.0.1:{closed_port()}"]
    with raftctl.Client(endpoints, timeout=0.3) as client:
        with pytest.raises(raftctl.ClusterUnavailable) as info:
            client.set("k", "v")
        for endpoint in endpoints:
            assert endpoint in str(info.value)
        with pytest.raises(raftctl.ClusterUnavailable):
            client.get("k")
        with pytest.raises(raftctl.ClusterUnavailable):
            client.diagnostic(endpoints[0])
    with pytest.raises(raftctl.RaftctlError):
        client.get("k")  # closed


def test_unencodable_values_raise_invalid_argument() -> None:
    with raftctl.Client(f"127.0.0.1:{closed_port()}", timeout=0.3) as client:
        with pytest.raises(raftctl.InvalidArgument, match="set is not a msgpack type"):
            client.set("k", {1, 2})
        with pytest.raises(raftctl.InvalidArgument, match="integer out of range"):
            client.set("k", 2**64)


def test_async_client_many_requests_unreachable() -> None:
    async def main() -> list[object]:
        async with raftctl.AsyncClient(f"127.0.0.1:{closed_port()}", timeout=0.3) as client:
            return await asyncio.gather(
                *(client.set(f"k{i}", i) for i in range(20)),
                *(client.get(f"k{i}") for i in range(20)),
                return_exceptions=True,
            )

    results = asyncio.run(main())
    assert all(isinstance(result, raftctl.ClusterUnavailable) for result in results)


def test_closing_the_async_client_ends_its_requests() -> None:
    async def main() -> BaseException | None:
        client = raftctl.AsyncClient(f"127.0.0.1:{closed_port()}", timeout=5)
        task = asyncio.create_task(client.get("k"))
        await asyncio.sleep(0.05)
        await client.close()
        try:
            await task
        except raftctl.RaftctlError as exc:
            return exc
        return None

    assert isinstance(asyncio.run(main()), raftctl.RaftctlError)

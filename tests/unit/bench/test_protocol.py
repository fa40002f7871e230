"""BenchClient's verdict when it cannot get an answer: real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import ssl

from raftctl.bench.protocol import BenchClient, Response
from raftctl.localcluster import free_ports

TIMEOUT = 0.1
"""The client gives up after ten times this (a refused connection fails at once)."""


async def _write(address: str, tls: ssl.SSLContext | None = None,
                 timeout: float = TIMEOUT) -> Response:
    """One write's final answer from a BenchClient of its own."""
    client = BenchClient(address, (address,), timeout, tls=tls)
    try:
        return await client.write("k", b"v")
    finally:
        client.close()


def test_giving_up_names_the_node_and_why_its_connection_failed() -> None:
    (port,) = free_ports(1)
    answer = asyncio.run(_write(f"127.0.0.1:{port}"))
    assert answer["code"] == "timeout"
    assert answer["message"] == (f"no answer after 1s of retries (the last to 127.0.0.1:{port}: "
                                 "connection refused)")


def test_a_tls_failure_is_said_in_tls_terms() -> None:
    """A node that speaks plain TCP where the client expects TLS."""
    async def main() -> Response:
        async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.0 400 not TLS\r\n\r\n")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(plain, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            # Room for a handshake on a loaded machine: the last attempt must fail in TLS terms.
            return await _write(f"127.0.0.1:{port}", ssl.create_default_context(), timeout=1.0)

    answer = asyncio.run(main())
    assert answer["code"] == "timeout"
    assert "TLS: wrong version number (does the node speak TLS?)" in str(answer["message"])

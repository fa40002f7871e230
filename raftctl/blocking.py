"""``Client``: the blocking client, the ``AsyncClient`` API run on a private event loop thread.

A daemon thread runs the loop, so a ``Client`` works in plain scripts, inside programs that
already run an event loop, and from several threads at once (requests from different threads
share its connections and are pipelined).
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import weakref
from collections.abc import Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

from raftctl.client import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_TIMEOUT,
    AsyncClient,
    Item,
    Page,
)
from raftctl.connection import Response
from raftctl.errors import RaftctlError

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """The blocking client: the ``AsyncClient`` API, run on a private event loop thread."""

    def __init__(
        self,
        endpoints: str | Iterable[str],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        token: str | None = None,
        tls: bool | ssl.SSLContext = False,
        cacert: str | None = None,
        cert: str | None = None,
        key: str | None = None,
    ) -> None:
        """``token``, ``tls``, ``cacert``, ``cert``, ``key``: as ``AsyncClient``'s."""
        self._client = AsyncClient(endpoints, timeout, max_frame_bytes=max_frame_bytes,
                                   token=token, tls=tls, cacert=cacert, cert=cert, key=key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="raftctl-client", daemon=True
        )
        self._thread.start()
        # Closes the connections and stops the thread when close() is forgotten: at garbage
        # collection or interpreter exit (a plain script should not print asyncio warnings).
        self._finalizer = weakref.finalize(self, _shutdown, self._loop, self._thread, self._client)

    @property
    def endpoints(self) -> list[str]:
        return self._client.endpoints

    @property
    def timeout(self) -> float:
        return self._client.timeout

    @property
    def client_id(self) -> str:
        return self._client.client_id

    @property
    def leader(self) -> str | None:
        return self._client.leader

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def set(
        self, key: str, value: Any, *, if_revision: int | None = None, if_absent: bool = False
    ) -> int:
        return self._run(self._client.set(key, value, if_revision=if_revision, if_absent=if_absent))

    def cas(self, key: str, expected_revision: int, value: Any) -> int:
        return self._run(self._client.cas(key, expected_revision, value))

    def set_if_absent(self, key: str, value: Any) -> int:
        return self._run(self._client.set_if_absent(key, value))

    def get(self, key: str, default: Any = None, *, consistency: str = "linearizable") -> Any:
        return self._run(self._client.get(key, default, consistency=consistency))

    def get_item(self, key: str, *, consistency: str = "linearizable") -> Item | None:
        return self._run(self._client.get_item(key, consistency=consistency))

    def get_revision(self, key: str, *, consistency: str = "linearizable") -> int | None:
        return self._run(self._client.get_revision(key, consistency=consistency))

    def get_all(self, *, consistency: str = "linearizable") -> dict[Any, Any]:
        return self._run(self._client.get_all(consistency=consistency))

    def delete(self, key: str, *, if_revision: int | None = None) -> bool:
        return self._run(self._client.delete(key, if_revision=if_revision))

    def scan(self, prefix: str = "", *, after: str | None = None, limit: int | None = None) -> Page:
        return self._run(self._client.scan(prefix, after=after, limit=limit))

    def items(self, prefix: str = "", *, page_size: int = 1000) -> Iterator[Item]:
        """Every key under ``prefix`` in order, fetched page by page (see ``AsyncClient``)."""
        after: str | None = None
        while True:
            page = self.scan(prefix, after=after, limit=page_size)
            yield from page.items
            if not page.more or not page.items:
                return
            after = page.items[-1].key

    def status(self) -> Response:
        return self._run(self._client.status())

    def diagnostic(self, address: str) -> Response:
        return self._run(self._client.diagnostic(address))

    def add_node(self, address: str, *, learner: bool = False) -> None:
        self._run(self._client.add_node(address, learner=learner))

    def promote(self, address: str) -> None:
        self._run(self._client.promote(address))

    def remove_node(self, address: str) -> None:
        self._run(self._client.remove_node(address))

    def transfer_leader(self, address: str | None = None) -> str:
        return self._run(self._client.transfer_leader(address))

    def health(self, address: str | None = None) -> Response:
        return self._run(self._client.health(address))

    def request(self, payload: dict[str, Any]) -> Response:
        return self._run(self._client.request(payload))

    def close(self) -> None:
        """Close the connections and stop the loop thread; idempotent."""
        self._finalizer()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if not self._finalizer.alive:
            coro.close()
            raise RaftctlError("the client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # e.g. KeyboardInterrupt in the caller: stop the request too
            raise


def _shutdown(
    loop: asyncio.AbstractEventLoop, thread: threading.Thread, client: AsyncClient
) -> None:
    """Stop a ``Client``'s loop thread (runs at most once: ``weakref.finalize``)."""
    if threading.current_thread() is thread:
        loop.stop()  # collected by the loop thread itself, which must not wait for itself
        return
    asyncio.run_coroutine_threadsafe(client.close(), loop).result()
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()

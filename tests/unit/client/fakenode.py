"""FakeNode: a TCP endpoint that speaks the client protocol with scripted answers.

It runs its own event loop on a thread, so the blocking ``Client`` and ``AsyncClient`` can
both talk to it. ``answer(request)`` returns the response map (its ``id`` is added) or None
to leave the request unanswered.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

import msgpack

Answer = Callable[[dict[str, Any]], dict[str, Any] | None]


class FakeNode:
    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        self.address = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None

    def __enter__(self) -> Self:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def types(self) -> list[str]:
        """The ``type`` of every request received, in order."""
        return [r.get("type", "?") for r in self.requests]

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        try:
            while data := await reader.read(65536):
                unpacker.feed(data)
                for request in unpacker:
                    self.requests.append(request)
                    response = self.answer(request)
                    if response is not None:
                        writer.write(msgpack.packb({**response, "id": request.get("id")}))
        except ConnectionError:
            pass
        finally:
            writer.close()

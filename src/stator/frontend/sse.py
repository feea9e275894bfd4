"""Server-sent events framing and responses that notice a client going away.

OpenAI streams ``data: {json}\\n\\n`` events and ends with ``data: [DONE]\\n\\n``.

Starlette's ``StreamingResponse`` (ASGI spec 2.4 servers such as uvicorn) only notices a
disconnect when a write fails, so a request waiting on a long prefill would keep running at the
worker. The responses here watch ``receive()`` for ``http.disconnect`` while they produce, and on
disconnect cancel the producer and close its iterator, which closes the engine stream and cancels
the request at the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

DONE_EVENT = b"data: [DONE]\n\n"
SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
JSON_HEADERS = [(b"content-type", b"application/json")]


def sse_event(payload: bytes) -> bytes:
    """Frame one JSON payload as an SSE event: ``data: {payload}\\n\\n``."""
    return b"data: " + payload + b"\n\n"


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _race_disconnect(work: Awaitable[None], receive: Receive) -> bool:
    """Run ``work`` until it ends or the client disconnects; True if the client went away."""
    work_task = asyncio.ensure_future(work)
    watch_task = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait((work_task, watch_task), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (work_task, watch_task):
            if not task.done():
                task.cancel()
        for task in (work_task, watch_task):
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
    return watch_task.done() and not watch_task.cancelled() and not work_task.done()


class SSEResponse(Response):
    """Streams ``events`` (already framed bytes) with status 200.

    ``on_disconnect`` is called when the client went away before the stream ended. The events
    iterator is always closed (``aclose``) before ``__call__`` returns. (A ``Response``
    subclass so FastAPI passes it through untouched; the base's body machinery is unused.)
    """

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.events = events
        self.on_disconnect = on_disconnect
        self.status_code = 200
        self.raw_headers = list(SSE_HEADERS)
        self.background: BackgroundTask | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        try:
            gone = await _race_disconnect(self._stream(send), receive)
        finally:
            aclose = getattr(self.events, "aclose", None)
            if aclose is not None:
                await aclose()
        if gone and self.on_disconnect is not None:
            self.on_disconnect()

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        async for event in self.events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class DeferredResponse(Response):
    """A response whose ``(status, headers, body)`` is computed when it is sent.

    ``compute`` runs while the client is watched; if the client disconnects first, ``compute``
    is cancelled (so whatever it awaits, such as engine streams, is closed) and nothing is sent.
    """

    def __init__(
        self,
        compute: Callable[[], Awaitable[tuple[int, list[tuple[bytes, bytes]], bytes]]],
        *,
        on_disconnect: Callable[[], None] | None = None,
    ) -> None:
        self.compute = compute
        self.on_disconnect = on_disconnect
        self.status_code = 200
        self.raw_headers = list(JSON_HEADERS)
        self.background: BackgroundTask | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        if await _race_disconnect(self._run(send), receive) and self.on_disconnect is not None:
            self.on_disconnect()

    async def _run(self, send: Send) -> None:
        status, headers, body = await self.compute()
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

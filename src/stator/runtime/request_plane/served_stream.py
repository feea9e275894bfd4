"""Server-side state of one stream, shared by every request-plane transport.

A handler may send a chunk only while its stream has credit (chunks the client is ready to
buffer); the client grants more as its consumer reads. Cancelling sets the handler's stop signal
and cancels its task. ``error_frame`` turns a handler exception into the ``Error`` frame the client
maps to ``RemoteHandlerError`` (keeping a ``StatorError``'s HTTP status).
"""

from __future__ import annotations

import asyncio
from typing import Generic, TypeVar

from stator.errors import StatorError
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.request_plane.framing import ERR_HANDLER, Error

K = TypeVar("K")


class ServedStream(Generic[K]):
    """One stream being served: its ``key`` (transport-specific id), handler ``task``, context
    and remaining ``credit`` (chunks)."""

    __slots__ = (
        "cancel_reason",
        "credit",
        "ctx",
        "key",
        "notify_client",
        "replied",
        "task",
        "waiter",
    )

    def __init__(self, key: K, ctx: RequestContext, credit: int) -> None:
        self.key = key
        self.ctx = ctx
        self.credit = credit
        self.waiter: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.notify_client = True
        self.replied = False
        self.cancel_reason = ""

    def add_credit(self, n: int) -> None:
        """The client read ``n`` more chunks: let the handler send ``n`` more."""
        self.credit += n
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait_credit(self) -> None:
        """Return once the stream has credit (at once if it has some now)."""
        while self.credit <= 0:
            waiter = asyncio.get_running_loop().create_future()
            self.waiter = waiter
            try:
                await waiter
            finally:
                self.waiter = None

    def cancel(self, reason: str, *, notify_client: bool) -> None:
        """Stop the handler: set its context's stop signal and cancel its task."""
        self.notify_client = notify_client
        self.cancel_reason = reason
        self.ctx.stop()
        if self.task is not None:
            self.task.cancel()


def error_frame(stream_id: int, exc: Exception) -> Error:
    """The ``Error`` frame for a handler exception (keeps a ``StatorError``'s HTTP status)."""
    status = exc.status_code if isinstance(exc, StatorError) else 500
    message = str(exc) or repr(exc)
    return Error(stream_id, ERR_HANDLER, message, type(exc).__name__, status)

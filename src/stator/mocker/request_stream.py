"""``RequestStream``: hands one request's engine outputs from the step loop to its handler.

The step loop pushes each step's ``RequestOutput`` without waiting; the handler takes whatever
has accumulated as one ``LLMEngineOutput`` delta (token ids merged, ``cached_tokens`` on the
first chunk, ``finish_reason`` on the last). A slow consumer thus gets fewer, larger chunks
instead of a growing queue.
"""

from __future__ import annotations

import asyncio

from stator.mocker.engine import RequestOutput
from stator.protocols.engine import FinishReason, LLMEngineOutput


class RequestStream:
    """One request's pending output. ``finished``: the final output was pushed."""

    __slots__ = ("_cached", "_error", "_finish", "_taken_final", "_tokens", "_waiter", "finished")

    def __init__(self) -> None:
        self._tokens: list[int] = []
        self._cached: int | None = None
        self._finish: FinishReason | None = None
        self._error: str | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._taken_final = False
        self.finished = False

    def push(self, output: RequestOutput) -> None:
        """Add a step's output (ignored once finished)."""
        if self.finished:
            return
        if output.num_new_tokens:
            self._tokens.extend(output.token_ids)
        if output.is_first:
            self._cached = output.cached_tokens
        if output.finish_reason is not None:
            self._end(output.finish_reason, output.error)
        self._wake()

    def fail(self, reason: FinishReason, error: str | None = None) -> None:
        """End the stream from outside the engine (e.g. the engine failed)."""
        if not self.finished:
            self._end(reason, error)
            self._wake()

    async def next(self) -> LLMEngineOutput | None:
        """The next delta (waits until there is one); None after the final delta was taken."""
        while not self._tokens and not self.finished:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._taken_final:
            return None
        chunk = LLMEngineOutput(
            token_ids=self._tokens,
            cached_tokens=self._cached,
            finish_reason=self._finish,
            error=self._error,
        )
        self._tokens = []
        self._cached = None
        self._taken_final = self.finished
        return chunk

    def _end(self, reason: FinishReason, error: str | None) -> None:
        self.finished = True
        self._finish = reason
        self._error = error

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

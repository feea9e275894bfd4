"""Request handlers of a vLLM worker: generate (aggregated / decode), prefill, and the canary.

Each handler turns a ``PreprocessedRequest`` into an engine request (``convert``), streams the
engine's deltas back as ``LLMEngineOutput`` chunks and books the request in the
``InflightTracker``. A client that goes away closes the handler's generator (or cancels it):
the request is then aborted in vLLM, which frees its KV blocks.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, Protocol

from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest
from stator.runtime.request_plane.base import RequestContext
from stator.vllm.convert import EngineLimits, engine_output, engine_priority, sampling_kwargs
from stator.vllm.inflight import InflightTracker

log = logging.getLogger(__name__)

CANARY_TOKEN_IDS = [0]
"""Prompt of the health-check request: one token (id 0 exists in every vocabulary)."""


class Engine(Protocol):
    """What the handlers need from ``VllmEngine`` (tests pass fakes)."""

    limits: EngineLimits

    def generate(
        self, token_ids: list[int], sampling: dict[str, Any], request_id: str, priority: int = 0
    ) -> AsyncIterator[Any]:
        """vLLM ``RequestOutput`` deltas."""
        ...

    async def abort(self, request_id: str) -> None:
        """Abort a request."""
        ...

    async def check_health(self) -> None:
        """Raise if the engine is dead."""
        ...


class RequestHandlers:
    """The worker's handlers over one ``engine``; ``tracker`` books every request."""

    def __init__(self, engine: Engine, tracker: InflightTracker) -> None:
        self.engine = engine
        self.tracker = tracker

    async def generate(
        self, request: PreprocessedRequest, ctx: RequestContext
    ) -> AsyncIterator[LLMEngineOutput]:
        """Aggregated or decode: stream output deltas until the chunk with ``finish_reason``.

        Raises:
            InvalidRequestError / ContextLengthError: a request vLLM cannot run (HTTP 400).
            ServerError: the engine failed.
        """
        sampling = sampling_kwargs(request, self.engine.limits)
        async with contextlib.aclosing(self._run(request, ctx, sampling, prefill=False)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def prefill(
        self, request: PreprocessedRequest, ctx: RequestContext
    ) -> AsyncIterator[LLMEngineOutput]:
        """Prefill only: run the prompt with ``max_tokens=1``; the last chunk carries vLLM's
        ``kv_transfer_params`` as ``disaggregated_params`` (None without a KV connector)."""
        sampling = sampling_kwargs(request, self.engine.limits, prefill=True)
        async with contextlib.aclosing(self._run(request, ctx, sampling, prefill=True)) as chunks:
            async for chunk in chunks:
                yield chunk

    async def canary(self) -> None:
        """The health check: generate one token from a one-token prompt.

        Raises:
            Exception: whatever the engine raised (the engine is unhealthy).
        """
        await self.engine.check_health()
        request_id = f"canary-{uuid.uuid4().hex[:12]}"
        sampling = {"max_tokens": 1, "n": 1, "detokenize": False, "temperature": 0.0}
        async for _ in self.engine.generate(CANARY_TOKEN_IDS, sampling, request_id):
            pass

    async def _run(
        self,
        request: PreprocessedRequest,
        ctx: RequestContext,
        sampling: dict[str, Any],
        *,
        prefill: bool,
    ) -> AsyncGenerator[LLMEngineOutput, None]:
        engine_id = _engine_request_id(ctx.request_id or request.request_id)
        priority = engine_priority(request.priority, self.engine.limits)
        num_top = request.output_options.logprobs or 0
        self.tracker.started(engine_id, len(request.token_ids))
        outputs = self.engine.generate(list(request.token_ids), sampling, engine_id, priority)
        finished = False
        cached: int | None = None
        try:
            async for output in outputs:
                self.tracker.first_output(engine_id)
                finished = bool(output.finished)
                first = cached is None
                cached = int(output.num_cached_tokens or 0)
                chunk = engine_output(
                    output.outputs[0],
                    cached_tokens=cached if first else None,
                    num_top_logprobs=num_top,
                )
                if prefill and finished:
                    chunk = chunk or LLMEngineOutput(finish_reason="length")
                    chunk.disaggregated_params = getattr(output, "kv_transfer_params", None)
                if chunk is not None:
                    yield chunk
        finally:
            self.tracker.finished(engine_id)
            await _close(outputs)
            if not finished:
                await self._abort(engine_id)

    async def _abort(self, engine_id: str) -> None:
        try:
            await self.engine.abort(engine_id)
        except Exception:  # the engine may be gone; nothing else to free here
            log.warning("abort of %s failed", engine_id, exc_info=True)


def _engine_request_id(wire_id: str) -> str:
    """A request id unique in the engine: the wire id (for log correlation) plus a suffix, since
    the frontend's ``n > 1`` fan-out may reuse one id."""
    return f"{wire_id or 'req'}-{uuid.uuid4().hex[:8]}"


async def _close(stream: AsyncIterator[Any]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()

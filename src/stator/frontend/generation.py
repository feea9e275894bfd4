"""The engine side of one HTTP request: its choices' routed streams, merged, timed and counted.

``RequestRun`` starts one engine request per choice through the model's ``EngineRouter``
(``n > 1`` and multi-prompt completions fan out), merges their chunks in arrival order, runs
each through its ``ChoiceState`` and yields ``ChoiceDelta``s. A choice that finishes early (stop
string, EOS, budget) has its stream closed at once, which cancels it at the worker; ``close()``
closes every stream, so a client that goes away cancels everything. It also records TTFT (first
chunk with tokens), ITL (gap per token of each later chunk), and the request's end in metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from stator.frontend.metrics import FrontendMetrics, ModelMetrics
from stator.frontend.postprocess import ChoiceDelta, ChoiceState
from stator.frontend.protocol import (
    NvExtResponse,
    PromptTokensDetails,
    TimingInfo,
    Usage,
    WorkerIdInfo,
)
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest
from stator.router.base import EngineRouter, RoutedStream

_END = object()


@dataclass(frozen=True, slots=True)
class Arrival:
    """When a request arrived: ``received_s`` on ``time.perf_counter()``, ``received_unix_ms``
    on the wall clock (ms since the epoch)."""

    received_s: float
    received_unix_ms: int

    @classmethod
    def now(cls) -> Arrival:
        """The current instant."""
        return cls(time.perf_counter(), time.time_ns() // 1_000_000)


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Metric labels and arrival of one HTTP request (``endpoint``: ``chat_completions`` or
    ``completions``)."""

    model: str
    endpoint: str
    stream: bool
    arrival: Arrival


class RequestRun:
    """One request's engine streams. ``choices[i]`` consumes ``requests[i]``'s stream.

    ``prompt_groups[i]``: which prompt choice ``i`` belongs to (cached tokens are counted once
    per prompt); ``prompt_tokens``: ISL summed over the distinct prompts.
    """

    def __init__(
        self,
        router: EngineRouter,
        requests: list[PreprocessedRequest],
        choices: list[ChoiceState],
        *,
        prompt_tokens: int,
        prompt_groups: list[int],
        info: RequestInfo,
        metrics: FrontendMetrics,
    ) -> None:
        self.router = router
        self.requests = requests
        self.choices = choices
        self.prompt_tokens = prompt_tokens
        self.prompt_groups = prompt_groups
        self.info = info
        self._metrics = metrics
        self._model_metrics: ModelMetrics = metrics.for_model(info.model)
        self.streams: list[RoutedStream] = []
        self.first_token_s: float | None = None
        self.end_s: float | None = None
        self._last_s = [0.0] * len(requests)
        self._finished = False
        self._model_metrics.inflight.inc()

    @property
    def worker_id(self) -> int | None:
        """The worker serving the first choice (once started)."""
        return self.streams[0].worker_id if self.streams else None

    async def start(self) -> None:
        """Route every choice's request (concurrently when ``n > 1``). On failure, closes what
        started and re-raises (``NoInstanceError``, ``ServiceUnavailableError``,
        ``NotFoundError`` from the router)."""
        if len(self.requests) == 1:
            self.streams.append(await self.router.generate(self.requests[0]))
            return
        results = await asyncio.gather(
            *(self.router.generate(r) for r in self.requests), return_exceptions=True
        )
        self.streams = [r for r in results if isinstance(r, RoutedStream)]
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            await self.close()
            self.streams = []
            raise errors[0]

    async def deltas(self) -> AsyncIterator[ChoiceDelta]:
        """Every choice's deltas in arrival order, each choice ending with a finish reason.

        Raises:
            TransportError / RemoteHandlerError / ServerError: an engine stream failed.
        """
        if len(self.streams) == 1:
            async for delta in self._single():
                yield delta
            return
        async for delta in self._merged():
            yield delta

    async def _single(self) -> AsyncIterator[ChoiceDelta]:
        stream, choice = self.streams[0], self.choices[0]
        async for out in stream:
            delta = self._apply(0, out)
            if delta is not None:
                yield delta
            if choice.done:
                break
        if not choice.done:
            yield choice.end_of_stream()
        self.end_s = time.perf_counter()
        await stream.aclose()

    async def _merged(self) -> AsyncIterator[ChoiceDelta]:
        queue: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
        pumps = [
            asyncio.ensure_future(_pump(i, stream, queue)) for i, stream in enumerate(self.streams)
        ]
        live = set(range(len(pumps)))
        try:
            while live:
                i, item = await queue.get()
                choice = self.choices[i]
                if item is _END or isinstance(item, BaseException):
                    live.discard(i)
                    if choice.done:
                        continue
                    if isinstance(item, BaseException):
                        raise item
                    yield choice.end_of_stream()
                    continue
                assert isinstance(item, LLMEngineOutput)
                delta = self._apply(i, item)
                if delta is not None:
                    yield delta
                if choice.done and i in live:
                    live.discard(i)
                    await _stop_pump(pumps[i])
                    await self.streams[i].aclose()
            self.end_s = time.perf_counter()
        finally:
            for pump in pumps:
                await _stop_pump(pump)

    def _apply(self, i: int, out: LLMEngineOutput) -> ChoiceDelta | None:
        num_tokens = len(out.token_ids)
        if num_tokens:
            now = time.perf_counter()
            if self.first_token_s is None:
                self.first_token_s = now
                self._model_metrics.ttft.observe(now - self.info.arrival.received_s)
            elif self._last_s[i]:
                self._model_metrics.itl.observe((now - self._last_s[i]) / num_tokens)
            self._last_s[i] = now
        return self.choices[i].step(out)

    # -- results ---------------------------------------------------------------------------

    def usage(self) -> Usage:
        """Token counts so far: ISL, OSL over all choices, cached prompt tokens."""
        completion = sum(c.completion_tokens for c in self.choices)
        cached: dict[int, int] = {}
        for group, choice in zip(self.prompt_groups, self.choices, strict=True):
            cached[group] = max(cached.get(group, 0), choice.cached_tokens or 0)
        return Usage(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=completion,
            total_tokens=self.prompt_tokens + completion,
            prompt_tokens_details=PromptTokensDetails(cached_tokens=sum(cached.values())),
        )

    def nvext(
        self, extra_fields: list[str] | None, index: int = 0, *, final: bool = True
    ) -> NvExtResponse | None:
        """Dynamo's response ``nvext`` for the requested ``extra_fields`` (``None`` if none).

        As Dynamo does: ``worker_id`` (the worker of choice ``index``; aggregated, so prefill =
        decode) on every chunk, ``timing`` only on the ``final`` one.
        """
        if not extra_fields:
            return None
        worker, timing = None, None
        if "worker_id" in extra_fields and index < len(self.streams):
            worker_id = self.streams[index].worker_id
            worker = WorkerIdInfo(prefill_worker_id=worker_id, decode_worker_id=worker_id)
        if final and "timing" in extra_fields:
            timing = self._timing()
        if worker is None and timing is None:
            return None
        return NvExtResponse(worker_id=worker, timing=timing)

    def _timing(self) -> TimingInfo:
        start = self.info.arrival.received_s
        end = self.end_s if self.end_s is not None else time.perf_counter()
        ttft = None if self.first_token_s is None else (self.first_token_s - start) * 1000.0
        return TimingInfo(
            request_received_ms=self.info.arrival.received_unix_ms,
            ttft_ms=ttft,
            total_time_ms=(end - start) * 1000.0,
        )

    # -- end -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close every stream (cancels unfinished requests at their workers)."""
        for stream in self.streams:
            with contextlib.suppress(Exception):
                await stream.aclose()

    def finish(self, status: int) -> None:
        """Record the request's end once: HTTP ``status`` (499 = client went away)."""
        if self._finished:
            return
        self._finished = True
        m, info = self._model_metrics, self.info
        m.inflight.dec()
        self._metrics.count_request(info.model, info.endpoint, info.stream, status)
        m.duration.observe(time.perf_counter() - info.arrival.received_s)
        if status == 200:
            usage = self.usage()
            m.isl.observe(usage.prompt_tokens)
            m.osl.observe(usage.completion_tokens)
            details = usage.prompt_tokens_details
            m.cached.observe(details.cached_tokens if details is not None else 0)


async def _stop_pump(pump: asyncio.Future[None]) -> None:
    """Cancel a pump and wait until it has left its stream (so the stream can be closed)."""
    if not pump.done():
        pump.cancel()
        await asyncio.wait((pump,))


async def _pump(index: int, stream: RoutedStream, queue: asyncio.Queue[tuple[int, object]]) -> None:
    try:
        async for out in stream:
            queue.put_nowait((index, out))
        queue.put_nowait((index, _END))
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        queue.put_nowait((index, exc))

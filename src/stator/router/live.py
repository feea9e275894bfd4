"""``LiveRouter``: the ``EngineRouter`` the frontend uses for one model, over the real runtime.

It joins three things: a runtime ``Client`` on the model's endpoint (which instances are live),
a ``RouterCore`` from ``make_router_core`` (which worker gets a request, and the load it books),
and an ``AdmissionQueue`` (busy workers → wait or 503). KV events published by the workers
(topic ``kv-events`` of the endpoint's component) go through ``KvSync`` (dumps on join and on
event-id gaps) to the core; load metrics (``kv-metrics``) go to the core directly.
``debug_state()`` describes the router for ``/debug/router`` and Prometheus.

``generate`` routes, opens ``client.direct(...)`` to the chosen worker and waits for the first
chunk, so a worker that vanished between routing and calling is detected before the HTTP
response starts: the request is re-routed (up to ``MAX_ROUTE_ATTEMPTS`` workers, never for a
pinned worker). The returned stream reports the first output token
(``core.on_first_token``) and, exactly once, its end (``core.on_finish``) — on completion,
error or ``aclose()`` — so no booked load leaks, even for a stream that is never iterated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec

from stator.errors import NoInstanceError
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest
from stator.protocols.kv_events import (
    KV_EVENTS_TOPIC,
    KV_METRICS_TOPIC,
    KvEventBatch,
    LoadMetrics,
)
from stator.router.base import EngineRouter, RoutedStream
from stator.router.config import RouterConfig
from stator.router.debug import RouterDebugState, core_debug_state
from stator.router.kv_sync import KvSync
from stator.router.queue import Admission, AdmissionQueue, QueuedRequest
from stator.router.simple import LoadTrackingCore
from stator.runtime.address import EndpointAddress
from stator.runtime.client import Client
from stator.runtime.runtime import DistributedRuntime

log = logging.getLogger(__name__)

MAX_ROUTE_ATTEMPTS = 3
"""Workers tried for one request when the chosen one turns out to be gone."""


class LiveRouter(EngineRouter):
    """Routes one model's engine requests to the instances of ``address``.

    ``request_timeout_s``: limit on the wait for each engine chunk (None = none).
    ``subscribe_events``: follow the workers' ``kv-events``/``kv-metrics`` topics.
    """

    def __init__(
        self,
        runtime: DistributedRuntime,
        address: EndpointAddress,
        core: LoadTrackingCore,
        config: RouterConfig | None = None,
        *,
        request_timeout_s: float | None = None,
        subscribe_events: bool = True,
    ) -> None:
        self.runtime = runtime
        self.address = address
        self.core = core
        self.config = config if config is not None else RouterConfig()
        self.queue: AdmissionQueue[asyncio.Future[None]] = AdmissionQueue.from_config(self.config)
        self._admission_on = _admission_configured(self.config)
        self.request_timeout_s = request_timeout_s
        self._subscribe_events = subscribe_events
        self.kv_sync = KvSync(runtime, address, core)
        self._client: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._streams: set[_LiveStream] = set()

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Follow the endpoint's instances (and the workers' events)."""
        await self.kv_sync.start()
        self._client = await self.runtime.endpoint(self.address).client()
        self._client.on_change(self._on_change)
        self._on_change(self._client.instance_ids(), [])
        if self._subscribe_events:
            ns, comp = self.address.namespace, self.address.component
            self._tasks.append(asyncio.create_task(self._follow_kv_events(ns, comp)))
            self._tasks.append(asyncio.create_task(self._follow_load_metrics(ns, comp)))

    async def close(self) -> None:
        """Stop following, cancel in-flight streams and queued requests. Idempotent."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        while (waiting := self.queue.pop()) is not None:
            if not waiting.payload.done():
                waiting.payload.set_exception(NoInstanceError(f"{self.address} is gone"))
        for stream in list(self._streams):
            await stream.aclose()
        await self.kv_sync.close()
        if self._client is not None:
            await self._client.close()
            self._client = None

    def worker_ids(self) -> list[int]:
        """Live instances of the endpoint."""
        return self._client.instance_ids() if self._client is not None else []

    def debug_state(self) -> RouterDebugState:
        """A snapshot: per worker, indexed blocks, booked load and event counters."""
        return core_debug_state(
            str(self.address),
            self.config.router_mode,
            self.core,
            self.kv_sync.stats,
            kv_events=self.kv_sync.tracks_blocks,
        )

    def _on_change(self, added: list[int], removed: list[int]) -> None:
        for worker_id in added:
            self.core.add_worker(worker_id)
            self.kv_sync.worker_added(worker_id)
        for worker_id in removed:
            self.kv_sync.worker_removed(worker_id)
            self.core.remove_worker(worker_id)
        self._drain_queue()

    # -- routing -------------------------------------------------------------------------------

    async def generate(self, request: PreprocessedRequest) -> RoutedStream:
        """Route ``request``, start it and return its stream once the first chunk arrived.

        Raises:
            NoInstanceError: no live worker (HTTP 503).
            ServiceUnavailableError: every worker is busy and the queue is full (503).
            NotFoundError: the pinned ``backend_instance_id`` is not a live worker (404).
            TransportError / RemoteHandlerError: the worker failed before its first chunk.
        """
        if self._client is None:
            raise NoInstanceError(f"router for {self.address} is not started")
        if self._admission_on:
            await self._admit(request)
        pinned = request.routing.backend_instance_id if request.routing is not None else None
        failed: set[int] = set()
        for _ in range(MAX_ROUTE_ATTEMPTS):
            decision = self.core.route(
                request.request_id,
                request.token_ids,
                time.monotonic(),
                pinned_worker_id=pinned,
                exclude=failed | self._down(self._client),
            )
            stream = _LiveStream(self, request.request_id, decision.worker_id)
            stream.overlap_blocks = decision.overlap_blocks
            try:
                await stream.open(self._client, request, self.request_timeout_s)
            except NoInstanceError:
                if pinned is not None:
                    raise
                failed.add(decision.worker_id)
                self._client.report_instance_down(decision.worker_id)
                continue
            return stream
        raise NoInstanceError(f"no reachable instance of {self.address} (tried {sorted(failed)})")

    @staticmethod
    def _down(client: Client) -> set[int]:
        """Registered workers the client saw fail recently (skipped while others remain)."""
        available = client.instance_ids_avail()
        registered = client.instance_ids()
        if len(available) == len(registered) or not available:
            return set()
        return set(registered) - set(available)

    def _finished(self, stream: _LiveStream) -> None:
        self._streams.discard(stream)
        self.core.on_finish(stream.request_id, time.monotonic())
        self._drain_queue()

    # -- admission -----------------------------------------------------------------------------

    async def _admit(self, request: PreprocessedRequest) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = QueuedRequest(
            request.request_id,
            request.priority or 0,
            time.monotonic(),
            len(request.token_ids),
            waiter,
        )
        verdict = self.queue.offer(entry, self.core.worker_loads())
        if verdict is Admission.ADMIT:
            return
        if verdict is Admission.REJECT:
            raise self.queue.rejection_error()
        try:
            await waiter
        finally:
            self.queue.remove(request.request_id)

    def _drain_queue(self) -> None:
        if not self._admission_on or not len(self.queue):
            return
        while (ready := self.queue.pop_ready(self.core.worker_loads())) is not None:
            if not ready.payload.done():
                ready.payload.set_result(None)

    # -- events --------------------------------------------------------------------------------

    async def _follow_kv_events(self, namespace: str, component: str) -> None:
        decoder = msgspec.msgpack.Decoder(KvEventBatch)
        await self._follow(namespace, component, KV_EVENTS_TOPIC, decoder, self._on_kv_events)

    async def _follow_load_metrics(self, namespace: str, component: str) -> None:
        decoder = msgspec.msgpack.Decoder(LoadMetrics)
        await self._follow(namespace, component, KV_METRICS_TOPIC, decoder, self._on_metrics)

    def _on_kv_events(self, batch: KvEventBatch) -> None:
        self.kv_sync.on_batch(batch)

    def _on_metrics(self, metrics: LoadMetrics) -> None:
        if metrics.worker_id in self.core.sequences:
            self.kv_sync.stats.on_metrics(metrics)
        self.core.apply_load_metrics(metrics)
        self._drain_queue()

    async def _follow(
        self,
        namespace: str,
        component: str,
        topic: str,
        decoder: msgspec.msgpack.Decoder[Any],
        apply: Any,
    ) -> None:
        subscriber = await self.runtime.event_subscriber(namespace, component, topic)
        try:
            async for publisher, payload in subscriber:
                try:
                    apply(decoder.decode(payload))
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.warning("bad %s message from %x: %s", topic, publisher, exc)
        finally:
            await subscriber.close()


class _LiveStream(RoutedStream):
    """A routed engine stream that reports its first token and (once) its end to the router."""

    def __init__(self, router: LiveRouter, request_id: str, worker_id: int) -> None:
        super().__init__(worker_id, self)
        self.request_id = request_id
        self._router = router
        self._chunks_iter: Any = None
        self._first: LLMEngineOutput | None = None
        self._prefill_done = False
        self._closed = False
        router._streams.add(self)

    async def open(
        self, client: Client, request: PreprocessedRequest, timeout_s: float | None
    ) -> None:
        """Send the request and wait for its first chunk; on failure the stream is closed."""
        self._chunks_iter = client.direct(
            request,
            self.worker_id,
            LLMEngineOutput,
            timeout_s=timeout_s,
            request_id=request.request_id or None,
        )
        try:
            self._first = await self._chunks_iter.__anext__()
        except StopAsyncIteration:
            self._first = None
            await self.aclose()
            return
        except BaseException:
            await self.aclose()
            raise
        self._note_tokens(self._first)

    def __aiter__(self) -> _LiveStream:
        return self

    async def __anext__(self) -> LLMEngineOutput:
        if self._first is not None:
            out, self._first = self._first, None
        elif self._closed:
            raise StopAsyncIteration
        else:
            try:
                out = await self._chunks_iter.__anext__()
            except BaseException:
                await self.aclose()
                raise
        self._note_tokens(out)
        return out

    def _note_tokens(self, out: LLMEngineOutput) -> None:
        if not self._prefill_done and out.token_ids:
            self._prefill_done = True
            self._router.core.on_first_token(self.request_id, time.monotonic())
            self._router._drain_queue()

    async def aclose(self) -> None:
        """Cancel the request at the worker (if running) and release its booked load."""
        if self._closed:
            return
        self._closed = True
        self._first = None
        self._router._finished(self)
        if self._chunks_iter is not None:
            with contextlib.suppress(RuntimeError):
                await self._chunks_iter.aclose()


def _admission_configured(config: RouterConfig) -> bool:
    """Admission only matters when a busy threshold is set (else every worker is always free)."""
    return (
        config.active_decode_blocks_threshold is not None
        or config.active_prefill_tokens_threshold is not None
    )

"""``StepLoop``: runs a ``MockEngine`` in real time and feeds each request's ``RequestStream``.

While the engine has work, the loop plans a step, sleeps the step's simulated duration (the
timing model's, already divided by the speedup ratios) and then delivers the step's outputs,
publishes its KV events and offers its load metrics. Sleeps are scheduled against a deadline,
``next = previous + duration``, so the event loop's timer granularity (about 1 ms under uvloop,
coarser than a decode step at high speedup ratios) is made up by the next steps instead of
slowing simulated time; only a stall longer than ``MAX_LAG_S`` (a paused process) resets the
deadline to now, so the loop never replays a long stall as a burst. The engine's clock is wall
time (ms since the epoch), so event and metric timestamps are real. When idle, the loop waits
for work and publishes the load every ``idle_interval_s`` as a heartbeat.

Requests added or aborted while a step "runs" (during its sleep) take effect in the next step,
as in vLLM where the scheduler sees new requests between steps.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from stator.errors import ServiceUnavailableError
from stator.mocker.engine import MockEngine, StepResult
from stator.mocker.publisher import WorkerPublisher
from stator.mocker.request_stream import RequestStream
from stator.mocker.sequence import EngineRequest

log = logging.getLogger(__name__)

DRAIN_POLL_S = 0.01
MAX_LAG_S = 0.05
"""Seconds the loop may run behind its simulated schedule before it resets to wall time."""
FAILURE_BACKOFF_S = 0.1


class StepLoop:
    """Real-time driver of one engine. Start with ``start()``, end with ``close()``."""

    def __init__(self, engine: MockEngine, publisher: WorkerPublisher) -> None:
        self.engine = engine
        self.publisher = publisher
        self._streams: dict[str, RequestStream] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._epoch_offset_s = time.time() - loop.time()

    @property
    def num_requests(self) -> int:
        """Requests with an open stream (waiting, running, or output not yet taken)."""
        return len(self._streams)

    def start(self) -> None:
        """Start the step task (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(
                self._run(), name=f"mocker steps {self.engine.worker_id}"
            )

    def submit(self, request: EngineRequest) -> RequestStream:
        """Add ``request`` to the engine; its outputs arrive on the returned stream.

        Raises:
            ServiceUnavailableError: the loop is closing.
            InvalidRequestError / ContextLengthError: the engine refuses the request.
        """
        if self._closing:
            raise ServiceUnavailableError("the worker is shutting down")
        self.engine.add_request(request, self._wall_ms(self._loop.time()))
        stream = RequestStream()
        self._streams[request.request_id] = stream
        self._wake.set()
        return stream

    def cancel(self, request_id: str) -> None:
        """Forget ``request_id``'s stream and abort it in the engine (frees its blocks); a no-op
        for a request that already finished."""
        self._streams.pop(request_id, None)
        if self.engine.abort(request_id):
            self._wake.set()

    async def drain(self, timeout_s: float) -> bool:
        """Wait until every stream has ended (or ``timeout_s`` s). True when drained."""
        deadline = self._loop.time() + timeout_s
        while self._streams and self._loop.time() < deadline:
            await asyncio.sleep(DRAIN_POLL_S)
        return not self._streams

    async def close(self) -> None:
        """Stop stepping; open streams end with ``finish_reason="cancelled"`` and their requests
        are aborted. Idempotent."""
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for request_id, stream in list(self._streams.items()):
            stream.fail("cancelled", "the worker is shutting down")
            self.cancel(request_id)

    # -- the loop ------------------------------------------------------------------------------

    def _wall_ms(self, loop_time_s: float) -> float:
        return (loop_time_s + self._epoch_offset_s) * 1000.0

    async def _run(self) -> None:
        loop = self._loop
        deadline = loop.time()
        while True:
            if not self.engine.has_work:
                await self._idle()
                deadline = loop.time()
                continue
            deadline = _resync(deadline, loop.time())
            try:
                result = self.engine.step(self._wall_ms(deadline))
            except Exception:
                log.exception("mocker engine step failed; failing its requests")
                self._fail_all()
                await asyncio.sleep(FAILURE_BACKOFF_S)
                continue
            deadline += result.duration_ms / 1000.0
            await asyncio.sleep(max(0.0, deadline - loop.time()))
            self._deliver(result)
            await self._publish(result, loop.time())

    def _deliver(self, result: StepResult) -> None:
        streams = self._streams
        for output in result.outputs:
            stream = streams.get(output.request_id)
            if stream is None:
                continue  # aborted while the step ran
            stream.push(output)
            if output.finish_reason is not None:
                del streams[output.request_id]

    async def _publish(self, result: StepResult, now_s: float) -> None:
        try:
            if result.kv_events is not None:
                await self.publisher.publish_kv_events(result.kv_events)
            await self.publisher.offer_metrics(result.metrics, now_s)
        except Exception:
            log.exception("mocker worker %d: publishing failed", self.engine.worker_id)

    async def _idle(self) -> None:
        """Publish the final load, then wait for work, sending a heartbeat every interval."""
        publisher = self.publisher
        await self._publish_load(heartbeat=False)
        while not self.engine.has_work:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), publisher.idle_interval_s)
            except TimeoutError:
                await self._publish_load(heartbeat=True)
            else:
                if not self.engine.has_work:  # woken without work: an abort changed the load
                    await self._publish_load(heartbeat=False)

    async def _publish_load(self, *, heartbeat: bool) -> None:
        now = self._loop.time()
        metrics = self.engine.metrics(self._wall_ms(now))
        try:
            if heartbeat:
                await self.publisher.heartbeat(metrics, now)
            else:
                await self.publisher.offer_metrics(metrics, now)
                await self.publisher.flush(now)
        except Exception:
            log.exception("mocker worker %d: publishing metrics failed", self.engine.worker_id)

    def _fail_all(self) -> None:
        for request_id, stream in list(self._streams.items()):
            stream.fail("error", "the engine failed")
            try:
                self.cancel(request_id)
            except Exception:
                log.exception("mocker worker %d: abort failed", self.engine.worker_id)



def _resync(deadline_s: float, now_s: float) -> float:
    """The start of the next step: the previous step's end ``deadline_s`` (so timer overshoot
    is made up by later steps), or ``now_s`` when the loop is more than ``MAX_LAG_S`` behind
    (a stall is not replayed as a burst)."""
    return now_s if now_s - deadline_s > MAX_LAG_S else deadline_s

"""``MockerWorker``: one simulated vLLM worker on its own ``DistributedRuntime``.

It serves (worker ↔ router conventions, see DESIGN.md):

- the generate endpoint (``PreprocessedRequest`` in, ``LLMEngineOutput`` deltas out), registered
  with the model card;
- ``dyn://{ns}.{component}.kv_dump``: one ``KvCacheDump`` per call, for routers recovering from
  lost KV events;

and publishes ``KvEventBatch`` on ``kv-events`` and ``LoadMetrics`` on ``kv-metrics`` in the same
``(namespace, component)``. The engine's ``worker_id`` is the runtime's instance id.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from stator.mocker.config import MockerConfig
from stator.mocker.engine import MockEngine
from stator.mocker.publisher import (
    METRICS_IDLE_INTERVAL_S,
    METRICS_MIN_INTERVAL_S,
    WorkerPublisher,
)
from stator.mocker.request_check import check_request
from stator.mocker.sequence import EngineRequest
from stator.mocker.step_loop import StepLoop
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest
from stator.protocols.kv_events import KvCacheDump
from stator.protocols.model_card import ModelCard
from stator.runtime.address import EndpointAddress
from stator.runtime.endpoint import ServedEndpoint
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.runtime import DistributedRuntime

DUMP_ENDPOINT = "kv_dump"
DEFAULT_DRAIN_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker serves.

    ``engine``: engine settings with the model's vocabulary and ``max_model_len`` filled in
    (``stator.mocker.card.engine_for_model``). ``model_card``: registered with the generate
    endpoint (None: no card). ``rng_seed``: seed of the output token ids (None: random).
    ``metrics_min_interval_s`` / ``metrics_idle_interval_s``: see ``WorkerPublisher``.
    """

    endpoint: EndpointAddress
    engine: MockerConfig
    model_card: ModelCard | None = None
    rng_seed: int | None = None
    metrics_min_interval_s: float = METRICS_MIN_INTERVAL_S
    metrics_idle_interval_s: float = METRICS_IDLE_INTERVAL_S

    @property
    def dump_endpoint(self) -> EndpointAddress:
        """``{ns}.{component}.kv_dump``."""
        return dataclasses.replace(self.endpoint, endpoint=DUMP_ENDPOINT)


class MockerWorker:
    """A running worker. Make with ``await MockerWorker.start(runtime, spec)``, which takes
    ownership of ``runtime``; end with ``await stop()``."""

    def __init__(self, runtime: DistributedRuntime, spec: WorkerSpec, steps: StepLoop) -> None:
        self.runtime = runtime
        self.spec = spec
        self.steps = steps
        self._served: list[ServedEndpoint] = []
        self._ids = itertools.count(1)
        self._stopped = False

    @classmethod
    async def start(cls, runtime: DistributedRuntime, spec: WorkerSpec) -> MockerWorker:
        """Open the publishers, start the step loop, then serve the dump and generate endpoints
        (in that order, so a router that sees the instance can already call ``kv_dump``).

        Raises:
            StatorError: registration failed (``runtime`` is shut down before raising).
        """
        address = spec.endpoint
        steps: StepLoop | None = None
        try:
            publisher = await WorkerPublisher.create(
                runtime,
                address.namespace,
                address.component,
                min_interval_s=spec.metrics_min_interval_s,
                idle_interval_s=spec.metrics_idle_interval_s,
            )
            engine = MockEngine(spec.engine, worker_id=runtime.instance_id, rng_seed=spec.rng_seed)
            steps = StepLoop(engine, publisher)
            steps.start()
            worker = cls(runtime, spec, steps)
            dump = runtime.endpoint(spec.dump_endpoint)
            worker._served.append(await dump.serve(worker.kv_dump))
            generate = runtime.endpoint(address)
            worker._served.append(
                await generate.serve(
                    worker.generate, request_type=PreprocessedRequest, model_card=spec.model_card
                )
            )
        except BaseException:
            if steps is not None:
                await steps.close()
            await runtime.shutdown(drain_timeout_s=0.0)
            raise
        return worker

    @property
    def instance_id(self) -> int:
        """The runtime's instance id (also the ``worker_id`` of events and metrics)."""
        return self.runtime.instance_id

    @property
    def engine(self) -> MockEngine:
        """The engine core (for inspection; driven only by the step loop)."""
        return self.steps.engine

    async def generate(
        self, request: PreprocessedRequest, ctx: RequestContext
    ) -> AsyncIterator[LLMEngineOutput]:
        """Run ``request``; yield output deltas until its ``finish_reason``.

        Closing the generator early (the client went away) aborts the request in the engine,
        freeing its KV blocks.

        Raises:
            InvalidRequestError / ContextLengthError: see ``check_request`` (HTTP 400).
            ServiceUnavailableError: the worker is shutting down.
        """
        check_request(request, self.spec.engine)
        request_id = str(next(self._ids))  # the wire request_id need not be unique here
        engine_request = dataclasses.replace(
            EngineRequest.from_preprocessed(request), request_id=request_id
        )
        stream = self.steps.submit(engine_request)
        try:
            while (chunk := await stream.next()) is not None:
                yield chunk
        finally:
            self.steps.cancel(request_id)

    async def kv_dump(self, request: Any, ctx: RequestContext) -> AsyncIterator[KvCacheDump]:
        """Yield exactly one ``KvCacheDump`` (the request, an empty dict, is ignored)."""
        yield self.engine.dump()

    async def stop(self, drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S) -> None:
        """Graceful stop; idempotent.

        Deregisters both endpoints (no new requests), lets in-flight requests finish for up to
        ``drain_timeout_s`` s, ends the rest with ``finish_reason="cancelled"``, closes the
        publishers and shuts the runtime down (its leases go, so its keys vanish).
        """
        if self._stopped:
            return
        self._stopped = True
        try:
            for served in self._served:
                await served.stop()
            await self.steps.drain(drain_timeout_s)
            await self.steps.close()
            await self.steps.publisher.close()
        finally:
            await self.runtime.shutdown(drain_timeout_s=1.0)

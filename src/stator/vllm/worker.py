"""``VllmWorker``: vLLM's ``AsyncLLM`` in this process, served over the stator runtime.

Start order: the KV-event relay's socket (so no event is missed), the engine (minutes on CPU),
then the runtime; the publishers; the ``kv_dump`` endpoint; and last the generate endpoint with
the model card, so a router that sees the instance can already fetch a dump. It serves
(worker ↔ router conventions, DESIGN.md):

- the generate endpoint (aggregated/decode: ``RequestHandlers.generate``; prefill worker:
  ``RequestHandlers.prefill``), ``PreprocessedRequest`` in, ``LLMEngineOutput`` deltas out;
- ``dyn://{ns}.{component}.kv_dump``: one ``KvCacheDump`` from the relay's state;
- ``KvEventBatch`` on ``kv-events`` and ``LoadMetrics`` on ``kv-metrics``;
- optionally ``/metrics`` and ``/health`` on ``--metrics-port``, and the canary health check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from typing import Any

from stator.mocker.publisher import WorkerPublisher
from stator.protocols.engine import PreprocessedRequest
from stator.protocols.kv_events import KvCacheDump
from stator.protocols.model_card import ModelCard
from stator.runtime.endpoint import ServedEndpoint
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.runtime import DistributedRuntime
from stator.vllm.config import VllmWorkerConfig
from stator.vllm.engine import EngineSettings, VllmEngine
from stator.vllm.handlers import RequestHandlers
from stator.vllm.health import HealthChecker
from stator.vllm.inflight import InflightTracker
from stator.vllm.kv_relay import VLLM_TOPIC, KvEventRelay
from stator.vllm.load import LoadReporter, SchedulerStatsTap
from stator.vllm.metrics import MetricsServer, WorkerCollector, build_app
from stator.vllm.model_card import build_model_card

log = logging.getLogger(__name__)


class VllmWorker:
    """A running worker; ``await VllmWorker.start(config)``, then ``await stop()``."""

    def __init__(self, config: VllmWorkerConfig, engine: VllmEngine, relay: KvEventRelay | None):
        self.config = config
        self.engine = engine
        self.relay = relay
        self.tracker = InflightTracker()
        self.handlers = RequestHandlers(engine, self.tracker)
        self.health = HealthChecker(self.handlers.canary, self.tracker, idle_s=config.canary_wait_s)
        self.runtime: DistributedRuntime | None = None
        self.card: ModelCard | None = None
        self.metrics: MetricsServer | None = None
        self._publisher: WorkerPublisher | None = None
        self._served: list[ServedEndpoint] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    @classmethod
    async def start(cls, config: VllmWorkerConfig) -> VllmWorker:
        """Start the engine and serve it. Blocks the event loop while vLLM starts.

        Raises:
            StatorError: the runtime could not register; vLLM's errors if the engine fails.
        """
        relay = KvEventRelay.open(config.kv_events_endpoint) if config.enable_kv_events else None
        tap = SchedulerStatsTap()
        try:
            settings = EngineSettings(
                config.engine_argv, relay.endpoint if relay else None, VLLM_TOPIC
            )
            engine = VllmEngine.start(settings, [tap.factory])
        except BaseException:
            if relay is not None:
                await relay.close()
            raise
        worker = cls(config, engine, relay)
        try:
            await worker._serve(tap)
        except BaseException:
            await worker.stop()
            raise
        return worker

    @property
    def instance_id(self) -> int:
        """The runtime's instance id (``worker_id`` of events and metrics); 0 before start."""
        return self.runtime.instance_id if self.runtime is not None else 0

    async def _serve(self, tap: SchedulerStatsTap) -> None:
        cfg = self.config
        self.runtime = rt = await DistributedRuntime.create(cfg.runtime)
        ns, comp = cfg.endpoint.namespace, cfg.endpoint.component
        self._publisher = pub = await WorkerPublisher.create(rt, ns, comp)
        self.card = build_model_card(cfg, self.engine.vllm_config)
        if self.relay is not None:
            self.relay.start(pub.publish_kv_events, rt.instance_id)
        total = self.card.runtime_config.total_kv_blocks or 0
        reporter = LoadReporter(
            tap, self.tracker, pub, worker_id=rt.instance_id, total_kv_blocks=total
        )
        self._tasks.append(asyncio.create_task(reporter.run(), name="vllm load reporter"))
        if cfg.health_check:
            self._tasks.append(asyncio.create_task(self.health.run(), name="vllm health check"))
        if cfg.metrics_port is not None:
            self._start_metrics(cfg.metrics_port)
        self._served.append(await rt.endpoint(cfg.dump_endpoint).serve(self.kv_dump))
        handler = self.handlers.prefill if cfg.role == "prefill" else self.handlers.generate
        generate = rt.endpoint(cfg.endpoint)
        self._served.append(
            await generate.serve(handler, request_type=PreprocessedRequest, model_card=self.card)
        )

    def _start_metrics(self, port: int) -> None:
        collector = WorkerCollector(
            self.config.served_model_name, self.instance_id, self.tracker, self.relay, self.health
        )
        from prometheus_client import CollectorRegistry

        own = CollectorRegistry()
        own.register(collector)
        app = build_app(lambda: _registries(own), self.health_report)
        self.metrics = MetricsServer(app, self.config.runtime.advertise_host, port)
        self.metrics.start()

    def health_report(self) -> dict[str, Any]:
        """``GET /health``: the canary verdict plus what this worker serves."""
        return self.health.report(
            model_name=self.config.served_model_name,
            endpoint=str(self.config.endpoint),
            instance_id=self.instance_id,
            role=self.config.role,
        )

    async def kv_dump(self, request: Any, ctx: RequestContext) -> AsyncIterator[KvCacheDump]:
        """Yield exactly one ``KvCacheDump`` (the request, an empty dict, is ignored)."""
        if self.relay is not None:
            yield self.relay.dump()
        else:
            yield KvCacheDump(worker_id=self.instance_id, event_id=0, events=[])

    async def stop(self) -> None:
        """Deregister, let in-flight requests finish (``drain_timeout_s``), stop everything,
        shut the engine down. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            for served in self._served:
                await served.stop()
            await self._drain(self.config.drain_timeout_s)
            await self._close_helpers()
            if self.runtime is not None:
                await self.runtime.shutdown(drain_timeout_s=1.0)
        finally:
            self.engine.shutdown()

    async def _drain(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.tracker.num_inflight and loop.time() < deadline:
            await asyncio.sleep(0.05)

    async def _close_helpers(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.metrics is not None:
            await self.metrics.stop()
        if self.relay is not None:
            await self.relay.close()
        if self._publisher is not None:
            await self._publisher.close()


def _registries(own: Any) -> Iterable[Any]:
    """vLLM's Prometheus registry (multiprocess-aware) and the worker's own."""
    try:
        from vllm.v1.metrics.prometheus import get_prometheus_registry

        return [get_prometheus_registry(), own]
    except ImportError:
        from prometheus_client import REGISTRY

        return [REGISTRY, own]

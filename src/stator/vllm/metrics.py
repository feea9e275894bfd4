"""The worker's HTTP port: ``GET /metrics`` (vLLM's Prometheus metrics plus the worker's own)
and ``GET /health`` (the canary health check's report; 200 when healthy, else 503).

Worker metrics (prefix ``stator_worker_``, labels ``model``, ``worker_id``), read live:
``requests_started_total`` / ``requests_finished_total``, ``inflight_requests``,
``active_prefill_tokens``, ``kv_event_batches_published_total`` (= the last ``event_id``),
``kv_events_received_total`` (vLLM events read), ``kv_event_seq_gaps_total``,
``kv_blocks_tracked``, ``kv_blocks_dropped_total``, ``healthy`` (1/0). vLLM's own metrics
(``vllm:num_requests_running`` ...) come from its registry (``get_prometheus_registry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from stator.vllm.health import HealthChecker
from stator.vllm.inflight import InflightTracker
from stator.vllm.kv_relay import KvEventRelay

PREFIX = "stator_worker"


class WorkerCollector:
    """A Prometheus collector over the worker's live objects (any of them may be None)."""

    def __init__(
        self,
        model: str,
        worker_id: int,
        tracker: InflightTracker,
        relay: KvEventRelay | None = None,
        health: HealthChecker | None = None,
    ) -> None:
        self._labels = [model, str(worker_id)]
        self._tracker = tracker
        self._relay = relay
        self._health = health

    def collect(self) -> Iterator[Metric]:
        """The metrics now."""
        t = self._tracker
        yield self._counter("requests_started", "requests that entered the engine", t.num_started)
        yield self._counter("requests_finished", "requests that ended", t.num_finished)
        yield self._gauge("inflight_requests", "requests in flight", t.num_inflight)
        yield self._gauge(
            "active_prefill_tokens", "prompt tokens not prefilled yet", t.active_prefill_tokens
        )
        if self._relay is not None:
            yield from self._relay_metrics(self._relay)
        if self._health is not None:
            ok = self._health.state.status == "healthy"
            yield self._gauge("healthy", "1 if the last health check passed", int(ok))

    def _relay_metrics(self, relay: KvEventRelay) -> Iterator[Metric]:
        r = relay.core
        yield self._counter("kv_event_batches_published", "KV event batches relayed", r.event_id)
        yield self._counter("kv_events_received", "vLLM KV events read", r.num_events_in)
        yield self._counter("kv_event_seq_gaps", "gaps in vLLM's event sequence", r.num_seq_gaps)
        yield self._gauge("kv_blocks_tracked", "cached blocks known", len(r.converter))
        yield self._counter(
            "kv_blocks_dropped", "stored blocks with unknown parent", r.converter.num_dropped
        )

    def _gauge(self, name: str, doc: str, value: float) -> Metric:
        g = GaugeMetricFamily(f"{PREFIX}_{name}", doc, labels=["model", "worker_id"])
        g.add_metric(self._labels, value)
        return g

    def _counter(self, name: str, doc: str, value: float) -> Metric:
        c = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["model", "worker_id"])
        c.add_metric(self._labels, value)
        return c


def render_metrics(registries: Iterable[CollectorRegistry]) -> bytes:
    """Prometheus text exposition of every registry, concatenated."""
    return b"".join(generate_latest(r) for r in registries)


def build_app(
    registries: Callable[[], Iterable[CollectorRegistry]],
    health_report: Callable[[], dict[str, Any]],
) -> Starlette:
    """The ASGI app: ``/metrics`` renders ``registries()``; ``/health`` returns
    ``health_report()`` as JSON, status 200 if its ``status`` is ``healthy`` else 503."""

    async def metrics(request: Request) -> Response:
        return Response(render_metrics(registries()), media_type=CONTENT_TYPE_LATEST)

    async def health(request: Request) -> Response:
        report = health_report()
        return JSONResponse(report, status_code=200 if report["status"] == "healthy" else 503)

    return Starlette(routes=[Route("/metrics", metrics), Route("/health", health)])


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling (the worker handles SIGTERM/SIGINT)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class MetricsServer:
    """Serves ``app`` on ``host:port`` (port 0: a free one; ``port`` is the bound one)."""

    def __init__(self, app: Starlette, host: str = "0.0.0.0", port: int = 0) -> None:
        self._sock = socket.create_server((host, port), reuse_port=False)
        self.port: int = self._sock.getsockname()[1]
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self._server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start serving in the running event loop."""
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))

    async def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 5.0)
        self._sock.close()

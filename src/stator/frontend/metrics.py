"""Prometheus metrics of the frontend, in a per-app ``CollectorRegistry`` (no global state).

Names (prefix ``stator_frontend_``), after Dynamo's frontend metrics (``dynamo_frontend_*``):
``requests_total{model,endpoint,request_type,status}``, ``inflight_requests{model}``,
``time_to_first_token_seconds{model}``, ``inter_token_latency_seconds{model}``,
``request_duration_seconds{model}``, ``input_sequence_tokens{model}``,
``output_sequence_tokens{model}``, ``cached_tokens{model}``.

ITL is observed once per engine chunk (the chunk's gap divided by its tokens), so the cost is
per chunk, not per token. Histograms are ``LoopHistogram``s: plain counters updated without the
locks ``prometheus_client.Histogram`` takes, which is safe because the frontend observes and
renders on one event-loop thread (about 10x cheaper per observation).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

PREFIX = "stator_frontend"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_BUCKETS = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 131072)


class HistogramChild:
    """One label set of a ``LoopHistogram``: per-bucket counts and the sum."""

    __slots__ = ("_bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self._bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (same bucket rule as Prometheus: ``value <= le``)."""
        self.counts[bisect.bisect_left(self._bounds, value)] += 1
        self.total += value


class LoopHistogram(Collector):
    """A histogram with one label, ``model``, for single-threaded (event-loop) use."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = tuple(float(b) for b in buckets)
        self._children: dict[str, HistogramChild] = {}

    def labels(self, model: str) -> HistogramChild:
        """The child for ``model`` (created on first use)."""
        child = self._children.get(model)
        if child is None:
            child = self._children[model] = HistogramChild(self.bounds)
        return child

    def collect(self) -> Iterator[HistogramMetricFamily]:
        """The Prometheus family: cumulative buckets, ``_sum`` and ``_count`` per model."""
        family = HistogramMetricFamily(self.name, self.documentation, labels=["model"])
        for model, child in sorted(self._children.items()):
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), child.counts, strict=True):
                cumulative += count
                buckets.append((_le(bound), float(cumulative)))
            family.add_metric([model], buckets, child.total)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        """No samples: lets the registry know the name without collecting."""
        yield HistogramMetricFamily(self.name, self.documentation, labels=["model"])


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(bound)


@dataclass(slots=True)
class ModelMetrics:
    """The per-model children of the frontend metrics (label lookups done once)."""

    inflight: Gauge
    ttft: HistogramChild
    itl: HistogramChild
    duration: HistogramChild
    isl: HistogramChild
    osl: HistogramChild
    cached: HistogramChild


class FrontendMetrics:
    """All frontend metrics. ``render()`` gives the Prometheus text exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            f"{PREFIX}_requests",
            "Requests by model, endpoint, streaming or not, and HTTP status",
            ["model", "endpoint", "request_type", "status"],
            registry=r,
        )
        self.inflight = Gauge(
            f"{PREFIX}_inflight_requests", "Requests in flight", ["model"], registry=r
        )
        self.ttft = self._histogram("time_to_first_token_seconds", "TTFT", _LATENCY_BUCKETS)
        self.itl = self._histogram("inter_token_latency_seconds", "ITL", _ITL_BUCKETS)
        self.duration = self._histogram(
            "request_duration_seconds", "Request duration", _DURATION_BUCKETS
        )
        self.isl = self._histogram("input_sequence_tokens", "ISL (prompt tokens)", _TOKEN_BUCKETS)
        self.osl = self._histogram("output_sequence_tokens", "OSL (output tokens)", _TOKEN_BUCKETS)
        self.cached = self._histogram(
            "cached_tokens", "Prompt tokens served from the prefix cache", _TOKEN_BUCKETS
        )
        self._models: dict[str, ModelMetrics] = {}

    def _histogram(self, name: str, doc: str, buckets: Sequence[float]) -> LoopHistogram:
        histogram = LoopHistogram(f"{PREFIX}_{name}", doc, buckets)
        self.registry.register(histogram)
        return histogram

    def for_model(self, model: str) -> ModelMetrics:
        """The children for ``model`` (created on first use)."""
        found = self._models.get(model)
        if found is None:
            found = ModelMetrics(
                inflight=self.inflight.labels(model),
                ttft=self.ttft.labels(model),
                itl=self.itl.labels(model),
                duration=self.duration.labels(model),
                isl=self.isl.labels(model),
                osl=self.osl.labels(model),
                cached=self.cached.labels(model),
            )
            self._models[model] = found
        return found

    def count_request(self, model: str, endpoint: str, stream: bool, status: int) -> None:
        """One finished request (any outcome). ``status``: the HTTP status (499 = client left)."""
        kind = "stream" if stream else "unary"
        self.requests.labels(model, endpoint, kind, str(status)).inc()

    def render(self) -> bytes:
        """Prometheus text exposition of every metric."""
        return bytes(generate_latest(self.registry))

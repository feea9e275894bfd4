"""Prometheus metrics of the frontend, in a per-app ``CollectorRegistry`` (no global state).

Names (prefix ``stator_frontend_``), after Dynamo's frontend metrics (``dynamo_frontend_*``):
``requests_total{model,endpoint,request_type,status}``, ``inflight_requests{model}``,
``time_to_first_token_seconds{model}``, ``inter_token_latency_seconds{model}``,
``request_duration_seconds{model}``, ``input_sequence_tokens{model}``,
``output_sequence_tokens{model}``, ``cached_tokens{model}``. ITL is observed once per engine
chunk (the chunk's gap divided by its tokens, weighted by nothing), so the cost stays per chunk,
not per token.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

PREFIX = "stator_frontend"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_ITL_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
_DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TOKEN_BUCKETS = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 131072)


@dataclass(slots=True)
class ModelMetrics:
    """The per-model children of the frontend metrics (label lookups done once)."""

    inflight: Gauge
    ttft: Histogram
    itl: Histogram
    duration: Histogram
    isl: Histogram
    osl: Histogram
    cached: Histogram


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
        self.ttft = _histogram(r, "time_to_first_token_seconds", "TTFT", _LATENCY_BUCKETS)
        self.itl = _histogram(r, "inter_token_latency_seconds", "ITL", _ITL_BUCKETS)
        self.duration = _histogram(
            r, "request_duration_seconds", "Request duration", _DURATION_BUCKETS
        )
        self.isl = _histogram(r, "input_sequence_tokens", "ISL (prompt tokens)", _TOKEN_BUCKETS)
        self.osl = _histogram(r, "output_sequence_tokens", "OSL (output tokens)", _TOKEN_BUCKETS)
        self.cached = _histogram(
            r, "cached_tokens", "Prompt tokens served from the prefix cache", _TOKEN_BUCKETS
        )
        self._models: dict[str, ModelMetrics] = {}

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


def _histogram(
    registry: CollectorRegistry, name: str, doc: str, buckets: tuple[float, ...]
) -> Histogram:
    return Histogram(f"{PREFIX}_{name}", doc, ["model"], buckets=buckets, registry=registry)

"""A worker's event-plane output: KV event batches and load metrics.

Conventions (worker ↔ router): msgpack ``KvEventBatch`` on topic ``kv-events`` and msgpack
``LoadMetrics`` on ``kv-metrics``, both in the worker endpoint's ``(namespace, component)``.
Metrics go out when the load changed, at most every ``min_interval_s`` (50 ms) while busy, and
every ``idle_interval_s`` (1 s) as a heartbeat when idle.
"""

from __future__ import annotations

import msgspec

from stator.protocols.kv_events import (
    KV_EVENTS_TOPIC,
    KV_METRICS_TOPIC,
    KvEventBatch,
    LoadMetrics,
)
from stator.runtime.event_plane.base import EventPublisher
from stator.runtime.runtime import DistributedRuntime

METRICS_MIN_INTERVAL_S = 0.05
METRICS_IDLE_INTERVAL_S = 1.0


def _load_key(m: LoadMetrics) -> tuple[int, int, int, int, float]:
    """The fields whose change is worth publishing (not the timestamp)."""
    return (
        m.active_decode_blocks,
        m.active_prefill_tokens,
        m.num_waiting_reqs,
        m.num_running_reqs,
        m.kv_cache_usage,
    )


class WorkerPublisher:
    """Publishes one worker's KV events and throttled load metrics.

    ``min_interval_s``: least time between two metrics messages while busy (s);
    ``idle_interval_s``: heartbeat period when nothing changes (s). Times are the caller's clock
    (seconds, monotonic).
    """

    def __init__(
        self,
        kv_events: EventPublisher,
        kv_metrics: EventPublisher,
        *,
        min_interval_s: float = METRICS_MIN_INTERVAL_S,
        idle_interval_s: float = METRICS_IDLE_INTERVAL_S,
    ) -> None:
        self._kv_events = kv_events
        self._kv_metrics = kv_metrics
        self.min_interval_s = min_interval_s
        self.idle_interval_s = idle_interval_s
        self._encoder = msgspec.msgpack.Encoder()
        self._last_sent_s = float("-inf")
        self._last_key: tuple[int, int, int, int, float] | None = None
        self._pending: LoadMetrics | None = None

    @classmethod
    async def create(
        cls,
        runtime: DistributedRuntime,
        namespace: str,
        component: str,
        *,
        min_interval_s: float = METRICS_MIN_INTERVAL_S,
        idle_interval_s: float = METRICS_IDLE_INTERVAL_S,
    ) -> WorkerPublisher:
        """Open the ``kv-events`` and ``kv-metrics`` publishers of ``runtime``."""
        events = await runtime.event_publisher(namespace, component, KV_EVENTS_TOPIC)
        try:
            metrics = await runtime.event_publisher(namespace, component, KV_METRICS_TOPIC)
        except BaseException:
            await events.close()
            raise
        return cls(events, metrics, min_interval_s=min_interval_s, idle_interval_s=idle_interval_s)

    @property
    def has_pending(self) -> bool:
        """A changed load is waiting for its interval to pass."""
        return self._pending is not None

    async def publish_kv_events(self, batch: KvEventBatch) -> None:
        """Send one KV event batch now."""
        await self._kv_events.publish(self._encoder.encode(batch))

    async def offer_metrics(self, metrics: LoadMetrics, now_s: float) -> None:
        """Publish ``metrics`` if the load changed and ``min_interval_s`` has passed; otherwise
        keep it pending (sent by a later offer or ``flush``)."""
        if _load_key(metrics) == self._last_key:
            self._pending = None
            return
        self._pending = metrics
        if now_s - self._last_sent_s >= self.min_interval_s:
            await self.flush(now_s)

    async def flush(self, now_s: float) -> None:
        """Publish the pending metrics, if any."""
        if self._pending is not None:
            await self._send(self._pending, now_s)

    async def heartbeat(self, metrics: LoadMetrics, now_s: float) -> None:
        """Publish ``metrics`` unconditionally (the idle heartbeat)."""
        await self._send(metrics, now_s)

    async def close(self) -> None:
        """Close both publishers (their discovery keys go)."""
        try:
            await self._kv_events.close()
        finally:
            await self._kv_metrics.close()

    async def _send(self, metrics: LoadMetrics, now_s: float) -> None:
        self._pending = None
        self._last_sent_s = now_s
        self._last_key = _load_key(metrics)
        await self._kv_metrics.publish(self._encoder.encode(metrics))

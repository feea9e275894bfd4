"""What a live router has seen and booked, for operators and tests: a snapshot and Prometheus.

``KvEventStats`` counts, per worker, the KV-event batches, events and load reports a live router
accepted and the dumps it requested and applied. ``RouterDebugState`` is a point-in-time view of
one router: per worker, the blocks its indexer holds (``cached_blocks``), the load booked there
and those counters. The frontend serves it as ``GET /debug/router`` and exports it through
``RouterCollector`` as gauges and counters (prefix ``stator_frontend_router_``):

- ``kv_blocks{model,worker_id}``: blocks the router's indexer holds for the worker;
- ``active_decode_blocks`` / ``active_prefill_tokens`` / ``active_requests{model,worker_id}``:
  the booked load;
- ``kv_events_total`` / ``kv_event_batches_total`` / ``kv_dumps_total`` /
  ``load_metrics_total{model,worker_id}``: KV events (BlockStored, BlockRemoved,
  AllBlocksCleared) and batches received, dumps applied, load reports received.

So "the router has received that worker's BlockStored events" is
``stator_frontend_router_kv_blocks{worker_id="<id>"} > 0``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol, runtime_checkable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stator.protocols.kv_events import BlockRemoved, BlockStored, KvEventBatch, LoadMetrics
from stator.router.simple import LoadTrackingCore

METRIC_PREFIX = "stator_frontend_router"


@dataclass(slots=True)
class WorkerEventStats:
    """Counters for one worker. ``kv_events``: individual events; ``blocks_stored`` /
    ``blocks_removed``: block hashes in BlockStored / BlockRemoved events; ``last_event_id``:
    id of the newest batch received (None before the first)."""

    kv_event_batches: int = 0
    kv_events: int = 0
    blocks_stored: int = 0
    blocks_removed: int = 0
    last_event_id: int | None = None
    load_metrics: int = 0
    dumps_requested: int = 0
    dumps_applied: int = 0


class KvEventStats:
    """Per-worker counters of a live router's event-plane input.

    ``ignored_batches``: KV-event batches of workers the router does not route to (other models
    sharing the component, or workers not yet seen in discovery).
    """

    def __init__(self) -> None:
        self._workers: dict[int, WorkerEventStats] = {}
        self.ignored_batches = 0

    def worker(self, worker_id: int) -> WorkerEventStats:
        """The counters of ``worker_id`` (zeros for a worker never seen)."""
        found = self._workers.get(worker_id)
        if found is None:
            found = self._workers[worker_id] = WorkerEventStats()
        return found

    def snapshot(self, worker_id: int) -> WorkerEventStats:
        """A copy of the counters of ``worker_id`` (zeros for a worker never seen)."""
        found = self._workers.get(worker_id)
        return replace(found) if found is not None else WorkerEventStats()

    def forget(self, worker_id: int) -> None:
        """Drop a departed worker's counters."""
        self._workers.pop(worker_id, None)

    def on_batch(self, batch: KvEventBatch) -> None:
        """Count an accepted batch and its events."""
        stats = self.worker(batch.worker_id)
        stats.kv_event_batches += 1
        stats.kv_events += len(batch.events)
        stats.last_event_id = batch.event_id
        for event in batch.events:
            if isinstance(event, BlockStored):
                stats.blocks_stored += len(event.block_hashes)
            elif isinstance(event, BlockRemoved):
                stats.blocks_removed += len(event.block_hashes)

    def on_metrics(self, metrics: LoadMetrics) -> None:
        """Count an accepted load report."""
        self.worker(metrics.worker_id).load_metrics += 1


@dataclass(frozen=True, slots=True)
class WorkerDebugState:
    """One worker as a router sees it. ``cached_blocks``: blocks in the router's indexer (None
    when the router keeps no index); load fields as booked by the router (blocks, tokens);
    ``total_kv_blocks``: capacity last reported (None before a report); ``events``: counters."""

    worker_id: int
    cached_blocks: int | None
    active_decode_blocks: int
    active_prefill_tokens: int
    num_active_requests: int
    total_kv_blocks: int | None
    events: WorkerEventStats = field(default_factory=WorkerEventStats)


@dataclass(frozen=True, slots=True)
class RouterDebugState:
    """One router: the endpoint it routes to, its mode and block size (tokens), whether it
    follows KV events, ``remote`` (the standalone router it forwards to, if any), its workers
    (ascending id) and ``ignored_batches`` (see ``KvEventStats``)."""

    endpoint: str
    router_mode: str
    block_size: int | None
    kv_events: bool
    workers: list[WorkerDebugState]
    ignored_batches: int = 0
    remote: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (worker ids stay ints)."""
        return asdict(self)


@runtime_checkable
class DebugStateSource(Protocol):
    """A router that can describe itself (``LiveRouter``, ``RemoteRouter``)."""

    def debug_state(self) -> RouterDebugState:
        """A snapshot of the router."""
        ...


def core_debug_state(
    endpoint: str,
    router_mode: str,
    core: LoadTrackingCore,
    stats: KvEventStats,
    *,
    kv_events: bool,
) -> RouterDebugState:
    """Snapshot of a ``LoadTrackingCore`` (any mode) and the counters of its live router."""
    from stator.router.kv_core import KvRouterCore

    indexer = core.indexer if isinstance(core, KvRouterCore) else None
    workers = [
        WorkerDebugState(
            worker_id=load.worker_id,
            cached_blocks=indexer.num_blocks(load.worker_id) if indexer is not None else None,
            active_decode_blocks=load.active_decode_blocks,
            active_prefill_tokens=load.active_prefill_tokens,
            num_active_requests=load.num_active_requests,
            total_kv_blocks=load.total_kv_blocks,
            events=stats.snapshot(load.worker_id),
        )
        for load in core.worker_loads()
    ]
    return RouterDebugState(
        endpoint=endpoint,
        router_mode=router_mode,
        block_size=core.block_size,
        kv_events=kv_events,
        workers=workers,
        ignored_batches=stats.ignored_batches,
    )


StateSource = Callable[[], Iterable[tuple[str, RouterDebugState]]]
"""Returns ``(model name, router state)`` for every router to export."""


class RouterCollector(Collector):
    """Prometheus collector over router snapshots taken at scrape time (no state of its own).

    ``source``: the ``(model, state)`` pairs to export; ``prefix``: metric name prefix.
    """

    def __init__(self, source: StateSource, prefix: str = METRIC_PREFIX) -> None:
        self._source = source
        self._prefix = prefix

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the label sets are only known at scrape time."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One family per metric, one sample per (model, worker)."""
        p = self._prefix
        labels = ["model", "worker_id"]
        gauges = {
            "kv_blocks": GaugeMetricFamily(
                f"{p}_kv_blocks", "KV blocks the router's indexer holds per worker", labels=labels
            ),
            "decode": GaugeMetricFamily(
                f"{p}_active_decode_blocks", "KV blocks booked by active requests", labels=labels
            ),
            "prefill": GaugeMetricFamily(
                f"{p}_active_prefill_tokens",
                "Prompt tokens booked, not yet prefilled",
                labels=labels,
            ),
            "requests": GaugeMetricFamily(
                f"{p}_active_requests", "Requests routed and not yet finished", labels=labels
            ),
        }
        counters = {
            "events": CounterMetricFamily(
                f"{p}_kv_events", "KV events received from the worker", labels=labels
            ),
            "batches": CounterMetricFamily(
                f"{p}_kv_event_batches",
                "KV event batches received from the worker",
                labels=labels,
            ),
            "dumps": CounterMetricFamily(
                f"{p}_kv_dumps", "KV cache dumps fetched and applied", labels=labels
            ),
            "loads": CounterMetricFamily(
                f"{p}_load_metrics", "Load reports received from the worker", labels=labels
            ),
        }
        for model, state in self._source():
            for w in state.workers:
                values = [model, str(w.worker_id)]
                if w.cached_blocks is not None:
                    gauges["kv_blocks"].add_metric(values, w.cached_blocks)
                gauges["decode"].add_metric(values, w.active_decode_blocks)
                gauges["prefill"].add_metric(values, w.active_prefill_tokens)
                gauges["requests"].add_metric(values, w.num_active_requests)
                counters["events"].add_metric(values, w.events.kv_events)
                counters["batches"].add_metric(values, w.events.kv_event_batches)
                counters["dumps"].add_metric(values, w.events.dumps_applied)
                counters["loads"].add_metric(values, w.events.load_metrics)
        yield from gauges.values()
        yield from counters.values()


def model_router_states(models: Iterable[tuple[str, object]]) -> list[tuple[str, RouterDebugState]]:
    """``(model, state)`` for every ``(model, router)`` whose router can describe itself."""
    return [
        (name, router.debug_state())
        for name, router in models
        if isinstance(router, DebugStateSource)
    ]

"""Load metrics for the router: vLLM's scheduler stats → ``LoadMetrics`` on ``kv-metrics``.

vLLM calls its stat loggers after every engine step with ``SchedulerStats``
(``num_running_reqs``, ``num_waiting_reqs``, ``kv_cache_usage`` in [0, 1]). ``SchedulerStatsTap``
is such a logger (duck-typed, as vLLM's ``PerEngineStatLoggerAdapter`` calls it); it keeps the
latest values and wakes the ``LoadReporter``, which publishes when the load changed (at most
every 50 ms) and every second as a heartbeat (worker ↔ router conventions, via the mocker's
``WorkerPublisher``). ``active_decode_blocks`` = ``round(kv_cache_usage * total_kv_blocks)``;
``active_prefill_tokens`` comes from the worker's own ``InflightTracker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from stator.mocker.publisher import WorkerPublisher
from stator.protocols.kv_events import LoadMetrics
from stator.vllm.inflight import InflightTracker


@dataclass(slots=True)
class SchedulerSnapshot:
    """The latest scheduler stats of the engine (vLLM ``SchedulerStats`` fields)."""

    num_running_reqs: int = 0
    num_waiting_reqs: int = 0
    kv_cache_usage: float = 0.0


class SchedulerStatsTap:
    """A vLLM per-engine stat logger that records ``SchedulerStats`` into ``snapshot`` and sets
    ``updated``. Use ``tap.factory`` as an entry of ``AsyncLLM``'s ``stat_loggers``."""

    def __init__(self) -> None:
        self.snapshot = SchedulerSnapshot()
        self.updated = asyncio.Event()

    def factory(self, vllm_config: Any, engine_index: int = 0) -> SchedulerStatsTap:
        """vLLM's ``StatLoggerFactory`` signature; returns this tap."""
        return self

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        """Called by vLLM after each engine step (in the event loop's thread)."""
        if scheduler_stats is None:
            return
        self.snapshot.num_running_reqs = int(scheduler_stats.num_running_reqs)
        self.snapshot.num_waiting_reqs = int(scheduler_stats.num_waiting_reqs)
        self.snapshot.kv_cache_usage = float(scheduler_stats.kv_cache_usage)
        self.updated.set()

    def log(self) -> None:
        """vLLM's periodic log hook (nothing to log)."""

    def log_engine_initialized(self) -> None:
        """vLLM's start hook (nothing to do)."""


def load_metrics(
    snapshot: SchedulerSnapshot, tracker: InflightTracker, worker_id: int, total_kv_blocks: int
) -> LoadMetrics:
    """The ``LoadMetrics`` message for the current state (``timestamp_s``: Unix seconds)."""
    return LoadMetrics(
        worker_id=worker_id,
        active_decode_blocks=round(snapshot.kv_cache_usage * total_kv_blocks),
        active_prefill_tokens=max(0, tracker.active_prefill_tokens),
        num_waiting_reqs=snapshot.num_waiting_reqs,
        num_running_reqs=snapshot.num_running_reqs,
        kv_cache_usage=snapshot.kv_cache_usage,
        total_kv_blocks=total_kv_blocks,
        timestamp_s=time.time(),
    )


class LoadReporter:
    """Publishes ``load_metrics(...)`` through ``publisher`` on every tap update (throttled)
    and as a heartbeat every ``publisher.idle_interval_s`` seconds."""

    def __init__(
        self,
        tap: SchedulerStatsTap,
        tracker: InflightTracker,
        publisher: WorkerPublisher,
        *,
        worker_id: int,
        total_kv_blocks: int,
    ) -> None:
        self._tap = tap
        self._tracker = tracker
        self._publisher = publisher
        self._worker_id = worker_id
        self._total = total_kv_blocks

    def current(self) -> LoadMetrics:
        """The load now."""
        return load_metrics(self._tap.snapshot, self._tracker, self._worker_id, self._total)

    async def run(self) -> None:
        """Publish forever (cancel to stop)."""
        pub, updated = self._publisher, self._tap.updated
        last_beat = float("-inf")
        while True:
            now = time.monotonic()
            if now - last_beat >= pub.idle_interval_s:
                await pub.heartbeat(self.current(), now)
                last_beat = now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(updated.wait(), last_beat + pub.idle_interval_s - now)
            if updated.is_set():
                updated.clear()
                await pub.offer_metrics(self.current(), time.monotonic())
                if pub.has_pending:
                    await asyncio.sleep(pub.min_interval_s)
                    await pub.flush(time.monotonic())

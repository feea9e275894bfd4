"""In-flight book-keeping, the canary health check, load metrics and the worker's HTTP app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client import CollectorRegistry

from stator.vllm.health import HealthChecker
from stator.vllm.inflight import InflightTracker
from stator.vllm.load import SchedulerSnapshot, SchedulerStatsTap, load_metrics
from stator.vllm.metrics import WorkerCollector, build_app


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_tracker_counts_prefill_backlog_and_idle_time() -> None:
    clock = Clock()
    t = InflightTracker(clock)
    t.started("a", 10)
    t.started("b", 5)
    assert (t.num_inflight, t.active_prefill_tokens, t.idle_for_s()) == (2, 15, 0.0)
    t.first_output("a")
    t.first_output("a")  # idempotent
    assert t.active_prefill_tokens == 5
    t.finished("b")  # finished before its first output: its backlog goes too
    t.finished("a")
    t.finished("a")
    assert (t.num_inflight, t.active_prefill_tokens, t.num_finished) == (0, 0, 2)
    clock.now += 7
    assert t.idle_for_s() == 7


async def test_canary_runs_only_when_idle_long_enough() -> None:
    clock = Clock()
    tracker = InflightTracker(clock)
    probes: list[float] = []

    async def probe() -> None:
        probes.append(clock.now)

    health = HealthChecker(probe, tracker, idle_s=10, clock=clock)
    assert not health.due()
    clock.now += 10
    assert health.due()
    assert await health.check() == "healthy"
    assert not health.due()  # just checked
    tracker.started("r", 1)
    clock.now += 20
    assert not health.due()  # busy
    tracker.finished("r")
    clock.now += 10
    assert health.due()


async def test_failing_or_hanging_probe_makes_the_worker_unhealthy() -> None:
    tracker = InflightTracker()

    async def broken() -> None:
        raise RuntimeError("engine dead")

    async def hangs() -> None:
        await asyncio.Event().wait()

    health = HealthChecker(broken, tracker, idle_s=1)
    assert await health.check() == "unhealthy"
    assert "engine dead" in (health.report()["last_error"] or "")
    slow = HealthChecker(hangs, tracker, idle_s=1, timeout_s=0.01)
    assert await slow.check() == "unhealthy"
    slow.note_success()
    assert slow.state.status == "healthy"


@dataclass
class Stats:
    num_running_reqs: int
    num_waiting_reqs: int
    kv_cache_usage: float


def test_tap_records_scheduler_stats_and_load_metrics_follow() -> None:
    tap = SchedulerStatsTap()
    assert tap.factory(object(), 0) is tap
    tap.record(None, None)
    assert not tap.updated.is_set()
    tap.record(Stats(3, 2, 0.25), None)
    assert tap.snapshot == SchedulerSnapshot(3, 2, 0.25) and tap.updated.is_set()
    tracker = InflightTracker()
    tracker.started("r", 40)
    m = load_metrics(tap.snapshot, tracker, worker_id=9, total_kv_blocks=1000)
    assert (m.worker_id, m.active_decode_blocks, m.active_prefill_tokens) == (9, 250, 40)
    assert (m.num_running_reqs, m.num_waiting_reqs, m.total_kv_blocks) == (3, 2, 1000)


@pytest.fixture
def app_parts() -> tuple[InflightTracker, HealthChecker, CollectorRegistry]:
    tracker = InflightTracker()

    async def probe() -> None:
        return None

    health = HealthChecker(probe, tracker, idle_s=5)
    registry = CollectorRegistry()
    registry.register(WorkerCollector("tiny", 7, tracker, None, health))
    return tracker, health, registry


async def test_metrics_and_health_endpoints(
    app_parts: tuple[InflightTracker, HealthChecker, CollectorRegistry],
) -> None:
    tracker, health, registry = app_parts
    tracker.started("r", 3)
    app = build_app(lambda: [registry], lambda: health.report(model_name="tiny"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
        text = (await client.get("/metrics")).text
        assert 'stator_worker_inflight_requests{model="tiny",worker_id="7"} 1.0' in text
        assert 'stator_worker_healthy{model="tiny",worker_id="7"} 1.0' in text
        reply = await client.get("/health")
        assert reply.status_code == 200
        assert reply.json()["status"] == "healthy" and reply.json()["model_name"] == "tiny"
        health.state.status = "unhealthy"
        assert (await client.get("/health")).status_code == 503

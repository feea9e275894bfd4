import pytest

from stator.errors import ServiceUnavailableError
from stator.router.config import RouterConfig
from stator.router.queue import (
    Admission,
    AdmissionQueue,
    BusyThresholds,
    QueuedRequest,
    priority_weight,
)
from stator.router.simple import WorkerLoad


def _load(w: int, decode: int = 0, prefill: int = 0, total: int | None = 100) -> WorkerLoad:
    return WorkerLoad(w, decode, prefill, 0, total)


def _req(rid: str, priority: int = 0, arrival: float = 0.0, work: int = 100) -> QueuedRequest[str]:
    return QueuedRequest(rid, priority, arrival, work, payload=rid)


def test_decode_threshold_is_a_fraction_of_total_blocks() -> None:
    th = BusyThresholds(active_decode_blocks_threshold=0.5)
    assert not th.is_busy(_load(1, decode=50))
    assert th.is_busy(_load(1, decode=51))
    assert not th.is_busy(_load(1, decode=10_000, total=None))  # capacity unknown: not judged


def test_prefill_threshold_is_a_token_count_and_unset_means_off() -> None:
    th = BusyThresholds(active_prefill_tokens_threshold=1000)
    assert not th.is_busy(_load(1, prefill=1000))
    assert th.is_busy(_load(1, prefill=1001))
    assert not BusyThresholds().is_busy(_load(1, decode=100, prefill=10**9))


def test_rejects_only_when_every_worker_is_busy() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(
        thresholds=BusyThresholds(active_prefill_tokens_threshold=10)
    )
    assert q.offer(_req("a"), [_load(1, prefill=50), _load(2)]) is Admission.ADMIT
    assert q.busy_workers([_load(1, prefill=50), _load(2)]) == {1}
    assert q.offer(_req("b"), [_load(1, prefill=50), _load(2, prefill=11)]) is Admission.REJECT
    assert q.offer(_req("c"), []) is Admission.ADMIT  # no workers is not "busy" (no-instance)
    err = q.rejection_error()
    assert isinstance(err, ServiceUnavailableError)
    assert err.status_code == 503 and err.retry_after_s > 0


def test_fcfs_orders_by_priority_then_arrival_and_waits_for_a_free_worker() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(
        "fcfs", max_size=3, thresholds=BusyThresholds(active_prefill_tokens_threshold=0)
    )
    busy = [_load(1, prefill=5)]
    assert q.offer(_req("low", 0, 1.0), busy) is Admission.QUEUED
    assert q.offer(_req("high", 5, 2.0), busy) is Admission.QUEUED
    assert q.offer(_req("low2", 0, 0.5), busy) is Admission.QUEUED
    assert q.offer(_req("full", 9, 3.0), busy) is Admission.REJECT
    assert q.pop_ready(busy) is None
    free = [_load(1)]
    # a worker is free but the queue is full: route it now rather than reject
    assert q.offer(_req("late", 0, 4.0), free) is Admission.ADMIT
    assert len(q) == 3
    order = []
    while (item := q.pop_ready(free)) is not None:
        order.append(item.request_id)
    assert order == ["high", "low2", "low"]


def test_wspt_prefers_small_work_scaled_by_priority() -> None:
    q: AdmissionQueue[str] = AdmissionQueue("wspt", max_size=10)
    busy_th = BusyThresholds(active_prefill_tokens_threshold=0)
    q.thresholds = busy_th
    busy = [_load(1, prefill=1)]
    q.offer(_req("big", 0, 0.0, work=1000), busy)
    q.offer(_req("small", 0, 1.0, work=10), busy)
    q.offer(_req("big-urgent", 200, 2.0, work=1000), busy)  # weight 201 / 1000 > 1 / 10
    q.offer(_req("zero-work", 0, 3.0, work=0), busy)  # work clamps to 1
    order = [q.pop().request_id for _ in range(4)]  # type: ignore[union-attr]
    assert order == ["zero-work", "big-urgent", "small", "big"]
    assert priority_weight(-1) == 0.5 and priority_weight(2) == 3.0


def test_remove_drops_a_waiting_request() -> None:
    q: AdmissionQueue[str] = AdmissionQueue(
        max_size=100, thresholds=BusyThresholds(active_prefill_tokens_threshold=0)
    )
    busy = [_load(1, prefill=1)]
    for i in range(50):
        q.offer(_req(f"r{i}", arrival=float(i)), busy)
    for i in range(49):
        assert q.remove(f"r{i}")
    assert not q.remove("r0")
    assert "r49" in q and len(q) == 1
    assert q.pop().request_id == "r49"  # type: ignore[union-attr]
    assert q.pop() is None


def test_from_config_and_bad_arguments() -> None:
    cfg = RouterConfig(
        router_queue_policy="wspt", router_max_queue_size=7, active_decode_blocks_threshold=0.9
    )
    q: AdmissionQueue[str] = AdmissionQueue.from_config(cfg)
    assert (q.policy, q.max_size, q.thresholds.active_decode_blocks_threshold) == ("wspt", 7, 0.9)
    with pytest.raises(ValueError):
        AdmissionQueue("lifo")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AdmissionQueue(max_size=-1)
    q.offer(_req("a"), [_load(1, decode=100)])
    with pytest.raises(ValueError, match="already queued"):
        q.offer(_req("a"), [_load(1, decode=100)])

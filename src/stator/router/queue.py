"""Admission in front of the workers: busy detection, rejection, and a priority queue. No I/O.

Busy (Dynamo's request-rejection semantics): a worker is busy when its active decode blocks
exceed ``active_decode_blocks_threshold`` times its total KV blocks (a fraction in [0, 1]; skipped
while its total is unknown), or when its active prefill tokens exceed
``active_prefill_tokens_threshold`` (a token count). Unset thresholds are off. When every worker
is busy a new request waits in the queue if there is room (``max_size``), else it is rejected:
the frontend answers 503 with ``Retry-After`` (``rejection_error``).

Queue order (``--router-queue-policy``): ``fcfs`` — higher ``priority``
(``nvext.agent_hints.priority``) first, then earlier arrival; ``wspt`` — weighted shortest
processing time: larger ``weight(priority) / work`` first, ``work`` = max(1, new prefill tokens)
(Dynamo's queue ``scheduling_cost = max(1, uncached_tokens)``), then earlier arrival.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

from stator.errors import ServiceUnavailableError
from stator.router.config import QueuePolicy, RouterConfig
from stator.router.simple import WorkerLoad

T = TypeVar("T")
DEFAULT_RETRY_AFTER_S = 1.0


@dataclass(frozen=True, slots=True)
class BusyThresholds:
    """``active_decode_blocks_threshold``: fraction of total blocks; ``active_prefill_tokens_
    threshold``: tokens. None = that check is off."""

    active_decode_blocks_threshold: float | None = None
    active_prefill_tokens_threshold: int | None = None

    @classmethod
    def from_config(cls, config: RouterConfig) -> BusyThresholds:
        """The thresholds set by ``--active-*-threshold``."""
        return cls(config.active_decode_blocks_threshold, config.active_prefill_tokens_threshold)

    def is_busy(self, load: WorkerLoad) -> bool:
        """True when ``load`` exceeds either threshold (strictly)."""
        frac = self.active_decode_blocks_threshold
        total = load.total_kv_blocks
        if frac is not None and total and load.active_decode_blocks > frac * total:
            return True
        tokens = self.active_prefill_tokens_threshold
        return tokens is not None and load.active_prefill_tokens > tokens


class Admission(enum.Enum):
    """What to do with a new request: route it now, it waits in the queue, or reject it."""

    ADMIT = "admit"
    QUEUED = "queued"
    REJECT = "reject"


@dataclass(frozen=True, slots=True)
class QueuedRequest(Generic[T]):
    """A waiting request. ``work_tokens``: predicted prefill work (tokens); ``payload``: what
    the caller needs to route it later."""

    request_id: str
    priority: int
    arrival_s: float
    work_tokens: int
    payload: T


def priority_weight(priority: int) -> float:
    """WSPT weight of a priority: ``1 + p`` for ``p >= 0``, ``1 / (1 - p)`` below (so each step
    of priority changes the weight monotonically and the weight stays > 0)."""
    return 1.0 + priority if priority >= 0 else 1.0 / (1.0 - priority)


class AdmissionQueue(Generic[T]):
    """Busy detection plus a bounded priority queue.

    ``policy``: ``fcfs`` or ``wspt``; ``max_size``: waiting requests allowed (0 = reject as soon
    as every worker is busy); ``thresholds``: the busy thresholds.

    Raises:
        ValueError: unknown policy or negative ``max_size``.
    """

    def __init__(
        self,
        policy: QueuePolicy = "fcfs",
        *,
        max_size: int = 0,
        thresholds: BusyThresholds | None = None,
    ) -> None:
        if policy not in ("fcfs", "wspt"):
            raise ValueError(f"unknown queue policy {policy!r}")
        if max_size < 0:
            raise ValueError(f"max_size must be >= 0, got {max_size}")
        self.policy = policy
        self.max_size = max_size
        self.thresholds = thresholds if thresholds is not None else BusyThresholds()
        self._heap: list[tuple[float, float, int, str]] = []
        self._waiting: dict[str, QueuedRequest[T]] = {}
        self._seq = itertools.count()

    @classmethod
    def from_config(cls, config: RouterConfig) -> AdmissionQueue[T]:
        """The queue set by ``--router-queue-policy``, ``--router-max-queue-size`` and the
        ``--active-*-threshold`` flags."""
        return cls(
            config.router_queue_policy,
            max_size=config.router_max_queue_size,
            thresholds=BusyThresholds.from_config(config),
        )

    # -- busy ----------------------------------------------------------------------------------

    def busy_workers(self, loads: Iterable[WorkerLoad]) -> set[int]:
        """Ids of the busy workers among ``loads``."""
        is_busy = self.thresholds.is_busy
        return {load.worker_id for load in loads if is_busy(load)}

    def all_busy(self, loads: Iterable[WorkerLoad]) -> bool:
        """True when there is at least one worker and every one is busy."""
        loads = list(loads)
        return bool(loads) and len(self.busy_workers(loads)) == len(loads)

    # -- queue ---------------------------------------------------------------------------------

    def offer(self, request: QueuedRequest[T], loads: Iterable[WorkerLoad]) -> Admission:
        """Decide on a new request given the workers' current ``loads``.

        ADMIT: route it now (some worker is free and nobody waits). QUEUED: it was added to the
        queue (drain with ``pop_ready``). REJECT: every worker is busy and the queue is full.

        Raises:
            ValueError: ``request.request_id`` is already waiting.
        """
        if request.request_id in self._waiting:
            raise ValueError(f"request {request.request_id!r} is already queued")
        busy = self.all_busy(loads)
        if not busy and not self._waiting:
            return Admission.ADMIT
        if len(self._waiting) < self.max_size:
            self._push(request)
            return Admission.QUEUED
        return Admission.REJECT if busy else Admission.ADMIT

    def pop_ready(self, loads: Iterable[WorkerLoad]) -> QueuedRequest[T] | None:
        """The next waiting request by policy, if some worker is free; else None."""
        if not self._waiting or self.all_busy(loads):
            return None
        return self.pop()

    def pop(self) -> QueuedRequest[T] | None:
        """The next waiting request by policy regardless of load (None when empty)."""
        while self._heap:
            *_, request_id = heapq.heappop(self._heap)
            request = self._waiting.pop(request_id, None)
            if request is not None:
                return request
        return None

    def remove(self, request_id: str) -> bool:
        """Drop a waiting request (its client went away). False if it was not waiting."""
        if self._waiting.pop(request_id, None) is None:
            return False
        if len(self._heap) > 2 * len(self._waiting) + 16:  # drop stale heap entries
            self._heap = [key for key in self._heap if key[-1] in self._waiting]
            heapq.heapify(self._heap)
        return True

    def __len__(self) -> int:
        return len(self._waiting)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._waiting

    def rejection_error(self) -> ServiceUnavailableError:
        """The error to raise for a rejected request (HTTP 503 with ``Retry-After``)."""
        return ServiceUnavailableError(
            "all workers are busy; retry later", retry_after_s=DEFAULT_RETRY_AFTER_S
        )

    def _push(self, request: QueuedRequest[T]) -> None:
        if self.policy == "fcfs":
            primary = -float(request.priority)
        else:
            primary = -priority_weight(request.priority) / max(1, request.work_tokens)
        self._waiting[request.request_id] = request
        key = (primary, request.arrival_s, next(self._seq), request.request_id)
        heapq.heappush(self._heap, key)

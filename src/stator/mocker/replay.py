"""Offline replay: a discrete-event simulation of N mocker engines behind a router, virtual clock.

The event order at one instant is Dynamo's offline replay's (``replay/offline/agg.rs``): steps
that end now deliver their outputs (the router hears first tokens and finishes), then requests
arriving now are routed and queued at their worker, then every idle worker with work starts a
step. A step's KV events reach the router when the step starts (an instant event plane) and its
load metrics with them. Engines fuse decode-only steps up to the next arrival: token times and the
KV events the router has seen at every routing decision stay the same; load metrics then come
once per fused run (as of its end) instead of once per step.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stator.bench.report import LatencySketch, RequestRecord, summarize
from stator.bench.trace import TraceRequest, synthesize_token_ids
from stator.mocker.config import MockerConfig
from stator.mocker.engine import MockEngine, StepResult
from stator.mocker.sequence import EngineRequest
from stator.router.base import RouterCore


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """Replay settings. ``trace_block_size``: tokens per trace hash id. ``seed``: token ids of
    prompts and outputs. ``record_kv_events``: feed KV events to the router (off for routers
    that ignore them). ``fuse_decode_steps``: let engines fuse decode-only steps (same result,
    faster)."""

    num_workers: int
    trace_block_size: int = 512
    seed: int = 0
    record_kv_events: bool = True
    fuse_decode_steps: bool = True


@dataclass(slots=True)
class ReplayResult:
    """Per-request records (trace order), pooled inter-token gaps, and the simulated span."""

    records: list[RequestRecord]
    itl: LatencySketch
    duration_ms: float
    num_steps: int
    worker_of: list[int]

    def summary(self, wall_time_ms: float) -> dict[str, float | int]:
        """The report summary (``stator.bench.report.summarize``)."""
        return summarize(
            self.records, self.itl, duration_ms=self.duration_ms, wall_time_ms=wall_time_ms
        )


class ReplaySimulation:
    """Replays ``requests`` (arrival order) through ``options.num_workers`` engines and
    ``router`` (a fresh ``RouterCore``; workers 0..N-1 are added to it)."""

    def __init__(
        self,
        requests: Sequence[TraceRequest],
        config: MockerConfig,
        router: RouterCore,
        options: ReplayOptions,
    ) -> None:
        self.requests = list(requests)
        self.config = config
        self.router = router
        self.options = options
        self.engines = [
            MockEngine(config, w, options.seed + w, record_kv_events=options.record_kv_events)
            for w in range(options.num_workers)
        ]
        for w in range(options.num_workers):
            router.add_worker(w)
        self.records = [RequestRecord(r.timestamp_ms, r.input_length) for r in self.requests]
        self.worker_of = [-1] * len(self.requests)
        self.itl = LatencySketch()
        self._busy = [False] * options.num_workers
        self._ends: list[tuple[float, int, int]] = []  # (end_ms, sequence, worker)
        self._pending: dict[int, StepResult] = {}
        self._seq = 0
        self._num_steps = 0

    def run(self) -> ReplayResult:
        """Simulate to the end.

        Raises:
            RuntimeError: a worker with queued work cannot make progress (a simulator bug).
        """
        arrivals = self.requests
        next_arrival = 0
        last_ms = 0.0
        while next_arrival < len(arrivals) or self._ends:
            t_arrival = (
                arrivals[next_arrival].timestamp_ms if next_arrival < len(arrivals) else math.inf
            )
            now = min(t_arrival, self._ends[0][0] if self._ends else math.inf)
            while self._ends and self._ends[0][0] <= now:
                _, _, worker = heapq.heappop(self._ends)
                self._deliver(worker)
            while next_arrival < len(arrivals) and arrivals[next_arrival].timestamp_ms <= now:
                self._arrive(next_arrival, now)
                next_arrival += 1
            horizon = (
                arrivals[next_arrival].timestamp_ms if next_arrival < len(arrivals) else math.inf
            )
            self._drive(now, horizon)
            last_ms = max(last_ms, now)
        return ReplayResult(self.records, self.itl, last_ms, self._num_steps, self.worker_of)

    # -- events --------------------------------------------------------------------------------

    def _arrive(self, index: int, now: float) -> None:
        request = self.requests[index]
        bs = self.options.trace_block_size
        tokens = synthesize_token_ids(
            request.hash_ids,
            request.input_length,
            bs,
            vocab_size=self.config.vocab_size,
            seed=self.options.seed,
        )
        request_id = f"r{index}"
        # The router reads tokens by index, length and numpy conversion; an array serves.
        decision = self.router.route(request_id, tokens, now / 1000.0)
        worker = decision.worker_id
        self.worker_of[index] = worker
        engine_request = EngineRequest(
            request_id, tokens, max_tokens=request.output_length, ignore_eos=True
        )
        self.engines[worker].add_request(engine_request, now)

    def _drive(self, now: float, horizon: float) -> None:
        fuse = self.options.fuse_decode_steps
        for worker, engine in enumerate(self.engines):
            if self._busy[worker] or not engine.has_work:
                continue
            result = engine.step(now, horizon_ms=horizon if fuse else None)
            self._num_steps += result.num_passes
            if result.kv_events is not None:
                self.router.apply_kv_events(result.kv_events)
            self.router.apply_load_metrics(result.metrics)
            if result.end_ms <= now and not result.outputs:
                raise RuntimeError(f"replay stalled: worker {worker} made no progress at {now} ms")
            self._busy[worker] = True
            self._pending[worker] = result
            heapq.heappush(self._ends, (result.end_ms, self._seq, worker))
            self._seq += 1

    def _deliver(self, worker: int) -> None:
        result = self._pending.pop(worker)
        self._busy[worker] = False
        ends = result.pass_end_ms
        num_ending = [0] * (len(ends) + 1)  # decoding outputs by token count
        for out in result.outputs:
            index = int(out.request_id[1:])
            record = self.records[index]
            if out.num_new_tokens:
                self._record_tokens(record, out.num_new_tokens, ends, num_ending)
            if out.is_first:
                record.cached_tokens = out.cached_tokens or 0
                self.router.on_first_token(out.request_id, ends[0] / 1000.0)
            if out.finish_reason is not None:
                record.completed = out.finish_reason in ("length", "stop")
                record.cached_tokens = out.reused_tokens or record.cached_tokens
                self.router.on_finish(out.request_id, result.end_ms / 1000.0)
        if len(ends) > 1:
            # Gaps between consecutive fused steps, shared by every output still decoding then:
            # gap j (j >= 1) has one sample per output with more than j tokens.
            gaps = np.diff(ends)
            weights = np.cumsum(num_ending[:1:-1])[::-1].astype(np.float64)
            self.itl.add_many(gaps.tolist(), weights.tolist())

    def _record_tokens(
        self, record: RequestRecord, num: int, ends: list[float], num_ending: list[int]
    ) -> None:
        """Tokens of one output land on the step's first ``num`` pass ends."""
        last = record.last_token_ms
        if last is None:
            record.first_token_ms = ends[0]
            for j in range(1, num):  # not produced by the engine; kept for completeness
                self.itl.add(ends[j] - ends[j - 1])
        else:
            self.itl.add(ends[0] - last)
            num_ending[num] += 1
        record.last_token_ms = ends[num - 1]
        record.output_tokens += num


def run_replay(
    requests: Sequence[TraceRequest],
    config: MockerConfig,
    router: RouterCore,
    options: ReplayOptions,
) -> tuple[ReplayResult, float]:
    """Simulate and time it: returns the result and the wall time in ms."""
    start = time.perf_counter()
    result = ReplaySimulation(requests, config, router, options).run()
    return result, (time.perf_counter() - start) * 1000.0

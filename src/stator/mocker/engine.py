"""``MockEngine``: the simulated vLLM engine core. No I/O; the caller owns the clock.

    engine = MockEngine(MockerConfig(), worker_id=7, rng_seed=0)
    engine.add_request(EngineRequest("r1", prompt_ids, max_tokens=16), now_ms=0.0)
    while engine.has_work:
        result = engine.step(now_ms)           # plan and "run" one step starting at now_ms
        now_ms = result.end_ms                 # outputs, KV events, metrics as of the step end

A step's outputs are all produced at its end: every request that decodes gets one token, every
request whose prefill completes gets its first token. A step lasts prefill time plus decode time
(``stator.mocker.timing``); decode time counts only requests emitting a token that is not their
first.

Offline replay passes ``horizon_ms`` (the next moment something outside the engine happens): when
only decoding requests run, the engine then fuses consecutive decode steps into one result that
ends before the first request finishes, or at the first step that starts at or after the horizon.
The fused result equals the single steps it replaces (same token times and blocks); only the KV
events come as one batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stator.errors import ContextLengthError, InvalidRequestError
from stator.kv.block_pool import BlockPool
from stator.mocker.config import MockerConfig
from stator.mocker.kv_cache import KvCacheManager
from stator.mocker.scheduler import Scheduler
from stator.mocker.sequence import EngineRequest, Sequence, TokenArray, draw_outputs
from stator.mocker.timing import DECODE_A, DECODE_B, DECODE_C, MIN_DECODE_MS, TimingModel
from stator.protocols.engine import FinishReason
from stator.protocols.kv_events import KvCacheDump, KvEventBatch, LoadMetrics


@dataclass(slots=True)
class RequestOutput:
    """What one request produced in a step.

    ``num_new_tokens``: tokens generated (their ids: ``token_ids``). ``is_first``: they include
    the request's first token; then ``cached_tokens`` is the prompt tokens served from the prefix
    cache. ``finish_reason``: set when the request ended (``error`` when it can never fit);
    then ``reused_tokens`` is the most tokens it found cached at any admission (Dynamo's
    per-request reuse, which counts recomputed output tokens after a preemption).
    """

    request_id: str
    num_new_tokens: int
    is_first: bool = False
    cached_tokens: int | None = None
    finish_reason: FinishReason | None = None
    error: str | None = None
    reused_tokens: int | None = None
    _source: TokenArray | None = None
    _start: int = 0

    @property
    def token_ids(self) -> list[int]:
        """The generated token ids (length ``num_new_tokens``)."""
        if self._source is None or self.num_new_tokens == 0:
            return []
        return [int(t) for t in self._source[self._start : self._start + self.num_new_tokens]]


@dataclass(slots=True)
class StepResult:
    """One engine step (or ``num_passes`` fused decode steps) from ``start_ms`` to ``end_ms``.

    ``pass_end_ms``: end of each fused step (one entry for a plain step). ``kv_events``: the
    step's KV events (None when there were none or events are off). ``metrics``: load at the end.
    """

    start_ms: float
    end_ms: float
    outputs: list[RequestOutput]
    kv_events: KvEventBatch | None
    metrics: LoadMetrics
    pass_end_ms: list[float]

    @property
    def duration_ms(self) -> float:
        """Simulated time of the step (ms)."""
        return self.end_ms - self.start_ms

    @property
    def num_passes(self) -> int:
        """Engine steps this result covers."""
        return len(self.pass_end_ms)


class MockEngine:
    """One simulated engine (worker) instance.

    ``worker_id``: stamped on KV events and metrics. ``rng_seed``: seed of the output token ids.
    ``record_kv_events``: build KV events (off when nobody consumes them).
    """

    def __init__(
        self,
        config: MockerConfig,
        worker_id: int = 0,
        rng_seed: int | None = 0,
        *,
        record_kv_events: bool = True,
    ) -> None:
        self.config = config
        self.worker_id = worker_id
        self.pool = BlockPool(
            config.num_gpu_blocks, config.block_size, record_events=record_kv_events
        )
        self.kv = KvCacheManager(self.pool, config.enable_prefix_caching)
        self.scheduler = Scheduler(config, self.kv)
        self.timing = TimingModel(
            config.total_kv_tokens, config.speedup_ratio, config.decode_speedup_ratio
        )
        self._rng = np.random.default_rng(rng_seed)
        self._requests: dict[str, Sequence] = {}
        self._event_id = 0

    # -- requests ------------------------------------------------------------------------------

    @property
    def has_work(self) -> bool:
        """Whether a request is waiting or running."""
        return self.scheduler.has_work

    @property
    def num_requests(self) -> int:
        """Requests waiting or running."""
        return len(self._requests)

    def add_request(
        self, request: EngineRequest, now_ms: float, *, block_hashes: list[int] | None = None
    ) -> None:
        """Queue ``request`` (arrived at ``now_ms``). ``block_hashes``: its prompt's sequence
        hashes at this engine's block size, if the caller already has them.

        Raises:
            InvalidRequestError: duplicate request id, empty prompt or negative ``max_tokens``.
            ContextLengthError: the prompt does not fit ``max_model_len``.
        """
        if request.request_id in self._requests:
            raise InvalidRequestError(f"request {request.request_id!r} is already running")
        max_tokens = self._max_tokens(request)
        stops = () if request.ignore_eos else request.stop_token_ids
        output_ids, stop_at = draw_outputs(
            self._rng, max_tokens, self.config.vocab_size, stops, request.min_tokens
        )
        seq = Sequence(
            request.request_id,
            np.asarray(request.token_ids, dtype=np.uint32),
            output_ids,
            self.config.block_size,
            stop_at=stop_at,
            arrival_ms=now_ms,
            block_hashes=block_hashes,
        )
        self._requests[seq.request_id] = seq
        self.scheduler.add(seq)

    def abort(self, request_id: str) -> bool:
        """Drop a request and free its blocks. False when it is not here (already done)."""
        seq = self._requests.pop(request_id, None)
        if seq is None:
            return False
        self.scheduler.remove(seq)
        seq.finish_reason = "cancelled"
        return True

    def _max_tokens(self, request: EngineRequest) -> int:
        max_tokens = (
            self.config.default_max_tokens if request.max_tokens is None else request.max_tokens
        )
        if max_tokens < 0:
            raise InvalidRequestError("max_tokens must be >= 0", param="max_tokens")
        limit = self.config.max_model_len
        if limit is not None:
            room = limit - len(request.token_ids)
            if room <= 0:
                raise ContextLengthError(
                    f"prompt of {len(request.token_ids)} tokens exceeds max_model_len {limit}"
                )
            max_tokens = min(max_tokens, room)
        return max_tokens

    # -- steps ---------------------------------------------------------------------------------

    def step(self, now_ms: float, *, horizon_ms: float | None = None) -> StepResult:
        """Run one engine step starting at ``now_ms`` (or fused decode steps, see module doc)."""
        if horizon_ms is not None and self._can_fuse():
            window = self._decode_window(now_ms, horizon_ms)
            if window is not None:
                return window
        plan = self.scheduler.schedule()
        count, total_isl, total_prefix = plan.prefill_shape()
        duration = self.timing.prefill_ms(count, total_isl, total_prefix)
        if plan.decoding():
            duration += self.timing.decode_ms(plan.decode_kv_tokens())
        outputs = [self._reject(seq) for seq in plan.rejected]
        outputs.extend(self._emit(seq, 0) for seq in plan.emitting())
        end_ms = now_ms + duration
        return self._result(now_ms, end_ms, outputs, [end_ms])

    def _can_fuse(self) -> bool:
        running = self.scheduler.running
        return (
            not self.scheduler.waiting
            and bool(running)
            and len(running) <= self.config.max_num_batched_tokens
            and all(seq.is_decoding for seq in running)
        )

    def _decode_window(self, now_ms: float, horizon_ms: float) -> StepResult | None:
        running = list(self.scheduler.running)
        max_passes = min(self._emissions_left(seq) for seq in running)
        needed = sum(
            self.kv.blocks_for(seq.num_computed_tokens + max_passes) - seq.num_blocks
            for seq in running
        )
        if not self.pool.can_allocate(needed):
            return None
        pass_end_ms = self._decode_pass_times(now_ms, horizon_ms, running, max_passes)
        num = len(pass_end_ms)
        outputs = []
        for seq in running:
            self.kv.allocate(seq, seq.num_computed_tokens + num)
            seq.num_computed_tokens += num
            seq.num_output_tokens += num - 1
            self.kv.cache_computed(seq)
            outputs.append(self._emit(seq, num - 1))
        return self._result(now_ms, pass_end_ms[-1], outputs, pass_end_ms)

    def _decode_pass_times(
        self, now_ms: float, horizon_ms: float, running: list[Sequence], max_passes: int
    ) -> list[float]:
        """End times of up to ``max_passes`` decode steps, stopping at the first that would
        start at or after ``horizon_ms`` (``TimingModel.decode_ms``, inlined for speed)."""
        timing = self.timing
        scale = 1.0 / (timing.speedup_ratio * timing.decode_speedup_ratio)
        capacity = float(timing.total_kv_tokens)
        kv_tokens = sum(seq.num_tokens for seq in running)
        n = len(running)
        t = now_ms
        ends: list[float] = []
        append = ends.append
        for _ in range(max_passes):
            if ends and t >= horizon_ms:
                break
            u = kv_tokens / capacity if kv_tokens < capacity else 1.0
            ms = DECODE_A * u * u + DECODE_B * u + DECODE_C
            t += (ms if ms > MIN_DECODE_MS else MIN_DECODE_MS) * scale
            kv_tokens += n
            append(t)
        return ends

    def _emissions_left(self, seq: Sequence) -> int:
        left = seq.max_output_tokens - seq.num_output_tokens
        if seq.stop_at is not None:
            left = min(left, seq.stop_at - seq.num_output_tokens + 1)
        if self.config.max_model_len is not None:
            left = min(left, self.config.max_model_len - seq.num_tokens)
        return max(left, 1)

    def _emit(self, seq: Sequence, num_before: int) -> RequestOutput:
        """The step's last token for ``seq`` (``num_before`` tokens already added this step)."""
        start = seq.num_output_tokens - num_before
        index = seq.num_output_tokens
        reason: FinishReason | None = None
        new = num_before
        if seq.stop_at is not None and index == seq.stop_at:
            reason = "stop"
        elif index >= seq.max_output_tokens:
            reason = "length"
        else:
            seq.num_output_tokens += 1
            new += 1
            if seq.num_output_tokens >= seq.max_output_tokens or self._at_max_len(seq):
                reason = "length"
        is_first = start == 0 and new > 0
        if reason is not None:
            self._finish(seq, reason)
        return RequestOutput(
            seq.request_id,
            new,
            is_first=is_first,
            cached_tokens=seq.num_cached_tokens if is_first else None,
            finish_reason=reason,
            reused_tokens=seq.max_cached_tokens if reason is not None else None,
            _source=seq.output_ids,
            _start=start,
        )

    def _at_max_len(self, seq: Sequence) -> bool:
        limit = self.config.max_model_len
        return limit is not None and seq.num_tokens >= limit

    def _reject(self, seq: Sequence) -> RequestOutput:
        self._requests.pop(seq.request_id, None)
        seq.finish_reason = "error"
        message = (
            f"request needs {self.kv.blocks_for(seq.num_tokens)} KV blocks, "
            f"the engine has {self.config.num_gpu_blocks}"
        )
        return RequestOutput(seq.request_id, 0, finish_reason="error", error=message)

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        seq.finish_reason = reason
        self.scheduler.remove(seq)
        self._requests.pop(seq.request_id, None)

    # -- events and metrics --------------------------------------------------------------------

    def _result(
        self, start_ms: float, end_ms: float, outputs: list[RequestOutput], pass_end_ms: list[float]
    ) -> StepResult:
        return StepResult(
            start_ms,
            end_ms,
            outputs,
            self._take_events(start_ms),
            self.metrics(end_ms),
            pass_end_ms,
        )

    def _take_events(self, now_ms: float) -> KvEventBatch | None:
        events = self.pool.take_events()
        if not events:
            return None
        self._event_id += 1
        return KvEventBatch(
            worker_id=self.worker_id,
            event_id=self._event_id,
            events=events,
            timestamp_s=now_ms / 1000.0,
        )

    def metrics(self, now_ms: float) -> LoadMetrics:
        """The engine's load now (blocks in use, prompt tokens not yet prefilled, queues)."""
        sched = self.scheduler
        prefill_tokens = sum(seq.num_prompt_tokens for seq in sched.waiting) + sum(
            max(0, seq.num_prompt_tokens - seq.num_computed_tokens) for seq in sched.running
        )
        return LoadMetrics(
            worker_id=self.worker_id,
            active_decode_blocks=self.pool.num_active,
            active_prefill_tokens=prefill_tokens,
            num_waiting_reqs=len(sched.waiting),
            num_running_reqs=len(sched.running),
            kv_cache_usage=self.pool.usage,
            total_kv_blocks=self.config.num_gpu_blocks,
            timestamp_s=now_ms / 1000.0,
        )

    def dump(self) -> KvCacheDump:
        """Every cached block as stored events, valid as of the last published event id."""
        return KvCacheDump(
            worker_id=self.worker_id, event_id=self._event_id, events=self.pool.dump()
        )

    def reset_prefix_cache(self, now_ms: float = 0.0) -> KvEventBatch | None:
        """Drop the prefix cache (``AllBlocksCleared``); returns the events to publish."""
        self.pool.clear()
        return self._take_events(now_ms)

"""A vLLM-style continuous-batching scheduler: what one engine step computes.

Each step has a token budget (``max_num_batched_tokens``). Running requests go first, in
admission order: a decoding request takes one token, a request in chunked prefill takes as much of
its remaining prompt as the budget allows. Then waiting requests are admitted in FIFO order while
fewer than ``max_num_seqs`` run: the head's cached prefix is looked up, it waits (and blocks the
queue) unless its uncached blocks fit in the blocks no running request holds, and its first chunk
is scheduled. When a running request cannot get a block, the newest running request (LIFO; FIFO:
the oldest) is preempted by recompute: its blocks are freed and it rejoins the queue's head; no
request is admitted in a step that preempted. Semantics follow NVIDIA Dynamo's mocker
(``lib/mocker/src/scheduler/vllm/core.rs``, ``policy.rs``), checked against Dynamo 1.6.1's replay.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from stator.mocker.config import MockerConfig
from stator.mocker.kv_cache import KvCacheManager
from stator.mocker.sequence import SeqStatus, Sequence


class _Outcome(enum.Enum):
    SCHEDULED = "scheduled"
    BLOCKED = "blocked"
    PREEMPTED = "preempted"  # the request itself was preempted


@dataclass(slots=True)
class _Work:
    """What a step does for one request (kept so a preemption can undo it)."""

    seq: Sequence
    num_tokens: int  # tokens computed this step
    computed_before: int


@dataclass(slots=True)
class StepPlan:
    """The outcome of ``Scheduler.schedule``.

    ``work``: scheduled requests in running order. ``batch_count``/``total_isl``/
    ``total_prefix``: prefill batch shape for the timing model (prompt tokens only).
    ``decode_kv_tokens``: sum of the decode batch's sequence lengths. ``admitted``,
    ``preempted``, ``rejected``: requests that entered, left (to the queue) or can never fit.
    """

    budget: int
    work: dict[Sequence, _Work] = field(default_factory=dict)
    admitted: list[Sequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    rejected: list[Sequence] = field(default_factory=list)

    def decoding(self) -> list[Sequence]:
        """The decode batch: requests that emit a token which is not their first (a request
        finishing its prompt prefill emits its first token without joining it; one resuming
        after a preemption does join it, as in Dynamo 1.6.1's replay)."""
        return [
            s for s in self.work if s.num_output_tokens and s.num_computed_tokens == s.num_tokens
        ]

    def prefill_shape(self) -> tuple[int, int, int]:
        """``(batch_count, total_isl, total_prefix)`` over requests that prefill prompt tokens."""
        count = total_isl = total_prefix = 0
        for w in self.work.values():
            prompt = w.seq.num_prompt_tokens
            before = min(w.computed_before, prompt)
            after = min(w.computed_before + w.num_tokens, prompt)
            if after > before:
                count += 1
                total_isl += after
                total_prefix += before
        return count, total_isl, total_prefix

    def decode_kv_tokens(self) -> int:
        """KV tokens of the decode batch (each decoding request's full length)."""
        return sum(seq.num_tokens for seq in self.decoding())

    def emitting(self) -> list[Sequence]:
        """Requests whose every known token is computed after this step (they emit a token)."""
        return [s for s in self.work if s.num_computed_tokens == s.num_tokens]


class Scheduler:
    """Waiting queue, running list and the step planner for one engine."""

    def __init__(self, config: MockerConfig, kv: KvCacheManager) -> None:
        self.config = config
        self.kv = kv
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def has_work(self) -> bool:
        """Whether any request is waiting or running."""
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        """Queue a new request."""
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Take a request out (finished or aborted) and free its blocks."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SeqStatus.WAITING:
            self.waiting.remove(seq)
        self.kv.free(seq)
        seq.status = SeqStatus.FINISHED

    def schedule(self) -> StepPlan:
        """Plan one step: update computed tokens and blocks of every scheduled request."""
        plan = StepPlan(budget=self.config.max_num_batched_tokens)
        index = 0
        while index < len(self.running) and plan.budget > 0:
            seq = self.running[index]
            num_preempted = len(plan.preempted)
            outcome = self._schedule_running(seq, plan)
            if outcome is _Outcome.BLOCKED:
                break
            if outcome is _Outcome.PREEMPTED:
                index = min(index, len(self.running))
            elif len(plan.preempted) != num_preempted:  # FIFO may remove earlier requests
                index = self.running.index(seq) + 1
            else:
                index += 1
        if not plan.preempted:
            self._admit_waiting(plan)
        return plan

    # -- running -------------------------------------------------------------------------------

    def _schedule_running(self, seq: Sequence, plan: StepPlan) -> _Outcome:
        before = seq.num_computed_tokens
        remaining = seq.num_tokens - before
        prompt_left = seq.num_prompt_tokens - before
        if prompt_left > 0 and not self.config.enable_chunked_prefill and prompt_left > plan.budget:
            return _Outcome.BLOCKED
        num = min(remaining, plan.budget)
        if num <= 0:
            return _Outcome.BLOCKED if remaining > 0 else _Outcome.SCHEDULED
        while not self.kv.allocate(seq, before + num):
            victim = self._pick_victim()
            if victim is None:
                return _Outcome.BLOCKED
            self._preempt(victim, plan)
            if victim is seq:
                return _Outcome.PREEMPTED
        self._commit(seq, plan, before, num)
        return _Outcome.SCHEDULED

    def _pick_victim(self) -> Sequence | None:
        if not self.running:
            return None
        return self.running[-1] if self.config.preemption_mode == "lifo" else self.running[0]

    def _preempt(self, victim: Sequence, plan: StepPlan) -> None:
        undone = plan.work.pop(victim, None)
        if undone is not None:
            plan.budget += undone.num_tokens
        self.running.remove(victim)
        self.kv.free(victim)
        victim.num_computed_tokens = 0
        victim.num_preemptions += 1
        victim.status = SeqStatus.WAITING
        self.waiting.appendleft(victim)
        self.num_preemptions += 1
        plan.preempted.append(victim)

    # -- waiting -------------------------------------------------------------------------------

    def _admit_waiting(self, plan: StepPlan) -> None:
        config, kv = self.config, self.kv
        while self.waiting and len(self.running) < config.max_num_seqs and plan.budget > 0:
            seq = self.waiting[0]
            if kv.blocks_for(seq.num_tokens) > config.num_gpu_blocks:
                self.waiting.popleft()
                seq.status = SeqStatus.FINISHED
                plan.rejected.append(seq)
                continue
            match = kv.prefix_match(seq)
            needed = kv.blocks_for(seq.num_tokens) - match.num_active
            if needed > config.num_gpu_blocks - kv.pool.num_active:
                return
            cached = match.num_blocks * kv.block_size
            prompt_left = seq.num_prompt_tokens - cached
            if prompt_left > 0 and not config.enable_chunked_prefill and prompt_left > plan.budget:
                return
            num = min(seq.num_tokens - cached, plan.budget)
            if not kv.allocate(seq, cached + num, match.num_blocks):
                return
            self.waiting.popleft()
            self.running.append(seq)
            seq.status = SeqStatus.RUNNING
            if seq.num_cached_tokens is None:
                seq.num_cached_tokens = min(cached, seq.num_prompt_tokens)
            seq.max_cached_tokens = max(seq.max_cached_tokens, cached)
            plan.admitted.append(seq)
            self._commit(seq, plan, cached, num)

    def _commit(self, seq: Sequence, plan: StepPlan, before: int, num: int) -> None:
        seq.num_computed_tokens = before + num
        self.kv.cache_computed(seq)
        plan.work[seq] = _Work(seq, num, before)
        plan.budget -= num

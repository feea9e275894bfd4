"""Scheduler: chunked prefill, token budget, admission limits, preemption and resumption."""

from __future__ import annotations

import numpy as np

from stator.kv.block_pool import BlockPool
from stator.mocker.config import MockerConfig
from stator.mocker.kv_cache import KvCacheManager
from stator.mocker.scheduler import Scheduler
from stator.mocker.sequence import SeqStatus, Sequence


def _scheduler(**overrides: object) -> Scheduler:
    config = MockerConfig(**overrides)  # type: ignore[arg-type]
    pool = BlockPool(config.num_gpu_blocks, config.block_size)
    return Scheduler(config, KvCacheManager(pool, config.enable_prefix_caching))


def _seq(name: str, prompt_len: int, max_tokens: int, block_size: int, start: int = 0) -> Sequence:
    prompt = np.arange(start, start + prompt_len, dtype=np.uint32)
    outputs = np.arange(max_tokens, dtype=np.uint32) + 100_000
    return Sequence(name, prompt, outputs, block_size)


def _emit(sched: Scheduler) -> list[Sequence]:
    """Run one step's plan and produce the tokens it earns; returns the emitting requests."""
    plan = sched.schedule()
    emitting = plan.emitting()
    for seq in emitting:
        seq.num_output_tokens += 1
        if seq.num_output_tokens == seq.max_output_tokens:
            sched.remove(seq)
    return emitting


def test_long_prompt_is_prefilled_in_budget_sized_chunks() -> None:
    sched = _scheduler(block_size=64, max_num_batched_tokens=8192)
    seq = _seq("a", 10240, 3, 64)
    sched.add(seq)
    first = sched.schedule()
    assert first.work[seq].num_tokens == 8192 and first.emitting() == []
    assert first.prefill_shape() == (1, 8192, 0)
    second = sched.schedule()
    assert second.work[seq].num_tokens == 2048
    assert second.prefill_shape() == (1, 10240, 8192)
    assert second.emitting() == [seq]


def test_decoding_requests_take_one_token_of_the_budget_each() -> None:
    sched = _scheduler(block_size=64, max_num_batched_tokens=8192)
    decoding = _seq("d", 1024, 50, 64)
    sched.add(decoding)
    _emit(sched)  # prefill; first token
    long = _seq("p", 10240, 2, 64, start=50_000)
    sched.add(long)
    plan = sched.schedule()
    assert plan.decoding() == [decoding] and plan.work[decoding].num_tokens == 1
    assert plan.work[long].num_tokens == 8191  # Dynamo 1.6.1 replay: chunk of 8191 here
    assert plan.decode_kv_tokens() == 1025


def test_a_request_admitted_behind_a_full_chunk_waits_for_budget() -> None:
    sched = _scheduler(block_size=64, max_num_batched_tokens=8192)
    big, small = _seq("big", 20480, 2, 64), _seq("small", 512, 2, 64, start=90_000)
    sched.add(big)
    sched.add(small)
    first = sched.schedule()
    assert list(first.work) == [big]
    sched.schedule()  # second chunk of big
    third = sched.schedule()
    assert [(s.request_id, w.num_tokens) for s, w in third.work.items()] == [
        ("big", 4096),
        ("small", 512),
    ]
    assert third.prefill_shape() == (2, 20480 + 512, 16384)


def test_without_chunked_prefill_a_prompt_over_budget_waits() -> None:
    sched = _scheduler(block_size=16, max_num_batched_tokens=100, enable_chunked_prefill=False)
    first, second = _seq("a", 60, 4, 16), _seq("b", 60, 4, 16, start=1000)
    sched.add(first)
    sched.add(second)
    plan = sched.schedule()
    assert list(plan.work) == [first]  # 60 + 60 > 100: b waits whole
    assert second.status is SeqStatus.WAITING


def test_max_num_seqs_caps_running_requests() -> None:
    sched = _scheduler(block_size=16, max_num_seqs=2)
    for i in range(3):
        sched.add(_seq(f"r{i}", 32, 4, 16, start=1000 * i))
    sched.schedule()
    assert [s.request_id for s in sched.running] == ["r0", "r1"]
    assert [s.request_id for s in sched.waiting] == ["r2"]


def test_cached_prefix_is_reused_and_the_last_token_recomputed() -> None:
    sched = _scheduler(block_size=64)
    first = _seq("a", 4096, 1, 64)
    sched.add(first)
    _emit(sched)  # prefill + the only token: finished, blocks cached and inactive
    again = _seq("b", 4096, 1, 64)
    sched.add(again)
    plan = sched.schedule()
    assert again.num_cached_tokens == 4032  # 63 of 64 blocks: at most len - 1 tokens
    assert plan.work[again].num_tokens == 64
    assert plan.prefill_shape() == (1, 4096, 4032)


def test_admission_waits_when_uncached_blocks_do_not_fit() -> None:
    sched = _scheduler(block_size=16, num_gpu_blocks=10)
    holder = _seq("holder", 16 * 6, 50, 16)
    sched.add(holder)
    _emit(sched)
    newcomer = _seq("new", 16 * 5, 2, 16, start=5000)  # needs 5 blocks, 4 not in use
    sched.add(newcomer)
    plan = sched.schedule()
    assert newcomer not in plan.work and newcomer.status is SeqStatus.WAITING


def test_preemption_frees_the_newest_request_and_it_resumes_later() -> None:
    # 6 blocks of 4 tokens; two requests of 8-token prompts grow by decoding until blocks run out.
    sched = _scheduler(block_size=4, num_gpu_blocks=6, max_num_batched_tokens=64)
    old, new = _seq("old", 8, 10, 4), _seq("new", 8, 10, 4, start=500)
    sched.add(old)
    sched.add(new)
    preempted: list[str] = []
    for _ in range(40):
        plan = sched.schedule()
        preempted += [s.request_id for s in plan.preempted]
        for seq in plan.emitting():
            seq.num_output_tokens += 1
            if seq.num_output_tokens == seq.max_output_tokens:
                sched.remove(seq)
        if not sched.has_work:
            break
    assert preempted and preempted[0] == "new"  # LIFO: the newest running request
    assert new.num_preemptions >= 1
    assert not sched.has_work  # both finished, the preempted one after recomputing
    assert old.num_output_tokens == new.num_output_tokens == 10
    assert sched.kv.pool.num_active == 0


def test_preempted_request_rejoins_the_queue_head() -> None:
    sched = _scheduler(block_size=4, num_gpu_blocks=4, max_num_batched_tokens=64, max_num_seqs=2)
    a, b, c = (_seq(n, 7, 20, 4, start=100 * i) for i, n in enumerate("abc"))
    for seq in (a, b, c):
        sched.add(seq)
    for _ in range(10):
        plan = sched.schedule()
        for seq in plan.emitting():
            seq.num_output_tokens += 1
        if plan.preempted:
            assert plan.preempted == [b]
            assert list(sched.waiting)[:2] == [b, c]
            assert plan.admitted == []  # no admission in a step that preempted
            return
    raise AssertionError("expected a preemption")


def test_a_request_that_can_never_fit_is_rejected() -> None:
    sched = _scheduler(block_size=4, num_gpu_blocks=2)
    seq = _seq("huge", 9, 1, 4)
    sched.add(seq)
    plan = sched.schedule()
    assert plan.rejected == [seq] and not sched.has_work

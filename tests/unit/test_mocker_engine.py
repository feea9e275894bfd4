"""MockEngine: outputs, timing against Dynamo 1.6.1's replay, KV events, metrics, abort."""

from __future__ import annotations

import numpy as np
import pytest

from stator.errors import ContextLengthError, InvalidRequestError
from stator.kv.hashing import block_sequence_hashes
from stator.mocker.config import MockerConfig
from stator.mocker.engine import MockEngine, RequestOutput, StepResult
from stator.mocker.sequence import EngineRequest
from stator.protocols.engine import PreprocessedRequest, StopConditions
from stator.protocols.kv_events import AllBlocksCleared, BlockStored


def _prompt(n: int, start: int = 0) -> np.ndarray:
    return np.arange(start, start + n, dtype=np.uint32) % 30000


def _run(engine: MockEngine, now: float = 0.0) -> tuple[dict[str, list[float]], list[StepResult]]:
    """Step until idle; token times per request and the step results."""
    times: dict[str, list[float]] = {}
    results = []
    while engine.has_work:
        result = engine.step(now)
        results.append(result)
        for out in result.outputs:
            times.setdefault(out.request_id, []).extend([result.end_ms] * out.num_new_tokens)
        now = result.end_ms
    return times, results


def test_ignore_eos_generates_exactly_max_tokens_within_vocab() -> None:
    engine = MockEngine(MockerConfig(vocab_size=5), rng_seed=1)
    engine.add_request(
        EngineRequest(
            "r", _prompt(100), max_tokens=37, ignore_eos=True, stop_token_ids=frozenset({0})
        ),
        0.0,
    )
    tokens: list[int] = []
    reasons = []
    while engine.has_work:
        for out in engine.step(0.0).outputs:
            tokens += out.token_ids
            reasons.append(out.finish_reason)
    assert len(tokens) == 37 and set(tokens) <= set(range(5))
    assert reasons[-1] == "length" and reasons.count("length") == 1


def test_stop_tokens_end_generation_without_ignore_eos() -> None:
    engine = MockEngine(MockerConfig(vocab_size=2), rng_seed=3)
    engine.add_request(
        EngineRequest("r", _prompt(10), max_tokens=500, stop_token_ids=frozenset({1})), 0.0
    )
    outputs: list[RequestOutput] = []
    while engine.has_work:
        outputs += engine.step(0.0).outputs
    tokens = [t for out in outputs for t in out.token_ids]
    assert outputs[-1].finish_reason == "stop"
    assert len(tokens) < 500 and 1 not in tokens


def test_output_ids_depend_only_on_the_seed() -> None:
    def tokens(seed: int) -> list[int]:
        engine = MockEngine(MockerConfig(), rng_seed=seed)
        engine.add_request(EngineRequest("r", _prompt(64), max_tokens=20, ignore_eos=True), 0.0)
        return [t for r in _run(engine)[1] for out in r.outputs for t in out.token_ids]

    assert tokens(7) == tokens(7)
    assert tokens(7) != tokens(8)


def test_single_request_timing_matches_dynamo_replay() -> None:
    # Dynamo 1.6.1 replay, one worker, defaults: a 6760-token prompt with 3 output tokens
    # (the Mooncake trace's fifth request) has TTFT 138.380114 ms and e2e 150.554515 ms.
    engine = MockEngine(MockerConfig())
    engine.add_request(EngineRequest("r", _prompt(6760), max_tokens=3, ignore_eos=True), 0.0)
    times, _ = _run(engine)
    assert times["r"][0] == pytest.approx(138.380114, abs=1e-5)
    assert times["r"][-1] == pytest.approx(150.554515, abs=1e-5)


def test_prefill_during_decode_adds_both_times_like_dynamo() -> None:
    # Dynamo 1.6.1 replay: A (1024 tokens, 100 out) at 0 ms, B (4096 tokens, 5 out) at 100 ms:
    # B's first token comes 93.5567 ms after its arrival; A ends at 692.8227 ms.
    engine = MockEngine(MockerConfig())
    engine.add_request(EngineRequest("a", _prompt(1024), max_tokens=100, ignore_eos=True), 0.0)
    now, times = 0.0, {}
    while engine.has_work:
        if now >= 100.0 and "b" not in times:
            engine.add_request(
                EngineRequest("b", _prompt(4096, 5000), max_tokens=5, ignore_eos=True), 100.0
            )
            times["b"] = []
        result = engine.step(now)
        for out in result.outputs:
            times.setdefault(out.request_id, []).extend([result.end_ms] * out.num_new_tokens)
        now = result.end_ms
    assert times["b"][0] - 100.0 == pytest.approx(93.5567, abs=1e-3)
    assert times["a"][-1] == pytest.approx(692.8227, abs=1e-3)


def test_cached_tokens_reported_with_the_first_token() -> None:
    engine = MockEngine(MockerConfig())
    for name in ("first", "second"):
        engine.add_request(EngineRequest(name, _prompt(4096), max_tokens=2, ignore_eos=True), 0.0)
        firsts = [o for r in _run(engine)[1] for o in r.outputs if o.is_first]
        assert len(firsts) == 1
        assert firsts[0].cached_tokens == (0 if name == "first" else 4032)


def test_kv_events_have_increasing_ids_parent_hashes_and_token_ids() -> None:
    engine = MockEngine(MockerConfig(block_size=16), worker_id=9)
    prompt = _prompt(40)
    engine.add_request(EngineRequest("r", prompt, max_tokens=30, ignore_eos=True), 0.0)
    batches = [r.kv_events for r in _run(engine)[1] if r.kv_events is not None]
    assert [b.event_id for b in batches] == list(range(1, len(batches) + 1))
    assert all(b.worker_id == 9 for b in batches)
    stored = [e for b in batches for e in b.events if isinstance(e, BlockStored)]
    hashes = [h for e in stored for h in e.block_hashes]
    assert hashes[:2] == block_sequence_hashes(prompt.tolist(), 16)
    assert len(hashes) == (40 + 30 - 1) // 16  # full computed blocks (the last token is not)
    assert stored[0].token_ids == prompt[:32].tolist()
    assert all(len(e.token_ids) == 16 * len(e.block_hashes) for e in stored)
    chain = [None, *hashes[:-1]]
    assert all(e.parent_block_hash == chain[hashes.index(e.block_hashes[0])] for e in stored)


def test_abort_frees_blocks_and_metrics_follow_load() -> None:
    engine = MockEngine(MockerConfig(block_size=16, num_gpu_blocks=100))
    engine.add_request(EngineRequest("a", _prompt(100), max_tokens=50, ignore_eos=True), 0.0)
    engine.add_request(EngineRequest("b", _prompt(60, 7000), max_tokens=50, ignore_eos=True), 0.0)
    metrics = engine.metrics(0.0)
    assert (metrics.num_waiting_reqs, metrics.active_prefill_tokens) == (2, 160)
    result = engine.step(0.0)
    assert (result.metrics.num_running_reqs, result.metrics.active_prefill_tokens) == (2, 0)
    assert result.metrics.active_decode_blocks == 7 + 4
    assert result.metrics.kv_cache_usage == pytest.approx(11 / 100)
    assert engine.abort("a") and not engine.abort("a")
    assert engine.metrics(0.0).active_decode_blocks == 4
    engine.abort("b")
    assert engine.pool.num_active == 0 and not engine.has_work


def test_fused_decode_steps_equal_single_steps() -> None:
    def token_times(horizon: float | None) -> dict[str, list[float]]:
        engine = MockEngine(MockerConfig(block_size=16))
        engine.add_request(EngineRequest("a", _prompt(300), max_tokens=40, ignore_eos=True), 0.0)
        engine.add_request(
            EngineRequest("b", _prompt(90, 900), max_tokens=25, ignore_eos=True), 0.0
        )
        times: dict[str, list[float]] = {}
        now = 0.0
        while engine.has_work:
            result = engine.step(now, horizon_ms=horizon)
            for out in result.outputs:
                times.setdefault(out.request_id, []).extend(
                    result.pass_end_ms[: out.num_new_tokens]
                )
            now = result.end_ms
        return times

    single = token_times(None)
    fused = token_times(1e12)
    assert fused.keys() == single.keys()
    for name in single:
        assert fused[name] == pytest.approx(single[name])


def test_dump_reflects_cached_blocks() -> None:
    engine = MockEngine(MockerConfig(block_size=16))
    engine.add_request(EngineRequest("r", _prompt(64), max_tokens=1, ignore_eos=True), 0.0)
    _run(engine)
    dump = engine.dump()
    assert dump.event_id >= 1
    assert [e.block_hashes[0] for e in dump.events] == block_sequence_hashes(
        _prompt(64).tolist(), 16
    )


def test_bad_requests_are_rejected_clearly() -> None:
    engine = MockEngine(MockerConfig(max_model_len=50))
    engine.add_request(EngineRequest("r", _prompt(10)), 0.0)
    with pytest.raises(InvalidRequestError):
        engine.add_request(EngineRequest("r", _prompt(10)), 0.0)
    with pytest.raises(InvalidRequestError):
        engine.add_request(EngineRequest("empty", _prompt(0)), 0.0)
    with pytest.raises(ContextLengthError):
        engine.add_request(EngineRequest("long", _prompt(60)), 0.0)


def test_a_request_larger_than_the_cache_fails_with_an_error_output() -> None:
    engine = MockEngine(MockerConfig(block_size=16, num_gpu_blocks=4))
    engine.add_request(EngineRequest("big", _prompt(100), max_tokens=2), 0.0)
    out = engine.step(0.0).outputs
    assert [(o.request_id, o.finish_reason) for o in out] == [("big", "error")]
    assert out[0].error and not engine.has_work


def test_from_preprocessed_maps_stop_conditions() -> None:
    wire = PreprocessedRequest(
        token_ids=[1, 2, 3],
        request_id="x",
        eos_token_ids=[2],
        stop_conditions=StopConditions(max_tokens=9, ignore_eos=True, stop_token_ids=[5]),
    )
    request = EngineRequest.from_preprocessed(wire)
    assert request.request_id == "x" and request.max_tokens == 9 and request.ignore_eos
    assert request.stop_token_ids == frozenset({2, 5})
    assert request.token_ids.tolist() == [1, 2, 3]


def test_reset_prefix_cache_clears_and_forgets_blocks() -> None:
    engine = MockEngine(MockerConfig(block_size=16))
    engine.add_request(EngineRequest("a", _prompt(64), max_tokens=1, ignore_eos=True), 0.0)
    _run(engine)
    batch = engine.reset_prefix_cache(5.0)
    assert batch is not None and batch.events == [AllBlocksCleared()]
    assert engine.dump().events == []
    engine.add_request(EngineRequest("b", _prompt(64), max_tokens=1, ignore_eos=True), 0.0)
    firsts = [o for r in _run(engine)[1] for o in r.outputs if o.is_first]
    assert firsts[0].cached_tokens == 0

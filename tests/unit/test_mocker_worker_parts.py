"""The mocker worker's pieces without sockets: flags, card, request checks, streams, publisher
throttling and the step loop (with an in-memory publisher)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
import numpy as np
import pytest

from stator.errors import ConfigError, ContextLengthError, InvalidRequestError
from stator.mocker.card import ModelInfo, build_model_card, engine_for_model
from stator.mocker.config import MockerConfig
from stator.mocker.engine import MockEngine, RequestOutput
from stator.mocker.publisher import WorkerPublisher
from stator.mocker.request_check import check_request
from stator.mocker.request_stream import RequestStream
from stator.mocker.sequence import EngineRequest
from stator.mocker.step_loop import StepLoop
from stator.mocker.worker_config import build_parser, config_from_args
from stator.protocols.engine import PreprocessedRequest, SamplingOptions, StopConditions
from stator.protocols.kv_events import KvEventBatch, LoadMetrics
from stator.runtime.address import model_endpoint_name
from stator.runtime.event_plane.base import EventPublisher

# -- flags and card -------------------------------------------------------------------------


def test_defaults_are_dynamos(tiny_model_dir: Path) -> None:
    args = build_parser().parse_args(["--model-path", str(tiny_model_dir)])
    assert (args.block_size, args.num_gpu_blocks_override, args.max_num_seqs) == (64, 16384, 256)
    assert args.max_num_batched_tokens == 8192
    assert args.enable_prefix_caching and args.enable_chunked_prefill
    assert (args.speedup_ratio, args.decode_speedup_ratio, args.num_workers) == (1.0, 1.0, 1)


def test_default_endpoint_is_model_specific(tiny_model_dir: Path) -> None:
    config = config_from_args(
        build_parser().parse_args(
            ["--model-path", str(tiny_model_dir), "--model-name", "org/M-1", "--namespace", "ns"]
        )
    )
    assert str(config.endpoint) == f"dyn://ns.backend.{model_endpoint_name('org/M-1')}"
    assert config.model_path == str(tiny_model_dir.resolve())


def test_model_name_defaults_to_the_directory_name(tiny_model_dir: Path) -> None:
    config = config_from_args(build_parser().parse_args(["--model-path", str(tiny_model_dir)]))
    assert config.model_name == tiny_model_dir.name


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--endpoint", "dyn://a.b"], "--endpoint"),
        (["--namespace", "bad ns"], "--namespace"),
        (["--model-path", "/no/such/dir"], "--model-path"),
    ],
)
def test_bad_values_name_their_flag(tiny_model_dir: Path, argv: list[str], flag: str) -> None:
    full = ["--model-path", str(tiny_model_dir), *argv]
    with pytest.raises(ConfigError) as info:
        config_from_args(build_parser().parse_args(full))
    assert info.value.flag == flag


def test_engine_limit_prefers_flag_then_model_then_capacity() -> None:
    engine = MockerConfig(block_size=16, num_gpu_blocks=10)
    assert engine_for_model(engine, ModelInfo(100, 2048)).max_model_len == 2048
    assert engine_for_model(engine, ModelInfo(100, None)).max_model_len == 160
    flagged = MockerConfig(block_size=16, num_gpu_blocks=10, max_model_len=77)
    assert engine_for_model(flagged, ModelInfo(100, 2048)).max_model_len == 77
    assert engine_for_model(engine, ModelInfo(100, None)).vocab_size == 100


def test_card_carries_engine_limits(tiny_model_dir: Path) -> None:
    config = config_from_args(
        build_parser().parse_args(
            ["--model-path", str(tiny_model_dir), "--model-name", "m", "--max-num-seqs", "7"]
        )
    )
    engine = engine_for_model(config.engine, ModelInfo(4096, 2048))
    card = build_model_card(config, engine)
    assert (card.name, card.kv_cache_block_size, card.context_length) == ("m", 64, 2048)
    assert card.runtime_config.total_kv_blocks == 16384
    assert card.runtime_config.max_num_seqs == 7
    assert card.endpoint == str(config.endpoint)
    assert card.tokenizer_path == config.model_path


# -- request checks -------------------------------------------------------------------------

ENGINE = MockerConfig(block_size=16, num_gpu_blocks=8, vocab_size=1000, max_model_len=100)


def req(tokens: list[int], max_tokens: int | None = 4, **kw: object) -> PreprocessedRequest:
    return PreprocessedRequest(
        token_ids=tokens,
        stop_conditions=StopConditions(max_tokens=max_tokens, **kw),  # type: ignore[arg-type]
    )


def test_a_good_request_passes() -> None:
    check_request(req([1, 2, 999], max_tokens=97), ENGINE)
    check_request(req([5] * 99, max_tokens=None), ENGINE)


@pytest.mark.parametrize(
    ("request_", "param", "error"),
    [
        (req([]), "token_ids", InvalidRequestError),
        (req([1, 1000]), "token_ids", InvalidRequestError),
        (req([-1, 3]), "token_ids", InvalidRequestError),
        (req([1] * 100), "token_ids", ContextLengthError),
        (req([1] * 50, max_tokens=51), "max_tokens", ContextLengthError),
        (req([1], max_tokens=-1), "max_tokens", InvalidRequestError),
        (req([1], max_tokens=2, min_tokens=3), "min_tokens", InvalidRequestError),
    ],
)
def test_bad_requests_name_the_field(
    request_: PreprocessedRequest, param: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        check_request(request_, ENGINE)
    assert type(info.value) is error
    assert info.value.param == param  # type: ignore[attr-defined]


def test_prompt_larger_than_the_kv_cache_is_rejected() -> None:
    engine = MockerConfig(block_size=16, num_gpu_blocks=2, vocab_size=1000)
    with pytest.raises(InvalidRequestError, match="KV blocks"):
        check_request(req([1] * 33), engine)


@pytest.mark.parametrize(
    "sampling",
    [
        SamplingOptions(temperature=-0.1),
        SamplingOptions(top_p=0.0),
        SamplingOptions(top_k=-2),
        SamplingOptions(min_p=1.5),
        SamplingOptions(presence_penalty=3.0),
        SamplingOptions(repetition_penalty=0.0),
    ],
)
def test_bad_sampling_values_are_rejected(sampling: SamplingOptions) -> None:
    bad = PreprocessedRequest(token_ids=[1], sampling_options=sampling)
    with pytest.raises(InvalidRequestError):
        check_request(bad, ENGINE)


# -- request streams ------------------------------------------------------------------------


def output(num: int, start: int, **kw: object) -> RequestOutput:
    source = np.arange(100, dtype=np.uint32)
    return RequestOutput("r", num, _source=source, _start=start, **kw)  # type: ignore[arg-type]


async def test_stream_merges_untaken_deltas() -> None:
    stream = RequestStream()
    stream.push(output(1, 0, is_first=True, cached_tokens=32))
    stream.push(output(1, 1))
    first = await stream.next()
    assert first is not None
    assert (first.token_ids, first.cached_tokens, first.finish_reason) == ([0, 1], 32, None)
    stream.push(output(1, 2))
    stream.push(output(1, 3, finish_reason="length"))
    last = await stream.next()
    assert last is not None
    assert (last.token_ids, last.cached_tokens, last.finish_reason) == ([2, 3], None, "length")
    assert await stream.next() is None


async def test_stream_waits_for_output_and_can_fail() -> None:
    stream = RequestStream()
    waiting = asyncio.create_task(stream.next())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    stream.fail("cancelled", "bye")
    chunk = await waiting
    assert chunk is not None and chunk.finish_reason == "cancelled" and chunk.error == "bye"
    stream.push(output(1, 0))  # ignored after the end
    assert await stream.next() is None


# -- publisher -------------------------------------------------------------------------------


class MemPublisher(EventPublisher):
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    async def publish(self, payload: bytes) -> None:
        self.sent.append(payload)

    async def close(self) -> None:
        self.closed = True


def metrics(running: int) -> LoadMetrics:
    return LoadMetrics(
        worker_id=1,
        active_decode_blocks=running,
        active_prefill_tokens=0,
        num_waiting_reqs=0,
        num_running_reqs=running,
        kv_cache_usage=running / 10,
        total_kv_blocks=10,
    )


async def test_metrics_are_throttled_and_unchanged_load_is_not_resent() -> None:
    events, load = MemPublisher(), MemPublisher()
    pub = WorkerPublisher(events, load, min_interval_s=0.05)
    await pub.offer_metrics(metrics(1), now_s=0.0)
    await pub.offer_metrics(metrics(2), now_s=0.01)  # within the interval: pending
    assert len(load.sent) == 1 and pub.has_pending
    await pub.offer_metrics(metrics(3), now_s=0.06)
    assert len(load.sent) == 2 and not pub.has_pending
    await pub.offer_metrics(metrics(3), now_s=0.2)  # unchanged
    assert len(load.sent) == 2
    await pub.offer_metrics(metrics(4), now_s=0.21)
    await pub.flush(now_s=0.22)
    await pub.heartbeat(metrics(4), now_s=1.3)
    decoded = [msgspec.msgpack.decode(m, type=LoadMetrics) for m in load.sent]
    assert [m.num_running_reqs for m in decoded] == [1, 3, 4, 4]
    await pub.close()
    assert events.closed and load.closed


# -- step loop -------------------------------------------------------------------------------


def engine_request(request_id: str, n: int, max_tokens: int) -> EngineRequest:
    tokens = np.arange(1, n + 1, dtype=np.uint32)
    return EngineRequest(request_id, tokens, max_tokens=max_tokens, ignore_eos=True)


async def steps(speedup: float = 1000.0) -> tuple[StepLoop, MemPublisher, MemPublisher]:
    config = MockerConfig(block_size=4, num_gpu_blocks=64, speedup_ratio=speedup, vocab_size=50)
    events, load = MemPublisher(), MemPublisher()
    publisher = WorkerPublisher(events, load, min_interval_s=0.0, idle_interval_s=0.05)
    loop = StepLoop(MockEngine(config, worker_id=9), publisher)
    loop.start()
    return loop, events, load


async def test_step_loop_runs_requests_and_publishes_ordered_events() -> None:
    loop, events, load = await steps()
    streams = [loop.submit(engine_request(f"r{i}", 10 + i, 6)) for i in range(3)]
    for stream in streams:
        tokens: list[int] = []
        while (chunk := await stream.next()) is not None:
            tokens += chunk.token_ids
        assert len(tokens) == 6
    await loop.close()
    batches = [msgspec.msgpack.decode(b, type=KvEventBatch) for b in events.sent]
    assert [b.event_id for b in batches] == list(range(1, len(batches) + 1))
    assert all(b.worker_id == 9 for b in batches)
    final = msgspec.msgpack.decode(load.sent[-1], type=LoadMetrics)
    assert final.num_running_reqs == 0 and final.active_decode_blocks == 0


async def test_cancel_frees_blocks_and_close_ends_open_streams() -> None:
    loop, _, _ = await steps(speedup=1.0)
    kept = loop.submit(engine_request("keep", 20, 1000))
    dropped = loop.submit(engine_request("drop", 20, 1000))
    assert await kept.next() is not None and await dropped.next() is not None
    loop.cancel("drop")
    assert loop.engine.num_requests == 1
    await loop.close()
    assert loop.engine.num_requests == 0
    assert loop.engine.pool.num_active == 0
    chunk = await kept.next()
    while chunk is not None and chunk.finish_reason is None:
        chunk = await kept.next()
    assert chunk is not None and chunk.finish_reason == "cancelled"


def test_step_deadlines_make_up_timer_overshoot_but_not_stalls() -> None:
    from stator.mocker.step_loop import MAX_LAG_S, _resync

    assert _resync(10.0, 10.0009) == 10.0  # 0.9 ms late: the next step starts on schedule
    assert _resync(10.0, 10.0 + MAX_LAG_S / 2) == 10.0
    assert _resync(10.0, 10.0 + MAX_LAG_S * 2) == 10.0 + MAX_LAG_S * 2  # a stall: resync

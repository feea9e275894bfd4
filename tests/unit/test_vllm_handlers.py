"""The vLLM worker's request handlers over a fake engine (no vLLM needed)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from stator.errors import ContextLengthError
from stator.protocols.engine import PreprocessedRequest, StopConditions
from stator.runtime.request_plane.base import RequestContext
from stator.vllm.convert import EngineLimits
from stator.vllm.handlers import CANARY_TOKEN_IDS, RequestHandlers
from stator.vllm.inflight import InflightTracker


@dataclass
class Completion:
    token_ids: list[int]
    finish_reason: str | None = None
    cumulative_logprob: float | None = None
    logprobs: Any = None


@dataclass
class Output:
    outputs: list[Completion]
    finished: bool = False
    num_cached_tokens: int = 0
    kv_transfer_params: dict[str, Any] | None = None


@dataclass
class FakeEngine:
    """Yields the scripted outputs; ``hold`` blocks after them until cancelled."""

    script: list[Output]
    hold: bool = False
    limits: EngineLimits = field(default_factory=lambda: EngineLimits(max_model_len=64))
    calls: list[tuple[list[int], dict[str, Any], str, int]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)

    async def generate(
        self, token_ids: list[int], sampling: dict[str, Any], request_id: str, priority: int = 0
    ) -> AsyncIterator[Any]:
        self.calls.append((token_ids, sampling, request_id, priority))
        try:
            for out in self.script:
                yield out
            if self.hold:
                await asyncio.Event().wait()
        finally:
            self.closed.append(request_id)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    async def check_health(self) -> None:
        return None


def request(n: int = 8, **kw: Any) -> PreprocessedRequest:
    return PreprocessedRequest(token_ids=list(range(n)), request_id="wire", **kw)


async def collect(agen: AsyncIterator[Any]) -> list[Any]:
    return [x async for x in agen]


async def test_generate_streams_deltas_skips_empties_and_reports_cached_once() -> None:
    engine = FakeEngine(
        [
            Output([Completion([5])], num_cached_tokens=4),
            Output([Completion([])], num_cached_tokens=4),
            Output([Completion([6, 7])], num_cached_tokens=4),
            Output([Completion([], "stop")], finished=True, num_cached_tokens=4),
        ]
    )
    tracker = InflightTracker()
    chunks = await collect(
        RequestHandlers(engine, tracker).generate(request(), RequestContext("r1"))
    )
    assert [c.token_ids for c in chunks] == [[5], [6, 7], []]
    assert [c.cached_tokens for c in chunks] == [4, None, None]
    assert chunks[-1].finish_reason == "stop"
    assert engine.aborted == []  # finished normally
    assert tracker.num_inflight == 0 and tracker.num_finished == 1
    token_ids, sampling, engine_id, _ = engine.calls[0]
    assert token_ids == list(range(8)) and sampling["max_tokens"] == 56
    assert engine_id.startswith("r1-")


async def test_engine_request_ids_are_unique_for_a_repeated_wire_id() -> None:
    engine = FakeEngine([Output([Completion([1], "length")], finished=True)])
    handlers = RequestHandlers(engine, InflightTracker())
    for _ in range(2):
        await collect(handlers.generate(request(), RequestContext("same")))
    assert engine.calls[0][2] != engine.calls[1][2]


async def test_client_going_away_aborts_in_the_engine() -> None:
    engine = FakeEngine([Output([Completion([1])])], hold=True)
    tracker = InflightTracker()
    stream = RequestHandlers(engine, tracker).generate(request(), RequestContext("r"))
    first = await anext(stream)
    assert first.token_ids == [1] and tracker.num_inflight == 1
    await stream.aclose()
    engine_id = engine.calls[0][2]
    assert engine.aborted == [engine_id] and engine.closed == [engine_id]
    assert tracker.num_inflight == 0


async def test_cancelled_handler_task_aborts_in_the_engine() -> None:
    engine = FakeEngine([], hold=True)
    tracker = InflightTracker()
    handlers = RequestHandlers(engine, tracker)
    task = asyncio.create_task(collect(handlers.generate(request(), RequestContext("r"))))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert engine.aborted == [engine.calls[0][2]]
    assert tracker.num_inflight == 0 and tracker.active_prefill_tokens == 0


async def test_prefill_returns_kv_transfer_params_on_the_last_chunk() -> None:
    params = {"remote_block_ids": [3], "do_remote_prefill": True}
    engine = FakeEngine(
        [Output([Completion([9], "length")], finished=True, kv_transfer_params=params)]
    )
    handlers = RequestHandlers(engine, InflightTracker())
    req = request(stop_conditions=StopConditions(max_tokens=20))
    chunks = await collect(handlers.prefill(req, RequestContext("p")))
    assert chunks[-1].disaggregated_params == params and chunks[-1].token_ids == [9]
    sampling = engine.calls[0][1]
    assert sampling["max_tokens"] == 1
    assert sampling["extra_args"]["kv_transfer_params"]["do_remote_decode"] is True


async def test_too_long_prompt_fails_before_the_engine() -> None:
    engine = FakeEngine([])
    tracker = InflightTracker()
    with pytest.raises(ContextLengthError):
        await collect(RequestHandlers(engine, tracker).generate(request(64), RequestContext("r")))
    assert engine.calls == [] and tracker.num_started == 0


async def test_priority_reaches_the_engine_when_supported() -> None:
    engine = FakeEngine([Output([Completion([1], "length")], finished=True)])
    engine.limits = EngineLimits(max_model_len=64, supports_priority=True)
    await collect(
        RequestHandlers(engine, InflightTracker()).generate(
            request(priority=3), RequestContext("r")
        )
    )
    assert engine.calls[0][3] == -3


async def test_canary_generates_one_token() -> None:
    engine = FakeEngine([Output([Completion([1], "length")], finished=True)])
    tracker = InflightTracker()
    await RequestHandlers(engine, tracker).canary()
    token_ids, sampling, request_id, _ = engine.calls[0]
    assert token_ids == CANARY_TOKEN_IDS and sampling["max_tokens"] == 1
    assert request_id.startswith("canary-")
    assert tracker.num_started == 0  # the canary is not a user request

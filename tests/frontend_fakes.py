"""A deterministic scripted engine and a fake ``EngineRouter`` for frontend tests.

The engine answers every request with the token ids of ``REPLY`` (ASCII, accented letters, CJK
and an emoji, so multi-byte characters split across byte-level tokens), one token per chunk,
then EOS (``finish_reason="stop"``) — or runs to ``max_tokens`` (``length``), cycling the reply,
when ``ignore_eos`` is set. The first chunk reports ``cached_tokens = len(prompt) // 2``.
Requests steer it through ``nvext.annotations``: ``delay_ms:N`` sleeps N ms before each chunk,
``fail_after:N`` raises after N chunks (a broken worker), ``error_after:N`` sends an engine
``finish_reason="error"`` chunk after N chunks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from stator.errors import NoInstanceError, NotFoundError
from stator.frontend.models import ModelRegistry, ServedModel
from stator.frontend.pipeline import ModelPipeline
from stator.frontend.tokenizer import Tokenizer
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest, TopLogprob
from stator.protocols.model_card import ModelCard
from stator.router.base import EngineRouter, RoutedStream
from stator.runtime.endpoint import ServedEndpoint
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.runtime import DistributedRuntime

REPLY = "Hello from stator! héllo wörld 世界 🚀 done."


def annotation(request: PreprocessedRequest, key: str) -> int | None:
    """The integer value of annotation ``key:N``, or ``None``."""
    for item in request.annotations:
        name, _, value = item.partition(":")
        if name == key and value.isdigit():
            return int(value)
    return None


@dataclass
class EngineLog:
    """What the engine saw: requests, and the ids of requests closed before their end."""

    requests: list[PreprocessedRequest] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)


class ScriptedEngine:
    """Generates the scripted reply for a request (see module doc)."""

    def __init__(self, tokenizer: Tokenizer, reply: str = REPLY) -> None:
        self.reply_ids = tokenizer.encode(reply, add_special_tokens=False)
        self.eos_id = min(tokenizer.eos_token_ids)
        self.log = EngineLog()

    def expected_ids(self, max_tokens: int, ignore_eos: bool = False) -> list[int]:
        """The token ids the engine will send for a request with this budget."""
        ids = self._script(ignore_eos, max_tokens)
        return ids[:max_tokens]

    def _script(self, ignore_eos: bool, max_tokens: int) -> list[int]:
        if ignore_eos:
            reps = max_tokens // len(self.reply_ids) + 1
            return (self.reply_ids * reps)[:max_tokens]
        return [*self.reply_ids, self.eos_id]

    async def generate(self, request: PreprocessedRequest) -> AsyncIterator[LLMEngineOutput]:
        """The engine stream for ``request``."""
        self.log.requests.append(request)
        done = False
        try:
            async for out in self._chunks(request):
                yield out
            done = True
        finally:
            (self.log.finished if done else self.log.cancelled).append(request.request_id)

    async def _chunks(self, request: PreprocessedRequest) -> AsyncIterator[LLMEngineOutput]:
        stop = request.stop_conditions
        max_tokens = stop.max_tokens if stop.max_tokens is not None else 1 << 30
        ids = self._script(stop.ignore_eos, max_tokens)[:max_tokens]
        delay = annotation(request, "delay_ms")
        fail_after = annotation(request, "fail_after")
        error_after = annotation(request, "error_after")
        for i, token in enumerate(ids):
            if delay:
                await asyncio.sleep(delay / 1000)
            if fail_after is not None and i >= fail_after:
                raise RuntimeError("scripted worker failure")
            if error_after is not None and i >= error_after:
                yield LLMEngineOutput(finish_reason="error", error="scripted engine error")
                return
            last = i == len(ids) - 1
            finish = None
            if last:
                finish = "length" if len(ids) >= max_tokens and token != self.eos_id else "stop"
            yield self._output(request, i, token, finish)
            await asyncio.sleep(0)

    def _output(
        self, request: PreprocessedRequest, i: int, token: int, finish: str | None
    ) -> LLMEngineOutput:
        out = LLMEngineOutput(token_ids=[token], finish_reason=finish)  # type: ignore[arg-type]
        if i == 0:
            out.cached_tokens = len(request.token_ids) // 2
        num_top = request.output_options.logprobs
        if num_top is not None:
            out.log_probs = [-0.25]
            out.top_logprobs = [[TopLogprob(token, -0.25), TopLogprob(3, -2.0)][: max(num_top, 1)]]
        return out


class FakeRouter(EngineRouter):
    """Routes round-robin over ``worker_ids`` to a ``ScriptedEngine``; honours pinning."""

    def __init__(self, engine: ScriptedEngine, worker_ids: list[int] | None = None) -> None:
        self.engine = engine
        self.workers = list(worker_ids if worker_ids is not None else [11, 22])
        self._next = 0
        self.started = False
        self.closed = False

    async def start(self) -> None:
        self.started = True

    async def close(self) -> None:
        self.closed = True

    def worker_ids(self) -> list[int]:
        return list(self.workers)

    async def generate(self, request: PreprocessedRequest) -> RoutedStream:
        if not self.workers:
            raise NoInstanceError(f"no instance serves model {request.model!r}")
        pinned = request.routing.backend_instance_id if request.routing else None
        if pinned is not None and pinned not in self.workers:
            raise NotFoundError(f"worker {pinned} is not serving this model")
        worker = pinned if pinned is not None else self.workers[self._next % len(self.workers)]
        self._next += 1
        return RoutedStream(worker, self.engine.generate(request))


@dataclass
class FakeDeployment:
    """A registry serving one model through a ``FakeRouter`` over a ``ScriptedEngine``."""

    registry: ModelRegistry
    pipeline: ModelPipeline
    engine: ScriptedEngine
    router: FakeRouter


async def fake_deployment(
    model_dir: Path, name: str = "tiny", *, context_length: int = 2048
) -> FakeDeployment:
    """Serve ``model_dir``'s tokenizer as ``name`` with the scripted engine behind a fake router."""
    card = tiny_card(model_dir, name, context_length=context_length)
    pipeline = ModelPipeline.from_card(card)
    engine = ScriptedEngine(pipeline.tokenizer)
    router = FakeRouter(engine)
    registry = ModelRegistry()
    await registry.add(ServedModel(name, card, pipeline, router))
    return FakeDeployment(registry, pipeline, engine, router)


def tiny_card(model_dir: Path, name: str = "tiny", *, context_length: int = 2048) -> ModelCard:
    """The model card a worker of the tiny model registers."""
    return ModelCard(
        name=name,
        tokenizer_path=str(model_dir),
        kv_cache_block_size=16,
        context_length=context_length,
    )


async def serve_engine(
    runtime: DistributedRuntime, address: str, engine: ScriptedEngine, card: ModelCard
) -> ServedEndpoint:
    """Serve ``engine`` at ``address`` through the runtime, registering ``card``."""

    async def handler(
        request: PreprocessedRequest, ctx: RequestContext
    ) -> AsyncIterator[LLMEngineOutput]:
        async for out in engine.generate(request):
            yield out

    return await runtime.endpoint(address).serve(
        handler, request_type=PreprocessedRequest, model_card=card
    )

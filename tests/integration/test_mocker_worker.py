"""Mocker workers and clients in one process (mem discovery, tcp request plane, zmq events)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import pytest

from stator.errors import RemoteHandlerError
from stator.kv.hashing import block_sequence_hashes
from stator.mocker.card import build_model_card, engine_for_model, load_model_info
from stator.mocker.config import MockerConfig
from stator.mocker.timing import TimingModel
from stator.mocker.worker import MockerWorker, WorkerSpec
from stator.mocker.worker_config import MockerProcessConfig
from stator.protocols.engine import (
    LLMEngineOutput,
    PreprocessedRequest,
    SamplingOptions,
    StopConditions,
)
from stator.protocols.kv_events import (
    KV_EVENTS_TOPIC,
    KV_METRICS_TOPIC,
    BlockStored,
    KvCacheDump,
    KvEventBatch,
    LoadMetrics,
)
from stator.runtime.address import EndpointAddress
from stator.runtime.client import Client
from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery import keys
from stator.runtime.discovery.mem import MemStore
from stator.runtime.event_plane.base import EventSubscriber
from stator.runtime.instance import decode_model_card
from stator.runtime.runtime import DistributedRuntime

ENDPOINT = EndpointAddress("test", "backend", "generate_tiny")
BLOCK = 16
DEADLINE_S = 5.0


class Cluster:
    """Workers and one client runtime over a shared MemStore; all stopped at the end."""

    def __init__(self, model_dir: Path) -> None:
        self.store = MemStore()
        self.model_dir = model_dir
        self.workers: list[MockerWorker] = []
        self.client_rt: DistributedRuntime | None = None

    def spec(self, **engine: object) -> WorkerSpec:
        base = MockerConfig(block_size=BLOCK, num_gpu_blocks=256, speedup_ratio=100.0)
        process = MockerProcessConfig(
            model_path=str(self.model_dir),
            model_name="tiny",
            num_workers=1,
            startup_time_s=0.0,
            endpoint=ENDPOINT,
            engine=dataclasses.replace(base, **engine),  # type: ignore[arg-type]
            runtime=RuntimeConfig(discovery_backend="mem"),
        )
        config = engine_for_model(process.engine, load_model_info(process.model_path))
        return WorkerSpec(
            ENDPOINT,
            config,
            build_model_card(process, config),
            rng_seed=0,
            metrics_idle_interval_s=0.1,
        )

    async def runtime(self) -> DistributedRuntime:
        return await DistributedRuntime.create(
            RuntimeConfig(discovery_backend="mem", namespace=ENDPOINT.namespace),
            mem_store=self.store,
        )

    async def worker(self, **engine: object) -> MockerWorker:
        worker = await MockerWorker.start(await self.runtime(), self.spec(**engine))
        self.workers.append(worker)
        return worker

    async def client(self, address: EndpointAddress = ENDPOINT) -> Client:
        if self.client_rt is None:
            self.client_rt = await self.runtime()
        client = await self.client_rt.endpoint(address).client()
        await client.wait_for_instances(timeout_s=DEADLINE_S)
        return client

    async def subscribe(self, topic: str) -> EventSubscriber:
        if self.client_rt is None:
            self.client_rt = await self.runtime()
        return await self.client_rt.event_subscriber(ENDPOINT.namespace, ENDPOINT.component, topic)

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop(drain_timeout_s=1.0)
        if self.client_rt is not None:
            await self.client_rt.shutdown(drain_timeout_s=1.0)


@pytest.fixture
async def cluster(tiny_model_dir: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tiny_model_dir)
    yield c
    await c.close()


def request(prompt: list[int], max_tokens: int, **kw: object) -> PreprocessedRequest:
    return PreprocessedRequest(
        token_ids=prompt,
        stop_conditions=StopConditions(max_tokens=max_tokens, ignore_eos=True),
        **kw,  # type: ignore[arg-type]
    )


CONTEXT_LENGTH = 2048  # --max-model-len of the workers in the bad-request test (tokens)


def prompt_of(n: int, salt: int = 0) -> list[int]:
    return [(i * 7 + salt * 131 + 3) % 4000 for i in range(n)]


async def collect(client: Client, req: PreprocessedRequest, **kw: object) -> list[LLMEngineOutput]:
    return [c async for c in client.generate(req, LLMEngineOutput, **kw)]  # type: ignore[arg-type]


class Collector:
    """Decodes a topic's messages into a list in the background."""

    def __init__(self, sub: EventSubscriber, kind: type[msgspec.Struct]) -> None:
        self.items: list[tuple[int, object]] = []
        decoder = msgspec.msgpack.Decoder(kind)

        async def run() -> None:
            async for publisher_id, payload in sub:
                self.items.append((publisher_id, decoder.decode(payload)))

        self.task = asyncio.create_task(run())

    async def until(self, cond: Callable[[], bool]) -> None:
        async with asyncio.timeout(DEADLINE_S):
            while not cond():
                await asyncio.sleep(0.01)


# -- streaming --------------------------------------------------------------------------------


async def test_stream_has_exactly_max_tokens_with_ignore_eos(cluster: Cluster) -> None:
    worker = await cluster.worker()
    client = await cluster.client()
    chunks = await collect(client, request(prompt_of(100), max_tokens=37))
    tokens = [t for c in chunks for t in c.token_ids]
    assert len(tokens) == 37
    vocab = worker.spec.engine.vocab_size
    assert all(0 <= t < vocab for t in tokens)
    assert chunks[0].cached_tokens == 0
    assert chunks[-1].finish_reason == "length"
    assert all(c.finish_reason is None for c in chunks[:-1])


async def test_eos_ends_the_stream_early_without_ignore_eos(cluster: Cluster) -> None:
    await cluster.worker()
    client = await cluster.client()
    eos = list(range(0, 4096, 2))  # half the vocabulary ends the request
    req = PreprocessedRequest(
        token_ids=prompt_of(40),
        stop_conditions=StopConditions(max_tokens=200),
        eos_token_ids=eos,
    )
    chunks = await collect(client, req)
    tokens = [t for c in chunks for t in c.token_ids]
    assert chunks[-1].finish_reason == "stop"
    assert len(tokens) < 200
    assert not set(tokens) & set(eos)


async def test_repeated_prompt_reports_cached_tokens(cluster: Cluster) -> None:
    await cluster.worker()
    client = await cluster.client()
    prompt = prompt_of(100, salt=1)
    first = await collect(client, request(prompt, max_tokens=4))
    second = await collect(client, request(prompt, max_tokens=4))
    assert first[0].cached_tokens == 0
    cached = second[0].cached_tokens
    assert cached is not None and 0 < cached < len(prompt)
    assert cached % BLOCK == 0


async def test_cancelled_stream_frees_its_blocks(cluster: Cluster) -> None:
    worker = await cluster.worker(speedup_ratio=1.0)
    metrics = Collector(await cluster.subscribe(KV_METRICS_TOPIC), LoadMetrics)
    client = await cluster.client()
    stream = client.generate(request(prompt_of(300, salt=2), max_tokens=1500), LLMEngineOutput)
    async for _ in stream:
        if worker.engine.pool.num_active > 0:
            break
    assert worker.engine.num_requests == 1
    await stream.aclose()  # type: ignore[attr-defined]

    def freed() -> bool:
        last = [m for _, m in metrics.items if isinstance(m, LoadMetrics)]
        return bool(last) and last[-1].active_decode_blocks == 0 and last[-1].num_running_reqs == 0

    await metrics.until(freed)
    assert worker.engine.num_requests == 0
    assert worker.engine.pool.num_active == 0
    assert worker.steps.num_requests == 0


async def test_kv_events_are_published_and_decodable(cluster: Cluster) -> None:
    worker = await cluster.worker()
    events = Collector(await cluster.subscribe(KV_EVENTS_TOPIC), KvEventBatch)
    client = await cluster.client()
    prompts: list[list[int]] = []
    async with asyncio.timeout(DEADLINE_S):  # the subscriber connects in the background
        while not events.items:
            prompts.append(prompt_of(64, salt=10 + len(prompts)))
            await collect(client, request(prompts[-1], max_tokens=2))
            await asyncio.sleep(0.02)
    await events.until(lambda: len(events.items) >= 1)
    batches = [b for _, b in events.items if isinstance(b, KvEventBatch)]
    assert all(pid == worker.instance_id for pid, _ in events.items)
    assert all(b.worker_id == worker.instance_id for b in batches)
    ids = [b.event_id for b in batches]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    stored = [e for b in batches for e in b.events if isinstance(e, BlockStored)]
    assert stored
    known = {h: p for p in prompts for h in block_sequence_hashes(p, BLOCK)}
    for event in stored:
        assert event.block_size == BLOCK
        assert len(event.token_ids) == BLOCK * len(event.block_hashes)
        assert set(event.block_hashes) <= set(known)
        if event.parent_block_hash is None:
            prompt = known[event.block_hashes[0]]
            assert event.token_ids == prompt[: len(event.token_ids)]


async def test_dump_endpoint_returns_the_cached_blocks(cluster: Cluster) -> None:
    worker = await cluster.worker()
    client = await cluster.client()
    prompt = prompt_of(96, salt=3)
    await collect(client, request(prompt, max_tokens=3))
    dump_client = await cluster.client(dataclasses.replace(ENDPOINT, endpoint="kv_dump"))
    dumps = [d async for d in dump_client.direct({}, worker.instance_id, KvCacheDump)]
    assert len(dumps) == 1
    dump = dumps[0]
    assert dump.worker_id == worker.instance_id
    hashes = {h for e in dump.events for h in e.block_hashes}
    assert set(block_sequence_hashes(prompt, BLOCK)[: (len(prompt) - 1) // BLOCK]) <= hashes


async def test_two_workers_have_distinct_instances_and_both_answer(cluster: Cluster) -> None:
    a = await cluster.worker()
    b = await cluster.worker()
    assert a.instance_id != b.instance_id
    client = await cluster.client()
    async with asyncio.timeout(DEADLINE_S):
        while len(client.instance_ids()) < 2:
            await asyncio.sleep(0.01)
    assert sorted(client.instance_ids()) == sorted([a.instance_id, b.instance_id])
    for worker in (a, b):
        chunks = await collect(
            client, request(prompt_of(20), max_tokens=5), instance_id=worker.instance_id
        )
        assert sum(len(c.token_ids) for c in chunks) == 5


async def test_model_card_is_registered_with_engine_limits(cluster: Cluster) -> None:
    worker = await cluster.worker(max_num_seqs=8, max_num_batched_tokens=512)
    raw = await worker.runtime.discovery.get(keys.model_card_key(ENDPOINT, worker.instance_id))
    assert raw is not None
    card = decode_model_card(raw)
    assert card.name == "tiny"
    assert card.endpoint == str(ENDPOINT)
    assert card.kv_cache_block_size == BLOCK
    assert Path(card.tokenizer_path) == cluster.model_dir
    assert card.context_length == load_model_info(str(cluster.model_dir)).context_length
    assert card.runtime_config.total_kv_blocks == 256
    assert card.runtime_config.max_num_seqs == 8
    assert card.runtime_config.max_num_batched_tokens == 512


async def test_timing_roughly_follows_the_model(cluster: Cluster) -> None:
    speedup = 5.0
    worker = await cluster.worker(speedup_ratio=speedup)
    client = await cluster.client()
    prompt, max_tokens = prompt_of(200, salt=4), 40
    timing = TimingModel(worker.spec.engine.total_kv_tokens, speedup)
    expected_s = (
        timing.prefill_ms(1, len(prompt), 0)
        + sum(timing.decode_ms(len(prompt) + i) for i in range(1, max_tokens))
    ) / 1000.0
    start = time.perf_counter()
    await collect(client, request(prompt, max_tokens=max_tokens))
    elapsed = time.perf_counter() - start
    assert elapsed >= 0.5 * expected_s
    assert elapsed <= 10 * expected_s + 2.0  # generous: a loaded machine only adds time


# -- bad requests and shutdown -------------------------------------------------------------


@pytest.mark.parametrize(
    ("req", "remote_type"),
    [
        (request([1, 2, 99999], max_tokens=4), "InvalidRequestError"),
        (request([], max_tokens=4), "InvalidRequestError"),
        (request(prompt_of(CONTEXT_LENGTH + 1), max_tokens=4), "ContextLengthError"),
        (request(prompt_of(CONTEXT_LENGTH - 48), max_tokens=100), "ContextLengthError"),
        (request(prompt_of(10), max_tokens=-1), "InvalidRequestError"),
        (
            request(prompt_of(10), max_tokens=4, sampling_options=SamplingOptions(top_p=0.0)),
            "InvalidRequestError",
        ),
    ],
)
async def test_bad_request_fails_with_status_400(
    cluster: Cluster, req: PreprocessedRequest, remote_type: str
) -> None:
    await cluster.worker(max_model_len=CONTEXT_LENGTH)
    client = await cluster.client()
    with pytest.raises(RemoteHandlerError) as info:
        await collect(client, req)
    assert info.value.status_code == 400
    assert info.value.remote_type == remote_type


async def test_stop_drains_in_flight_then_deregisters(cluster: Cluster) -> None:
    worker = await cluster.worker(speedup_ratio=20.0)
    client = await cluster.client()
    stream = client.generate(request(prompt_of(50, salt=5), max_tokens=30), LLMEngineOutput)
    first = await anext(aiter(stream))
    stopping = asyncio.create_task(worker.stop(drain_timeout_s=5.0))
    rest = [c async for c in stream]
    await stopping
    tokens = len(first.token_ids) + sum(len(c.token_ids) for c in rest)
    assert tokens == 30
    assert rest[-1].finish_reason == "length"
    assert cluster.store.get(keys.instance_key(ENDPOINT, worker.instance_id)) is None
    assert cluster.store.get(keys.model_card_key(ENDPOINT, worker.instance_id)) is None


async def test_stop_cancels_what_does_not_drain_in_time(cluster: Cluster) -> None:
    worker = await cluster.worker(speedup_ratio=1.0)
    client = await cluster.client()
    stream = client.generate(request(prompt_of(50, salt=6), max_tokens=1500), LLMEngineOutput)
    await anext(aiter(stream))
    await worker.stop(drain_timeout_s=0.1)
    rest = [c async for c in stream]
    assert rest[-1].finish_reason == "cancelled"
    assert worker.engine.num_requests == 0

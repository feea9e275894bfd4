"""LiveRouter over the runtime (mem discovery, tcp): load booking is always released, dead
workers are routed around, busy workers give 503 or a queue wait, pinning."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest

from stator.errors import NoInstanceError, NotFoundError, ServiceUnavailableError
from stator.frontend.tokenizer import Tokenizer
from stator.kv.hashing import block_sequence_hashes
from stator.protocols.engine import PreprocessedRequest, RoutingHints, StopConditions
from stator.protocols.kv_events import KV_EVENTS_TOPIC, BlockStored, KvCacheDump, KvEventBatch
from stator.router.config import RouterConfig
from stator.router.factory import make_router_core
from stator.router.kv_core import KvRouterCore
from stator.router.live import LiveRouter
from stator.runtime.address import EndpointAddress
from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery import keys
from stator.runtime.discovery.mem import MemStore
from stator.runtime.instance import InstanceInfo, encode_instance
from stator.runtime.runtime import DistributedRuntime
from tests.frontend_fakes import ScriptedEngine, serve_engine, tiny_card

ADDRESS = EndpointAddress.parse("dyn://dynamo.tiny.generate")


@dataclass
class Setup:
    frontend: DistributedRuntime
    worker: DistributedRuntime
    engine: ScriptedEngine


@pytest.fixture
async def setup(tiny_model_dir: Path) -> AsyncIterator[Setup]:
    store = MemStore()
    config = RuntimeConfig(discovery_backend="mem")
    worker = await DistributedRuntime.create(config, mem_store=store)
    frontend = await DistributedRuntime.create(config, mem_store=store)
    engine = ScriptedEngine(Tokenizer.from_dir(tiny_model_dir))
    await serve_engine(worker, str(ADDRESS), engine, tiny_card(tiny_model_dir))
    yield Setup(frontend, worker, engine)
    await frontend.shutdown(drain_timeout_s=1.0)
    await worker.shutdown(drain_timeout_s=1.0)


async def started_router(setup: Setup, config: RouterConfig | None = None) -> LiveRouter:
    config = config or RouterConfig()
    router = LiveRouter(setup.frontend, ADDRESS, make_router_core(config, block_size=16), config)
    await router.start()
    for _ in range(100):
        if router.worker_ids():
            break
        await asyncio.sleep(0.01)
    return router


def request(rid: str, *, delay_ms: int = 0, pinned: int | None = None) -> PreprocessedRequest:
    return PreprocessedRequest(
        token_ids=list(range(3, 40)),
        request_id=rid,
        model="tiny",
        stop_conditions=StopConditions(max_tokens=5),
        annotations=[f"delay_ms:{delay_ms}"] if delay_ms else [],
        routing=RoutingHints(backend_instance_id=pinned) if pinned is not None else None,
    )


async def test_load_is_released_however_the_stream_ends(setup: Setup) -> None:
    router = await started_router(setup)
    try:
        core = router.core
        stream = await router.generate(request("done"))
        assert stream.worker_id == setup.worker.instance_id
        assert len(core.sequences) == 1
        chunks = [c async for c in stream]
        assert chunks[-1].finish_reason is not None
        assert len(core.sequences) == 0

        stream = await router.generate(request("closed", delay_ms=20))
        await anext(aiter(stream))
        await stream.aclose()
        assert len(core.sequences) == 0

        stream = await router.generate(request("never-read", delay_ms=20))
        await stream.aclose()  # never iterated beyond the first chunk fetched by generate
        assert len(core.sequences) == 0
        for _ in range(100):
            if len(setup.engine.log.cancelled) == 2:
                break
            await asyncio.sleep(0.01)
        assert sorted(setup.engine.log.cancelled) == ["closed", "never-read"]
    finally:
        await router.close()


async def test_dead_registered_worker_is_routed_around(setup: Setup) -> None:
    ghost = InstanceInfo(
        instance_id=1,
        namespace=ADDRESS.namespace,
        component=ADDRESS.component,
        endpoint=ADDRESS.endpoint,
        transport="tcp",
        address="tcp://127.0.0.1:1",
    )
    await setup.frontend.discovery.put(keys.instance_key(ADDRESS, 1), encode_instance(ghost))
    router = await started_router(setup)
    try:
        for _ in range(100):
            if len(router.worker_ids()) == 2:
                break
            await asyncio.sleep(0.01)
        for i in range(4):
            stream = await router.generate(request(f"r{i}"))
            assert stream.worker_id == setup.worker.instance_id
            assert [c async for c in stream][-1].finish_reason is not None
        with pytest.raises(NoInstanceError):
            await router.generate(request("pinned-ghost", pinned=1))
        assert len(router.core.sequences) == 0
    finally:
        await router.close()


async def test_pinning_and_missing_workers(setup: Setup) -> None:
    router = await started_router(setup)
    try:
        stream = await router.generate(request("p", pinned=setup.worker.instance_id))
        assert stream.worker_id == setup.worker.instance_id
        await stream.aclose()
        with pytest.raises(NotFoundError):
            await router.generate(request("x", pinned=999))
    finally:
        await router.close()
    empty = LiveRouter(
        setup.frontend,
        EndpointAddress.parse("dyn://dynamo.nobody.generate"),
        make_router_core("round-robin", block_size=16),
    )
    await empty.start()
    try:
        with pytest.raises(NoInstanceError):
            await empty.generate(request("y"))
    finally:
        await empty.close()


async def test_busy_workers_reject_or_queue(setup: Setup) -> None:
    busy = RouterConfig(active_prefill_tokens_threshold=0)  # busy while any prefill is booked
    router = await started_router(setup, busy)
    try:
        slow = asyncio.create_task(router.generate(request("slow", delay_ms=300)))
        await asyncio.sleep(0.1)  # "slow" is booked, its first token not yet out
        with pytest.raises(ServiceUnavailableError):
            await router.generate(request("rejected"))
        (await slow).worker_id  # noqa: B018 - the first token arrived; prefill released
        stream = await router.generate(request("after"))
        await stream.aclose()
        await (await slow).aclose()
    finally:
        await router.close()

    queued = RouterConfig(active_prefill_tokens_threshold=0, router_max_queue_size=4)
    router = await started_router(setup, queued)
    try:
        slow = asyncio.create_task(router.generate(request("slow2", delay_ms=200)))
        await asyncio.sleep(0.05)
        waiter = asyncio.create_task(router.generate(request("waits")))
        await asyncio.sleep(0.05)
        assert not waiter.done() and len(router.queue) == 1
        first = await slow
        second = await asyncio.wait_for(waiter, 5)
        await first.aclose()
        await second.aclose()
        assert len(router.core.sequences) == 0
    finally:
        await router.close()


async def test_kv_events_from_workers_feed_the_kv_core(setup: Setup) -> None:
    async def empty_dump(request: object, ctx: object) -> AsyncIterator[KvCacheDump]:
        yield KvCacheDump(worker_id=setup.worker.instance_id, event_id=0, events=[])

    dump_address = f"dyn://{ADDRESS.namespace}.{ADDRESS.component}.kv_dump"
    await setup.worker.endpoint(dump_address).serve(empty_dump)
    router = await started_router(setup, RouterConfig(router_mode="kv"))
    publisher = await setup.worker.event_publisher(
        ADDRESS.namespace, ADDRESS.component, KV_EVENTS_TOPIC
    )
    try:
        tokens = list(range(3, 40))  # request()'s prompt: 2 full blocks of 16
        hashes = block_sequence_hashes(tokens, 16)
        stored = BlockStored(
            block_hashes=hashes, parent_block_hash=None, token_ids=tokens[:32], block_size=16
        )
        batch = KvEventBatch(worker_id=setup.worker.instance_id, event_id=1, events=[stored])
        payload = msgspec.msgpack.encode(batch)
        core = router.core
        assert isinstance(core, KvRouterCore)
        for _ in range(200):  # the subscriber connects to the publisher asynchronously
            await publisher.publish(payload)
            if core.overlaps(hashes, 0.0).scores.get(setup.worker.instance_id) == 2:
                break
            await asyncio.sleep(0.02)
        stream = await router.generate(request("cached"))
        assert stream.overlap_blocks == 2
        await stream.aclose()
        [worker] = router.debug_state().workers
        assert worker.cached_blocks == 2 and worker.events.blocks_stored >= 2
    finally:
        await publisher.close()
        await router.close()

"""LiveRouter in kv mode over mocker workers, in one process (mem discovery, tcp, zmq).

Checks the live KV wiring: the router's indexer is fed by the workers' KV events, requests
sharing a prefix go to the worker holding it, a gap in event ids and a joining worker make the
router fetch the worker's dump, a departing worker's blocks go, booked load is released, and
the debug view / Prometheus collector show it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from stator.kv.hashing import block_sequence_hashes
from stator.protocols.engine import LLMEngineOutput
from stator.protocols.kv_events import KV_EVENTS_TOPIC, BlockStored, KvEventBatch
from stator.router.debug import RouterCollector
from tests.integration.kv_cluster import (
    BLOCK,
    DEADLINE_S,
    ENDPOINT,
    Cluster,
    kv_core,
    matched,
    prompt_of,
    request,
    run,
    two_workers_and_router,
    until,
)


@pytest.fixture
async def cluster(tiny_model_dir: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tiny_model_dir)
    yield c
    await c.close()


# -- indexer fed by events ----------------------------------------------------------------------


async def test_router_indexes_the_blocks_of_a_served_request(cluster: Cluster) -> None:
    ids, router = await two_workers_and_router(cluster)
    prompt = prompt_of(6, salt=1)
    worker_id, chunks = await run(router, request(prompt))
    assert worker_id in ids
    assert sum(len(c.token_ids) for c in chunks) == 4
    await until(lambda: matched(router, worker_id, prompt) == 6)
    other = next(w for w in ids if w != worker_id)
    assert matched(router, other, prompt) == 0
    state = router.debug_state()
    mine = next(w for w in state.workers if w.worker_id == worker_id)
    assert mine.cached_blocks is not None and mine.cached_blocks >= 6
    assert mine.events.kv_event_batches >= 1 and mine.events.blocks_stored >= 6


async def test_shared_prefix_goes_to_the_worker_holding_it(cluster: Cluster) -> None:
    _, router = await two_workers_and_router(cluster)
    first_a, _ = await run(router, request(prompt_of(8, salt=2)))
    await until(lambda: matched(router, first_a, prompt_of(8, salt=2)) == 8)
    # Another prefix ties on overlap (0 everywhere): the worker with fewer cached blocks wins.
    first_b, _ = await run(router, request(prompt_of(8, salt=3)))
    assert first_b != first_a
    await until(lambda: matched(router, first_b, prompt_of(8, salt=3)) == 8)
    for salt, expected in ((2, first_a), (3, first_b), (2, first_a)):
        extended = prompt_of(8, salt=salt)[: 8 * BLOCK] + list(range(100, 140))
        worker_id, _ = await run(router, request(extended))
        assert worker_id == expected


async def test_load_is_released_when_streams_end_or_close(cluster: Cluster) -> None:
    _, router = await two_workers_and_router(cluster)
    core = kv_core(router)
    stream = await router.generate(request(prompt_of(4, salt=4), max_tokens=200))
    booked = core.worker_load(stream.worker_id)
    assert booked.num_active_requests == 1 and booked.active_decode_blocks == 4
    await stream.aclose()
    assert all(load.num_active_requests == 0 for load in core.worker_loads())
    assert all(load.active_decode_blocks == 0 for load in core.worker_loads())
    await run(router, request(prompt_of(4, salt=5)))
    assert all(load.num_active_requests == 0 for load in core.worker_loads())
    assert all(load.active_prefill_tokens == 0 for load in core.worker_loads())


# -- dumps ------------------------------------------------------------------------------------


async def test_gap_in_event_ids_makes_the_router_fetch_a_dump(cluster: Cluster) -> None:
    _, router = await two_workers_and_router(cluster)
    prompt = prompt_of(5, salt=6)
    worker_id, _ = await run(router, request(prompt))
    await until(lambda: matched(router, worker_id, prompt) == 5)
    stats = router.debug_state()
    before = next(w for w in stats.workers if w.worker_id == worker_id).events
    # Lose the router's view of the worker, then deliver a batch whose id skips ahead.
    core = kv_core(router)
    core.indexer.clear_worker(worker_id)
    assert matched(router, worker_id, prompt) == 0
    assert before.last_event_id is not None
    publisher_rt = await cluster.runtime()
    publisher = await publisher_rt.event_publisher(
        ENDPOINT.namespace, ENDPOINT.component, KV_EVENTS_TOPIC
    )
    gap = KvEventBatch(worker_id=worker_id, event_id=before.last_event_id + 10, events=[])

    async def dumped() -> None:
        while True:
            await publisher.publish(msgspec.msgpack.encode(gap))
            state = router.debug_state()
            now = next(w for w in state.workers if w.worker_id == worker_id).events
            if now.dumps_applied > before.dumps_applied:
                return
            await asyncio.sleep(0.05)

    async with asyncio.timeout(DEADLINE_S):
        await dumped()
    assert matched(router, worker_id, prompt) == 5
    await publisher.close()


async def test_joining_worker_is_dumped_so_its_earlier_blocks_count(cluster: Cluster) -> None:
    worker = await cluster.worker()
    client_rt = await cluster.runtime()
    client = await client_rt.endpoint(ENDPOINT).client()
    await client.wait_for_instances(timeout_s=DEADLINE_S)
    prompt = prompt_of(7, salt=7)
    chunks = [c async for c in client.direct(request(prompt), worker.instance_id, LLMEngineOutput)]
    assert chunks[-1].finish_reason == "length"
    router = await cluster.router()  # started after the blocks were cached and announced
    await until(lambda: matched(router, worker.instance_id, prompt) == 7)
    state = router.debug_state()
    assert state.workers[0].events.dumps_applied >= 1


async def test_departing_worker_loses_its_blocks_and_load(cluster: Cluster) -> None:
    _, router = await two_workers_and_router(cluster)
    prompt = prompt_of(5, salt=8)
    worker_id, _ = await run(router, request(prompt))
    await until(lambda: matched(router, worker_id, prompt) == 5)
    leaving = next(w for w in cluster.workers if w.instance_id == worker_id)
    await leaving.stop(drain_timeout_s=0.5)
    await until(lambda: worker_id not in router.worker_ids())
    core = kv_core(router)
    assert core.indexer.num_blocks(worker_id) == 0
    assert worker_id not in core.indexer.worker_ids()
    remaining, _ = await run(router, request(prompt))
    assert remaining != worker_id


async def test_batches_of_workers_it_does_not_route_to_are_ignored(cluster: Cluster) -> None:
    ids, router = await two_workers_and_router(cluster)
    foreign_id = max(ids) + 12345
    publisher_rt = await cluster.runtime()
    publisher = await publisher_rt.event_publisher(
        ENDPOINT.namespace, ENDPOINT.component, KV_EVENTS_TOPIC
    )
    hashes = block_sequence_hashes(prompt_of(3, salt=9), BLOCK)
    stored = BlockStored(
        block_hashes=hashes, parent_block_hash=None, token_ids=[0] * 3 * BLOCK, block_size=BLOCK
    )
    batch = KvEventBatch(worker_id=foreign_id, event_id=1, events=[stored])

    async def ignored() -> None:
        while router.debug_state().ignored_batches == 0:
            await publisher.publish(msgspec.msgpack.encode(batch))
            await asyncio.sleep(0.05)

    async with asyncio.timeout(DEADLINE_S):
        await ignored()
    core = kv_core(router)
    assert foreign_id not in core.indexer.worker_ids()
    assert core.indexer.find_matches(hashes).scores == {}
    await publisher.close()


# -- debug view -------------------------------------------------------------------------------


async def test_collector_exports_blocks_and_events_per_worker(cluster: Cluster) -> None:
    ids, router = await two_workers_and_router(cluster)
    prompt = prompt_of(3, salt=10)
    worker_id, _ = await run(router, request(prompt))
    await until(lambda: matched(router, worker_id, prompt) == 3)
    registry = CollectorRegistry()
    registry.register(RouterCollector(lambda: [("tiny", router.debug_state())]))
    text = generate_latest(registry).decode()
    blocks = _sample(text, "stator_frontend_router_kv_blocks", worker_id)
    assert blocks is not None and blocks >= 3
    events = _sample(text, "stator_frontend_router_kv_events_total", worker_id)
    assert events is not None and events >= 1
    other = next(w for w in ids if w != worker_id)
    assert _sample(text, "stator_frontend_router_kv_blocks", other) == 0


def _sample(text: str, name: str, worker_id: int) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and f'worker_id="{worker_id}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_round_robin_router_keeps_no_index_but_counts_load(cluster: Cluster) -> None:
    ids = [(await cluster.worker()).instance_id for _ in range(2)]
    router = await cluster.router("round-robin")
    await until(lambda: sorted(router.worker_ids()) == sorted(ids))
    served = {(await run(router, request(prompt_of(2, salt=s))))[0] for s in range(4)}
    assert served == set(ids)
    state = router.debug_state()
    assert state.router_mode == "round-robin"
    assert all(w.cached_blocks is None for w in state.workers)
    assert all(w.num_active_requests == 0 for w in state.workers)

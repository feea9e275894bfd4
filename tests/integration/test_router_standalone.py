"""The standalone router (``StandaloneRouter``) and the frontend's ``RemoteRouter``, in one
process over mem discovery, with mocker workers."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from stator.errors import (
    ConfigError,
    ContextLengthError,
    NoInstanceError,
    NotFoundError,
    ServiceUnavailableError,
)
from stator.protocols.engine import LLMEngineOutput, RoutingHints
from stator.router.config import RouterConfig
from stator.router.remote import RemoteRouter
from stator.router.standalone import (
    DEBUG_ENDPOINT,
    StandaloneRouter,
    StandaloneRouterConfig,
    parse_config,
)
from stator.router.wire import RoutedEngineOutput
from stator.runtime.address import EndpointAddress, model_endpoint_name
from stator.runtime.runtime import DistributedRuntime
from tests.integration.kv_cluster import (
    BLOCK,
    DEADLINE_S,
    ENDPOINT,
    Cluster,
    hears_everyone,
    prompt_of,
    request,
    until,
)

ROUTER_ENDPOINT = EndpointAddress(ENDPOINT.namespace, "router", "generate")


@pytest.fixture
async def cluster(tiny_model_dir: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tiny_model_dir)
    yield c
    await c.close()


async def start_router(cluster: Cluster, **router: object) -> StandaloneRouter:
    settings: dict[str, object] = {"router_mode": "kv", **router}
    config = StandaloneRouterConfig(
        worker_endpoint=ENDPOINT,
        router_endpoint=ROUTER_ENDPOINT,
        router=RouterConfig(**settings),  # type: ignore[arg-type]
        card_timeout_s=DEADLINE_S,
    )
    standalone = await StandaloneRouter.start(await cluster.runtime(), config)
    return standalone


@pytest.fixture
async def remote(cluster: Cluster) -> AsyncIterator[RemoteRouter]:
    router = RemoteRouter(await cluster.runtime(), ROUTER_ENDPOINT, ENDPOINT)
    await router.start()
    yield router
    await router.close()


async def ready(
    cluster: Cluster,
    standalone: StandaloneRouter,
    num_workers: int,
    **engine: object,
) -> list[int]:
    """Start ``num_workers`` workers and wait until the router hears them all."""
    ids = [(await cluster.worker(**engine)).instance_id for _ in range(num_workers)]
    live = standalone.router
    assert live is not None
    await until(lambda: set(ids) <= set(live.worker_ids()))
    await hears_everyone(live)
    return ids


async def call(
    remote: RemoteRouter, prompt: list[int], max_tokens: int = 4, **kw: object
) -> tuple[int, int]:
    """(worker id, output tokens) of one request through the standalone router."""
    async with asyncio.timeout(DEADLINE_S):
        while not remote._router or not remote._router.instance_ids():
            await asyncio.sleep(0.01)
    stream = await remote.generate(request(prompt, max_tokens, **kw))
    tokens = sum([len(c.token_ids) async for c in stream])
    return stream.worker_id, tokens


def cached(standalone: StandaloneRouter, worker_id: int) -> int:
    """Blocks the standalone router's indexer holds for ``worker_id``."""
    assert standalone.router is not None
    state = standalone.router.debug_state()
    return next(w.cached_blocks or 0 for w in state.workers if w.worker_id == worker_id)


async def test_block_size_comes_from_the_workers_model_card(cluster: Cluster) -> None:
    await cluster.worker()
    standalone = await start_router(cluster)
    assert standalone.block_size == BLOCK
    await standalone.stop()


async def test_routes_by_prefix_and_names_the_worker(
    cluster: Cluster,
    remote: RemoteRouter,
) -> None:
    await cluster.worker()
    standalone = await start_router(cluster)
    ids = [cluster.workers[0].instance_id] + await ready(cluster, standalone, 1)
    live = standalone.router
    assert live is not None
    await until(lambda: sorted(live.worker_ids()) == sorted(ids))
    await hears_everyone(live)
    first_a, tokens = await call(remote, prompt_of(6, salt=21))
    assert first_a in ids and tokens == 4
    await until(lambda: cached(standalone, first_a) >= 6)
    first_b, _ = await call(remote, prompt_of(6, salt=22))
    assert first_b != first_a  # equal overlap: fewer cached blocks wins
    await until(lambda: cached(standalone, first_b) >= 6)
    for salt, expected in ((21, first_a), (22, first_b)):
        again, _ = await call(remote, [*prompt_of(6, salt=salt)[: 6 * BLOCK], 1, 2, 3])
        assert again == expected
    await standalone.stop()


async def test_first_chunk_carries_routing_data_and_plain_clients_still_decode(
    cluster: Cluster,
) -> None:
    standalone = await start_router(cluster, kv_cache_block_size=BLOCK)
    (worker_id,) = await ready(cluster, standalone, 1)
    rt = await cluster.runtime()
    client = await rt.endpoint(ROUTER_ENDPOINT).client()
    await client.wait_for_instances(timeout_s=DEADLINE_S)
    typed = [c async for c in client.generate(request(prompt_of(2, salt=23)), RoutedEngineOutput)]
    assert typed[0].routing_data is not None and typed[0].routing_data.worker_id == worker_id
    assert all(c.routing_data is None for c in typed[1:])
    plain = [c async for c in client.generate(request(prompt_of(2, salt=24)), LLMEngineOutput)]
    assert sum(len(c.token_ids) for c in plain) == 4 and plain[-1].finish_reason == "length"
    await standalone.stop()


async def test_pinned_worker_and_errors_keep_their_type(
    cluster: Cluster,
    remote: RemoteRouter,
) -> None:
    standalone = await start_router(cluster, kv_cache_block_size=BLOCK)
    ids = await ready(cluster, standalone, 2)
    for worker_id in ids:
        pinned = RoutingHints(backend_instance_id=worker_id)
        served, _ = await call(remote, prompt_of(2, salt=25), routing=pinned)
        assert served == worker_id
    with pytest.raises(NotFoundError):
        await call(remote, prompt_of(2, salt=26), routing=RoutingHints(backend_instance_id=7))
    with pytest.raises(ContextLengthError) as too_long:
        await call(remote, prompt_of(2, salt=26), max_tokens=100_000)
    assert too_long.value.status_code == 400
    assert too_long.value.message.startswith("this model's maximum context length")
    await standalone.stop()


async def test_no_worker_is_a_503(cluster: Cluster, remote: RemoteRouter) -> None:
    standalone = await start_router(cluster, kv_cache_block_size=BLOCK)
    with pytest.raises(NoInstanceError) as caught:
        await call(remote, prompt_of(2, salt=27))
    assert caught.value.status_code == 503
    await standalone.stop()


async def test_no_router_is_a_503(remote: RemoteRouter) -> None:
    with pytest.raises(NoInstanceError):
        await remote.generate(request(prompt_of(1, salt=28)))


async def test_busy_workers_are_rejected_with_retry_after(
    cluster: Cluster,
    remote: RemoteRouter,
) -> None:
    standalone = await start_router(
        cluster, kv_cache_block_size=BLOCK, active_decode_blocks_threshold=0.05
    )
    (worker_id,) = await ready(cluster, standalone, 1, speedup_ratio=1.0)
    live = standalone.router
    assert live is not None
    await until(lambda: live.core.worker_load(worker_id).total_kv_blocks == 512)
    async with asyncio.timeout(DEADLINE_S):
        while not remote._router or not remote._router.instance_ids():
            await asyncio.sleep(0.01)
    long_running = await remote.generate(request(prompt_of(40, salt=29), max_tokens=1000))
    with pytest.raises(ServiceUnavailableError) as caught:
        await remote.generate(request(prompt_of(1, salt=30)))
    assert caught.value.retry_after_s >= 1
    await long_running.aclose()
    await until(lambda: live.core.worker_load(worker_id).num_active_requests == 0)
    served, tokens = await call(remote, prompt_of(1, salt=31))
    assert served == worker_id and tokens == 4
    await standalone.stop()


async def test_closing_a_stream_releases_load_at_the_standalone_router(
    cluster: Cluster,
    remote: RemoteRouter,
) -> None:
    standalone = await start_router(cluster, kv_cache_block_size=BLOCK)
    (worker_id,) = await ready(cluster, standalone, 1, speedup_ratio=1.0)
    live = standalone.router
    assert live is not None
    async with asyncio.timeout(DEADLINE_S):
        while not remote._router or not remote._router.instance_ids():
            await asyncio.sleep(0.01)
    stream = await remote.generate(request(prompt_of(3, salt=32), max_tokens=1000))
    assert stream.worker_id == worker_id
    assert live.core.worker_load(worker_id).num_active_requests == 1
    await stream.aclose()
    await until(lambda: live.core.worker_load(worker_id).num_active_requests == 0)
    engine = cluster.workers[0].engine
    await until(lambda: engine.num_requests == 0)
    await standalone.stop()


async def test_debug_state_endpoint(cluster: Cluster) -> None:
    standalone = await start_router(cluster, kv_cache_block_size=BLOCK)
    (worker_id,) = await ready(cluster, standalone, 1)
    rt: DistributedRuntime = await cluster.runtime()
    debug = dataclasses.replace(ROUTER_ENDPOINT, endpoint=DEBUG_ENDPOINT)
    client = await rt.endpoint(debug).client()
    await client.wait_for_instances(timeout_s=DEADLINE_S)
    (state,) = [s async for s in client.generate({})]
    assert state["router_mode"] == "kv" and state["block_size"] == BLOCK
    assert [w["worker_id"] for w in state["workers"]] == [worker_id]
    await standalone.stop()


# -- flags ------------------------------------------------------------------------------------


def test_flags_resolve_endpoints_and_default_to_kv() -> None:
    config = parse_config(["--model-name", "Qwen/Qwen2.5-7B-Instruct", "--namespace", "ns"])
    assert config.worker_endpoint == EndpointAddress(
        "ns", "backend", model_endpoint_name("Qwen/Qwen2.5-7B-Instruct")
    )
    assert config.router_endpoint == EndpointAddress("ns", "router", "generate")
    assert config.router.router_mode == "kv"
    explicit = parse_config(
        ["--endpoint", "dyn://a.b.c", "--router-endpoint", "dyn://a.r.g", "--router-mode",
         "least-loaded", "--router-temperature", "0.5"]
    )  # fmt: skip
    assert explicit.worker_endpoint == EndpointAddress("a", "b", "c")
    assert explicit.router_endpoint == EndpointAddress("a", "r", "g")
    assert explicit.router.router_mode == "least-loaded"
    assert explicit.router.router_temperature == 0.5


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        ([], "--endpoint"),
        (["--endpoint", "dyn://only.two"], "--endpoint"),
        (["--endpoint", "a.b.c", "--model-name", "m"], "--endpoint"),
        (["--endpoint", "a.b.c", "--router-endpoint", "x"], "--router-endpoint"),
    ],
)
def test_bad_endpoints_name_the_flag(argv: list[str], flag: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(argv)
    assert caught.value.flag == flag


def test_bad_router_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    from stator.router.__main__ import main

    with pytest.raises(SystemExit) as caught:
        main(["--endpoint", "a.b.c", "--router-temperature", "-1"])
    assert caught.value.code == 2
    assert "--router-temperature" in capsys.readouterr().err

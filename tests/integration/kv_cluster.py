"""Mocker workers and live routers in one process (mem discovery, tcp, zmq): shared by the
router integration tests (``test_live_kv_routing``, ``test_router_standalone``)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

from stator.kv.hashing import block_sequence_hashes
from stator.mocker.card import build_model_card, engine_for_model, load_model_info
from stator.mocker.config import MockerConfig
from stator.mocker.worker import MockerWorker, WorkerSpec
from stator.mocker.worker_config import MockerProcessConfig
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest, StopConditions
from stator.router.config import RouterConfig
from stator.router.factory import make_router_core
from stator.router.kv_core import KvRouterCore
from stator.router.live import LiveRouter
from stator.runtime.address import EndpointAddress
from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery.mem import MemStore
from stator.runtime.runtime import DistributedRuntime

ENDPOINT = EndpointAddress("kvtest", "backend", "generate_tiny")
BLOCK = 16
DEADLINE_S = 5.0


class Cluster:
    """Mocker workers and router runtimes over one MemStore; everything stopped by ``close``."""

    def __init__(self, model_dir: Path) -> None:
        self.store = MemStore()
        self.model_dir = model_dir
        self.workers: list[MockerWorker] = []
        self.runtimes: list[DistributedRuntime] = []
        self.routers: list[LiveRouter] = []

    def spec(self, **engine: object) -> WorkerSpec:
        base = MockerConfig(block_size=BLOCK, num_gpu_blocks=512, speedup_ratio=100.0)
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
        rt = await DistributedRuntime.create(
            RuntimeConfig(discovery_backend="mem", namespace=ENDPOINT.namespace),
            mem_store=self.store,
        )
        self.runtimes.append(rt)
        return rt

    async def worker(self, **engine: object) -> MockerWorker:
        rt = await DistributedRuntime.create(
            RuntimeConfig(discovery_backend="mem", namespace=ENDPOINT.namespace),
            mem_store=self.store,
        )
        worker = await MockerWorker.start(rt, self.spec(**engine))
        self.workers.append(worker)
        return worker

    async def router(self, mode: str = "kv", **settings: object) -> LiveRouter:
        config = RouterConfig(router_mode=mode, **settings)  # type: ignore[arg-type]
        core = make_router_core(config, block_size=BLOCK, rng_seed=0)
        router = LiveRouter(await self.runtime(), ENDPOINT, core, config)
        await router.start()
        self.routers.append(router)
        return router

    async def close(self) -> None:
        for router in self.routers:
            await router.close()
        for worker in self.workers:
            await worker.stop(drain_timeout_s=1.0)
        for rt in self.runtimes:
            await rt.shutdown(drain_timeout_s=1.0)


def request(prompt: list[int], max_tokens: int = 4, **kw: object) -> PreprocessedRequest:
    return PreprocessedRequest(
        token_ids=prompt,
        stop_conditions=StopConditions(max_tokens=max_tokens, ignore_eos=True),
        **kw,  # type: ignore[arg-type]
    )


def prompt_of(num_blocks: int, salt: int, tail: int = 5) -> list[int]:
    """``num_blocks`` full blocks (distinct per ``salt``) plus a partial tail."""
    return [(i * 7 + salt * 1009 + 3) % 4000 for i in range(num_blocks * BLOCK + tail)]


async def run(router: LiveRouter, req: PreprocessedRequest) -> tuple[int, list[LLMEngineOutput]]:
    stream = await router.generate(req)
    chunks = [c async for c in stream]
    return stream.worker_id, chunks


async def until(cond: Callable[[], bool], timeout_s: float = DEADLINE_S) -> None:
    async with asyncio.timeout(timeout_s):
        while not cond():
            await asyncio.sleep(0.01)


def kv_core(router: LiveRouter) -> KvRouterCore:
    assert isinstance(router.core, KvRouterCore)
    return router.core


def matched(router: LiveRouter, worker_id: int, prompt: list[int]) -> int:
    """Blocks of ``prompt`` the router's indexer holds for ``worker_id`` (from block 0)."""
    hashes = block_sequence_hashes(prompt, BLOCK)
    return kv_core(router).indexer.find_matches(hashes).scores.get(worker_id, 0)


async def two_workers_and_router(cluster: Cluster) -> tuple[list[int], LiveRouter]:
    ids = [(await cluster.worker()).instance_id for _ in range(2)]
    router = await cluster.router()
    await until(lambda: sorted(router.worker_ids()) == sorted(ids))
    await hears_everyone(router)
    return ids, router


async def hears_everyone(router: LiveRouter) -> None:
    """Wait until the router received a load report from every worker: its subscriptions are
    connected (events published before that are lost: ZMQ's slow joiner)."""

    def heard() -> bool:
        workers = router.debug_state().workers
        return bool(workers) and all(w.events.load_metrics > 0 for w in workers)

    await until(heard)

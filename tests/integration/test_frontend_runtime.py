"""The frontend on the real runtime (mem discovery, tcp request plane) and a real HTTP server:
models from discovery, live routing, pinning, cancellation on disconnect, models coming and
going."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from stator.frontend.config import FrontendConfig
from stator.frontend.service import FrontendService
from stator.frontend.tokenizer import Tokenizer
from stator.mocker.card import engine_for_model, load_model_info
from stator.mocker.config import MockerConfig
from stator.mocker.worker import MockerWorker, WorkerSpec
from stator.router.config import RouterConfig
from stator.runtime.address import EndpointAddress
from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery import keys
from stator.runtime.discovery.mem import MemStore
from stator.runtime.endpoint import ServedEndpoint
from stator.runtime.instance import encode_model_card
from stator.runtime.runtime import DistributedRuntime
from tests.frontend_fakes import REPLY, ScriptedEngine, serve_engine, tiny_card

ADDRESS = "dyn://dynamo.tiny.generate"
MESSAGES = [{"role": "user", "content": "hello"}]


@dataclass
class Cluster:
    """A frontend and worker runtimes sharing one MemStore."""

    store: MemStore
    frontend: FrontendService
    model_dir: Path
    tokenizer: Tokenizer
    runtimes: list[DistributedRuntime] = field(default_factory=list)

    async def worker(
        self, address: str = ADDRESS, name: str = "tiny"
    ) -> tuple[DistributedRuntime, ScriptedEngine, ServedEndpoint]:
        rt = await DistributedRuntime.create(
            RuntimeConfig(discovery_backend="mem"), mem_store=self.store
        )
        self.runtimes.append(rt)
        engine = ScriptedEngine(self.tokenizer)
        served = await serve_engine(rt, address, engine, tiny_card(self.model_dir, name))
        return rt, engine, served

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.frontend.url, timeout=10.0)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def served_models(client: httpx.AsyncClient) -> list[str]:
    return [m["id"] for m in (await client.get("/v1/models")).json()["data"]]


@pytest.fixture
async def cluster(tiny_model_dir: Path) -> AsyncIterator[Cluster]:
    store = MemStore()
    config = FrontendConfig(
        http_host="127.0.0.1",
        http_port=0,
        runtime=RuntimeConfig(discovery_backend="mem"),
        log_level="warning",
    )
    frontend = FrontendService(config, mem_store=store)
    await frontend.start()
    made = Cluster(store, frontend, tiny_model_dir, Tokenizer.from_dir(tiny_model_dir))
    yield made
    await frontend.stop()
    for rt in made.runtimes:
        await rt.shutdown(drain_timeout_s=1.0)


async def chat(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {"model": "tiny", "messages": MESSAGES, **fields}
    return await client.post("/v1/chat/completions", json=body)


async def test_models_come_from_discovery_and_requests_reach_workers(cluster: Cluster) -> None:
    rt_a, engine_a, _ = await cluster.worker()
    rt_b, engine_b, _ = await cluster.worker()
    async with cluster.client() as client:
        await eventually(lambda: _has_instances(client, "tiny", 2))
        workers = set()
        for _ in range(4):
            body = (await chat(client, nvext={"extra_fields": ["worker_id"]})).json()
            assert body["choices"][0]["message"]["content"] == REPLY
            workers.add(body["nvext"]["worker_id"]["decode_worker_id"])
        assert workers == {rt_a.instance_id, rt_b.instance_id}  # round-robin by default
        assert len(engine_a.log.finished) == len(engine_b.log.finished) == 2
        pinned = {"backend_instance_id": rt_b.instance_id, "extra_fields": ["worker_id"]}
        body = (await chat(client, nvext=pinned)).json()
        assert body["nvext"]["worker_id"]["decode_worker_id"] == rt_b.instance_id
        assert (await chat(client, nvext={"backend_instance_id": 12345})).status_code == 404
        debug = (await client.get("/debug/router")).json()["models"]["tiny"]
        assert debug["router_mode"] == "round-robin"
        assert sorted(w["worker_id"] for w in debug["workers"]) == sorted(workers)
        metrics = (await client.get("/metrics")).text
        assert (
            f'stator_frontend_router_active_requests{{model="tiny",worker_id="{rt_a.instance_id}"}}'
            in metrics
        )


async def _has_instances(client: httpx.AsyncClient, model: str, count: int) -> bool:
    health = (await client.get("/health")).json()
    return len(health["models"].get(model, {}).get("instances", [])) == count


async def test_streaming_over_the_runtime(cluster: Cluster) -> None:
    await cluster.worker()
    async with cluster.client() as client:
        await eventually(lambda: _has_instances(client, "tiny", 1))
        body = {"model": "tiny", "messages": MESSAGES, "stream": True, "n": 2}
        body["stream_options"] = {"include_usage": True}
        response = await client.post("/v1/chat/completions", json=body)
        events = [e for e in response.text.split("\n\n") if e]
        assert events[-1] == "data: [DONE]"
        chunks = [json.loads(e[6:]) for e in events[:-1]]
        for index in (0, 1):
            text = "".join(
                c["choices"][0]["delta"].get("content", "")
                for c in chunks
                if c["choices"] and c["choices"][0]["index"] == index
            )
            assert text == REPLY
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


async def test_client_disconnect_cancels_the_request_at_the_worker(cluster: Cluster) -> None:
    _, engine, _ = await cluster.worker()
    async with cluster.client() as client:
        await eventually(lambda: _has_instances(client, "tiny", 1))
        body = {
            "model": "tiny",
            "messages": MESSAGES,
            "stream": True,
            "nvext": {"annotations": ["delay_ms:50"]},
        }
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            lines = response.aiter_lines()
            first = await anext(lines)
            assert first.startswith("data: ")
        # the response is closed after one event: the worker must see a cancellation
        await eventually(_async(lambda: len(engine.log.cancelled) == 1))
        assert engine.log.finished == []
        # non-streaming: the client gives up while waiting for the whole answer
        task = asyncio.create_task(chat(client, nvext={"annotations": ["delay_ms:50"]}))
        await eventually(_async(lambda: len(engine.log.requests) == 2))
        task.cancel()
        await eventually(_async(lambda: len(engine.log.cancelled) == 2))
        metrics = (await client.get("/metrics")).text
        assert 'status="499"' in metrics
        assert 'stator_frontend_inflight_requests{model="tiny"} 0.0' in metrics


def _async(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def wrapped() -> bool:
        return check()

    return wrapped


async def test_model_goes_with_its_last_instance(cluster: Cluster) -> None:
    _, _, served_a = await cluster.worker()
    _, _, served_b = await cluster.worker()
    async with cluster.client() as client:
        await eventually(lambda: _has_instances(client, "tiny", 2))
        await served_a.stop()
        await eventually(lambda: _has_instances(client, "tiny", 1))
        assert (await chat(client)).status_code == 200
        await served_b.stop()
        await eventually(_models_are(client, []))
        assert (await chat(client)).status_code == 404


def _models_are(client: httpx.AsyncClient, names: list[str]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await served_models(client) == names

    return check


async def test_several_models_at_once(cluster: Cluster) -> None:
    await cluster.worker("dyn://dynamo.tiny.generate", "tiny")
    await cluster.worker("dyn://dynamo.other.generate", "other")
    async with cluster.client() as client:
        await eventually(_models_are(client, ["other", "tiny"]))
        for model in ("tiny", "other"):
            body = (await chat(client, model=model)).json()
            assert body["model"] == model
            assert body["choices"][0]["message"]["content"] == REPLY


async def test_model_with_no_live_instance_is_503(cluster: Cluster) -> None:
    rt = await DistributedRuntime.create(
        RuntimeConfig(discovery_backend="mem"), mem_store=cluster.store
    )
    cluster.runtimes.append(rt)
    address = EndpointAddress.parse(ADDRESS)
    card = encode_model_card(tiny_card(cluster.model_dir))
    await rt.discovery.put(keys.model_card_key(address, 0xABC), card)  # a card, no instance
    async with cluster.client() as client:
        await eventually(_models_are(client, ["tiny"]))
        response = await chat(client)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "no_instance"


async def test_against_the_mocker_in_kv_mode(tiny_model_dir: Path) -> None:
    store = MemStore()
    config = FrontendConfig(
        http_host="127.0.0.1",
        http_port=0,
        runtime=RuntimeConfig(discovery_backend="mem"),
        router=RouterConfig(router_mode="kv"),
        log_level="warning",
    )
    frontend = FrontendService(config, mem_store=store)
    await frontend.start()
    engine = engine_for_model(
        MockerConfig(block_size=16, speedup_ratio=100.0), load_model_info(str(tiny_model_dir))
    )
    card = tiny_card(tiny_model_dir, context_length=engine.max_model_len or 0)
    workers = []
    for _ in range(2):
        rt = await DistributedRuntime.create(
            RuntimeConfig(discovery_backend="mem"), mem_store=store
        )
        spec = WorkerSpec(EndpointAddress.parse(ADDRESS), engine, card, rng_seed=1)
        workers.append(await MockerWorker.start(rt, spec))
    try:
        async with httpx.AsyncClient(base_url=frontend.url, timeout=10.0) as client:
            await eventually(lambda: _has_instances(client, "tiny", 2))
            prompt = list(range(10, 10 + 16 * 6))  # six full blocks
            body = {"model": "tiny", "prompt": prompt, "max_tokens": 8, "ignore_eos": True}
            body["nvext"] = {"extra_fields": ["worker_id"]}
            first = (await client.post("/v1/completions", json=body)).json()
            assert first["usage"]["completion_tokens"] == 8
            served_by = first["nvext"]["worker_id"]["decode_worker_id"]

            async def cached_again() -> bool:  # KV events reach the router asynchronously
                again = (await client.post("/v1/completions", json=body)).json()
                cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]
                worker = again["nvext"]["worker_id"]["decode_worker_id"]
                return bool(cached >= 16 * 5 and worker == served_by)

            await eventually(cached_again)
            stream = await client.post(
                "/v1/chat/completions",
                json={"model": "tiny", "messages": MESSAGES, "max_tokens": 5, "stream": True},
            )
            events = [e for e in stream.text.split("\n\n") if e]
            assert events[-1] == "data: [DONE]"
            assert json.loads(events[-2][6:])["choices"][0]["finish_reason"] == "length"
    finally:
        await frontend.stop()
        for worker in workers:
            await worker.stop()

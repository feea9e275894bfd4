"""The official ``openai`` SDK (sync and async) against a running frontend on the runtime."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import openai
import pytest

from stator.frontend.config import FrontendConfig
from stator.frontend.service import FrontendService
from stator.frontend.tokenizer import Tokenizer
from stator.runtime.config import RuntimeConfig
from stator.runtime.discovery.mem import MemStore
from stator.runtime.runtime import DistributedRuntime
from tests.frontend_fakes import REPLY, ScriptedEngine, serve_engine, tiny_card

MESSAGES: list[dict[str, str]] = [{"role": "user", "content": "hello"}]


@pytest.fixture
async def base_url(tiny_model_dir: Path) -> AsyncIterator[str]:
    store = MemStore()
    worker = await DistributedRuntime.create(
        RuntimeConfig(discovery_backend="mem"), mem_store=store
    )
    engine = ScriptedEngine(Tokenizer.from_dir(tiny_model_dir))
    await serve_engine(worker, "dyn://dynamo.tiny.generate", engine, tiny_card(tiny_model_dir))
    config = FrontendConfig(
        http_host="127.0.0.1",
        http_port=0,
        runtime=RuntimeConfig(discovery_backend="mem"),
        log_level="warning",
    )
    frontend = FrontendService(config, mem_store=store)
    await frontend.start()
    for _ in range(200):
        if "tiny" in frontend.registry and frontend.registry.get("tiny").router.worker_ids():
            break
        await asyncio.sleep(0.02)
    yield f"{frontend.url}/v1"
    await frontend.stop()
    await worker.shutdown(drain_timeout_s=1.0)


@pytest.fixture
async def aclient(base_url: str) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", max_retries=0)
    yield client
    await client.close()


async def test_async_chat(aclient: openai.AsyncOpenAI) -> None:
    response = await aclient.chat.completions.create(model="tiny", messages=MESSAGES)  # type: ignore[arg-type]
    assert response.choices[0].message.content == REPLY
    assert response.choices[0].finish_reason == "stop"
    assert response.usage is not None and response.usage.completion_tokens > 0
    details = response.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == response.usage.prompt_tokens // 2


async def test_async_chat_stream_with_usage(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])


async def test_async_n_and_stop(aclient: openai.AsyncOpenAI) -> None:
    response = await aclient.chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
        n=3,
        stop=["世界"],
    )
    assert len(response.choices) == 3
    for choice in response.choices:
        assert choice.message.content == REPLY[: REPLY.index("世界")]
        assert choice.finish_reason == "stop"


async def test_async_completions_stream(aclient: openai.AsyncOpenAI) -> None:
    stream = await aclient.completions.create(
        model="tiny", prompt=["a", "b"], n=2, max_tokens=4, stream=True
    )
    by_index: dict[int, str] = {}
    finishes: dict[int, str | None] = {}
    async for chunk in stream:
        for choice in chunk.choices:
            by_index[choice.index] = by_index.get(choice.index, "") + choice.text
            finishes[choice.index] = choice.finish_reason
    assert sorted(by_index) == [0, 1, 2, 3]
    assert len(set(by_index.values())) == 1
    assert set(finishes.values()) == {"length"}


async def test_sdk_errors(aclient: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        await aclient.chat.completions.create(model="missing", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError) as info:
        await aclient.chat.completions.create(model="tiny", messages=MESSAGES, temperature=5)  # type: ignore[arg-type]
    assert "temperature" in str(info.value)
    with pytest.raises(openai.BadRequestError):
        await aclient.completions.create(model="tiny", prompt=[999_999])


async def test_nvext_through_extra_body(aclient: openai.AsyncOpenAI) -> None:
    response = await aclient.chat.completions.create(
        model="tiny",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=2,
        extra_body={"nvext": {"extra_fields": ["worker_id", "timing"]}},
    )
    extra = response.model_extra or {}
    assert extra["nvext"]["worker_id"]["decode_worker_id"] > 0
    assert extra["nvext"]["timing"]["total_time_ms"] >= 0


def _sync_calls(base_url: str) -> tuple[str, str, list[str], str]:
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    try:
        chat = client.chat.completions.create(model="tiny", messages=MESSAGES)  # type: ignore[arg-type]
        stream = client.chat.completions.create(
            model="tiny",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        completion = client.completions.create(model="tiny", prompt="x", max_tokens=3, n=2)
        models = [m.id for m in client.models.list()]
        return chat.choices[0].message.content or "", streamed, models, completion.choices[1].text
    finally:
        client.close()


async def test_sync_client(base_url: str) -> None:
    chat, streamed, models, completion = await asyncio.to_thread(_sync_calls, base_url)
    assert chat == streamed == REPLY
    assert models == ["tiny"]
    assert completion and REPLY.startswith(completion)

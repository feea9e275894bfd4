"""A frontend (kv router) and one ``stator.vllm`` worker on the real vLLM CPU engine.

One worker and one frontend serve the whole module (a vLLM start costs tens of seconds). The
client side is the ``openai`` SDK over HTTP, the worker's ``/metrics`` and ``/health``, the
frontend's ``/debug/router``, and the runtime client for the worker's ``kv_dump`` endpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from stator.kv.hashing import block_sequence_hashes
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest, StopConditions
from stator.protocols.kv_events import KvCacheDump
from stator.runtime.address import EndpointAddress
from stator.runtime.config import RuntimeConfig
from stator.runtime.runtime import DistributedRuntime
from tests.e2e.vllm_procs import (
    Proc,
    Worker,
    metric_value,
    requires_vllm,
    start_frontend,
    start_worker,
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow, requires_vllm, pytest.mark.timeout(900)]

MODEL = "tiny"
BLOCK_SIZE = 32
LONG_PROMPT = " ".join(f"line {i}: value = compute(x{i}, y{i})" for i in range(40))


@dataclass
class Deployment:
    url: str
    worker: Worker
    frontend: Proc
    discovery_dir: Path

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)

    def metrics(self) -> str:
        return httpx.get(f"{self.worker.metrics_url}/metrics", timeout=10).text


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("vllm")
    discovery = tmp / "discovery"
    procs: list[Proc] = []
    try:
        worker = start_worker(tmp, discovery, tiny_model_dir, MODEL)
        procs.append(worker.proc)
        frontend, url = start_frontend(tmp, discovery, "--router-mode", "kv")
        procs.append(frontend)
        _wait_for_model(url, MODEL)
        yield Deployment(url, worker, frontend, discovery)
    finally:
        for proc in reversed(procs):
            proc.stop()


def _wait_for_model(url: str, model: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        models = httpx.get(f"{url}/v1/models", timeout=5).json()
        if any(m["id"] == model for m in models.get("data", [])):
            return
        time.sleep(0.2)
    pytest.fail(f"model {model!r} not listed by the frontend within {timeout_s} s")


def test_chat_and_completion_non_streaming(deployment: Deployment) -> None:
    client = deployment.client()
    chat = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hello"}],
        max_tokens=6,
        extra_body={"ignore_eos": True},
    )
    assert chat.choices[0].finish_reason == "length"
    assert chat.choices[0].message.content
    assert chat.usage is not None and chat.usage.completion_tokens == 6
    done = client.completions.create(
        model=MODEL, prompt="def f(x):", max_tokens=5, extra_body={"ignore_eos": True}
    )
    assert done.choices[0].finish_reason == "length" and done.choices[0].text
    assert done.usage is not None and done.usage.completion_tokens == 5


def test_chat_and_completion_streaming(deployment: Deployment) -> None:
    client = deployment.client()
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert text and reasons[-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7
    pieces = list(
        client.completions.create(
            model=MODEL,
            prompt="import os\n",
            max_tokens=4,
            stream=True,
            extra_body={"ignore_eos": True},
        )
    )
    assert "".join(p.choices[0].text for p in pieces if p.choices)
    assert [p.choices[0].finish_reason for p in pieces if p.choices][-1] == "length"


def test_max_tokens_without_ignore_eos_is_an_upper_bound(deployment: Deployment) -> None:
    done = deployment.client().completions.create(model=MODEL, prompt="x = ", max_tokens=9)
    assert done.usage is not None and 1 <= done.usage.completion_tokens <= 9
    assert done.choices[0].finish_reason in ("stop", "length")
    if done.choices[0].finish_reason == "length":
        assert done.usage.completion_tokens == 9


def test_n_choices(deployment: Deployment) -> None:
    done = deployment.client().completions.create(
        model=MODEL,
        prompt="print(",
        max_tokens=4,
        n=3,
        temperature=1.0,
        extra_body={"ignore_eos": True},
    )
    assert sorted(c.index for c in done.choices) == [0, 1, 2]
    assert all(c.finish_reason == "length" for c in done.choices)
    assert done.usage is not None and done.usage.completion_tokens == 12


def test_stop_string_cuts_the_output(deployment: Deployment) -> None:
    client = deployment.client()
    kwargs = {
        "model": MODEL,
        "prompt": "hello",
        "max_tokens": 24,
        "temperature": 0.0,
        "extra_body": {"ignore_eos": True},
    }
    full = client.completions.create(**kwargs).choices[0].text  # type: ignore[call-overload]
    # the latest 3-character piece that does not occur earlier (greedy output of a random
    # model repeats itself)
    cut = max((k for k in range(1, len(full) - 3) if full.find(full[k : k + 3]) == k), default=None)
    assert cut is not None, f"no unique 3-character piece in {full!r}"
    stop = full[cut : cut + 3]
    stopped = client.completions.create(stop=[stop], **kwargs).choices[0]  # type: ignore[call-overload]
    assert stopped.finish_reason == "stop"
    assert stopped.text == full[:cut]


def test_repeated_long_prompt_hits_the_prefix_cache_and_the_router_sees_it(
    deployment: Deployment,
) -> None:
    client = deployment.client()
    first = client.completions.create(model=MODEL, prompt=LONG_PROMPT, max_tokens=2)
    second = client.completions.create(model=MODEL, prompt=LONG_PROMPT, max_tokens=2)
    assert first.usage is not None and first.usage.prompt_tokens > 2 * BLOCK_SIZE
    details = second.usage.prompt_tokens_details if second.usage else None
    assert details is not None and details.cached_tokens
    assert details.cached_tokens >= BLOCK_SIZE
    worker = _router_view(deployment)
    assert worker["events"]["blocks_stored"] > 0
    assert worker["cached_blocks"] >= first.usage.prompt_tokens // BLOCK_SIZE
    relayed = metric_value(deployment.metrics(), "stator_worker_kv_event_batches_published_total")
    assert relayed >= 1


def _router_view(deployment: Deployment, timeout_s: float = 10.0) -> dict[str, Any]:
    """The frontend router's record of the worker, once it holds blocks from its events."""
    deadline = time.monotonic() + timeout_s
    while True:
        debug = httpx.get(f"{deployment.url}/debug/router", timeout=5).json()
        workers = debug["models"][MODEL]["workers"]
        mine = [w for w in workers if w["worker_id"] == deployment.worker.instance_id]
        assert mine, f"router does not know worker {deployment.worker.instance_id}: {workers}"
        view: dict[str, Any] = mine[0]
        if view["events"]["blocks_stored"] > 0 or time.monotonic() > deadline:
            return view
        time.sleep(0.2)


async def test_kv_dump_holds_the_routers_hashes_of_a_prompt(deployment: Deployment) -> None:
    prompt = list(range(1000, 1000 + 5 * BLOCK_SIZE + 7))
    config = RuntimeConfig(discovery_dir=str(deployment.discovery_dir))
    async with await DistributedRuntime.create(config) as rt:
        generate = await rt.endpoint(deployment.worker.endpoint).client()
        request = PreprocessedRequest(
            token_ids=prompt, stop_conditions=StopConditions(max_tokens=1)
        )
        chunks = [
            c
            async for c in generate.direct(request, deployment.worker.instance_id, LLMEngineOutput)
        ]
        assert chunks[-1].finish_reason == "length"
        address = EndpointAddress.parse(deployment.worker.endpoint)
        dump_client = await rt.endpoint(f"{address.namespace}.{address.component}.kv_dump").client()
        dumps = [
            d async for d in dump_client.direct({}, deployment.worker.instance_id, KvCacheDump)
        ]
    assert len(dumps) == 1 and dumps[0].worker_id == deployment.worker.instance_id
    cached = {e.block_hashes[0] for e in dumps[0].events}
    assert set(block_sequence_hashes(prompt, BLOCK_SIZE)) <= cached
    assert dumps[0].event_id >= 1


def test_client_disconnect_aborts_the_request_in_vllm(deployment: Deployment) -> None:
    before = metric_value(deployment.metrics(), "vllm:generation_tokens_total")
    body = {
        "model": MODEL,
        "prompt": "for i in range(",
        "max_tokens": 1000,
        "stream": True,
        "ignore_eos": True,
    }
    with (
        httpx.Client(base_url=deployment.url, timeout=60) as http,
        http.stream("POST", "/v1/completions", json=body) as reply,
    ):
        assert reply.status_code == 200
        lines = reply.iter_lines()
        for _ in range(3):
            next(line for line in lines if line.startswith("data: "))
        running = metric_value(deployment.metrics(), "vllm:num_requests_running")
        assert running == 1
    # leaving the block closed the connection mid-stream
    assert _eventually(lambda: metric_value(deployment.metrics(), "vllm:num_requests_running") == 0)
    metrics = deployment.metrics()
    assert metric_value(metrics, "stator_worker_inflight_requests") == 0
    time.sleep(1.0)  # an unaborted request would keep generating here
    generated = metric_value(deployment.metrics(), "vllm:generation_tokens_total") - before
    assert generated < 1000


def _eventually(check: object, timeout_s: float = 30.0) -> bool:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return bool(check())


def test_health_and_metrics(deployment: Deployment) -> None:
    reply = httpx.get(f"{deployment.worker.metrics_url}/health", timeout=10)
    assert reply.status_code == 200
    report = reply.json()
    assert report["status"] == "healthy" and report["model_name"] == MODEL
    assert report["endpoint"] == deployment.worker.endpoint
    assert _eventually(
        lambda: httpx.get(f"{deployment.worker.metrics_url}/health").json()["num_checks"] >= 1
    )
    metrics = deployment.metrics()
    assert metric_value(metrics, "vllm:num_requests_waiting") == 0
    assert metric_value(metrics, "stator_worker_healthy") == 1

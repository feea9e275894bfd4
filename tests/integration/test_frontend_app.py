"""The frontend app over ASGI with a fake router and the scripted engine: OpenAI shapes,
streaming rules, usage, nvext, errors, ops routes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stator.frontend.app import create_app
from tests.frontend_fakes import REPLY, FakeDeployment, fake_deployment

MESSAGES = [{"role": "user", "content": "Say hello"}]


@pytest.fixture
async def deployment(tiny_model_dir: Path) -> FakeDeployment:
    return await fake_deployment(tiny_model_dir)


@pytest.fixture
async def client(deployment: FakeDeployment) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(deployment.registry)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://frontend") as c:
        yield c


async def chat(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {"model": "tiny", "messages": MESSAGES, **fields}
    return await client.post("/v1/chat/completions", json=body)


async def complete(client: httpx.AsyncClient, **fields: Any) -> httpx.Response:
    body = {"model": "tiny", "prompt": "def f(x):", **fields}
    return await client.post("/v1/completions", json=body)


def sse_payloads(response: httpx.Response) -> list[Any]:
    """The events of an SSE body, checking the framing; ``[DONE]`` must be last."""
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    return [json.loads(e[len("data: ") :]) for e in events[:-1]]


def prompt_len(deployment: FakeDeployment, messages: list[dict[str, str]]) -> int:
    text = deployment.pipeline.template.render(messages)  # type: ignore[union-attr]
    return len(deployment.pipeline.tokenizer.encode(text, add_special_tokens=False))


# -- chat -----------------------------------------------------------------------------------


async def test_chat_non_streaming(client: httpx.AsyncClient, deployment: FakeDeployment) -> None:
    response = await chat(client)
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert body["model"] == "tiny" and isinstance(body["created"], int)
    [choice] = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": REPLY, "refusal": None}
    assert choice["finish_reason"] == "stop"
    isl = prompt_len(deployment, MESSAGES)
    osl = len(deployment.engine.reply_ids) + 1  # the EOS token is counted, not shown
    assert body["usage"] == {
        "prompt_tokens": isl,
        "completion_tokens": osl,
        "total_tokens": isl + osl,
        "prompt_tokens_details": {"cached_tokens": isl // 2},
    }
    sent = deployment.engine.log.requests[0]
    assert sent.token_ids == deployment.pipeline.tokenizer.encode(
        deployment.pipeline.template.render(MESSAGES),  # type: ignore[union-attr]
        add_special_tokens=False,
    )
    assert sent.eos_token_ids and sent.stop_conditions.max_tokens == 2048 - isl


async def test_chat_streaming_follows_openai(client: httpx.AsyncClient) -> None:
    chunks = sse_payloads(await chat(client, stream=True))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert all("usage" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == REPLY  # multi-byte characters split across tokens come out whole
    finishes = [c["choices"][0]["finish_reason"] for c in chunks]
    assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1])


async def test_include_usage_adds_null_usage_and_a_final_usage_chunk(
    client: httpx.AsyncClient,
) -> None:
    response = await chat(client, stream=True, stream_options={"include_usage": True})
    chunks = sse_payloads(response)
    *content, last = chunks
    assert all(c["usage"] is None for c in content)
    assert last["choices"] == []
    usage = last["usage"]
    assert usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] // 2


async def test_continuous_usage_stats_counts_up(client: httpx.AsyncClient) -> None:
    options = {"continuous_usage_stats": True}
    chunks = sse_payloads(await chat(client, stream=True, stream_options=options, max_tokens=4))
    counts = [c["usage"]["completion_tokens"] for c in chunks]
    assert counts == sorted(counts) and counts[-1] == 4


async def test_max_tokens_gives_length(client: httpx.AsyncClient) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        body = (await chat(client, **{field: 3})).json()
        assert body["choices"][0]["finish_reason"] == "length"
        assert body["usage"]["completion_tokens"] == 3


async def test_stop_string_truncates_and_cancels_the_engine(
    client: httpx.AsyncClient, deployment: FakeDeployment
) -> None:
    body = (await chat(client, stop=["wörld"])).json()
    assert body["choices"][0]["message"]["content"] == REPLY[: REPLY.index("wörld")]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert deployment.engine.log.cancelled == [deployment.engine.log.requests[0].request_id]
    chunks = sse_payloads(await chat(client, stream=True, stop="世界"))
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == REPLY[: REPLY.index("世界")]


async def test_n_choices_fan_out(client: httpx.AsyncClient, deployment: FakeDeployment) -> None:
    body = (await chat(client, n=3, seed=7)).json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert all(c["message"]["content"] == REPLY for c in body["choices"])
    requests = deployment.engine.log.requests
    assert len({r.request_id for r in requests}) == 3
    assert [r.sampling_options.seed for r in requests] == [7, 8, 9]
    chunks = sse_payloads(await chat(client, n=2, stream=True))
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"
        assert "".join(m["delta"].get("content", "") for m in mine) == REPLY
        assert [m["finish_reason"] for m in mine][-1] == "stop"
        assert all(m["finish_reason"] is None for m in mine[:-1])


async def test_engine_options_are_passed_through(
    client: httpx.AsyncClient, deployment: FakeDeployment
) -> None:
    response = await chat(
        client,
        temperature=0.3,
        top_p=0.8,
        top_k=5,
        min_tokens=2,
        ignore_eos=True,
        max_tokens=40,
        repetition_penalty=1.2,
        frequency_penalty=0.5,
        presence_penalty=-0.5,
        nvext={"agent_hints": {"priority": 9}, "annotations": ["tag:1"]},
    )
    assert response.status_code == 200
    body = response.json()
    assert body["usage"]["completion_tokens"] == 40  # ignore_eos runs to max_tokens
    sent = deployment.engine.log.requests[0]
    s = sent.sampling_options
    assert (s.temperature, s.top_p, s.top_k, s.repetition_penalty) == (0.3, 0.8, 5, 1.2)
    assert (s.frequency_penalty, s.presence_penalty) == (0.5, -0.5)
    assert sent.stop_conditions.min_tokens == 2 and sent.stop_conditions.ignore_eos
    assert sent.priority == 9 and sent.annotations == ["tag:1"]


async def test_nvext_worker_id_timing_and_pinning(client: httpx.AsyncClient) -> None:
    nvext = {"extra_fields": ["worker_id", "timing"], "backend_instance_id": 22}
    body = (await chat(client, nvext=nvext)).json()
    assert body["nvext"]["worker_id"]["decode_worker_id"] == 22
    timing = body["nvext"]["timing"]
    assert 0 <= timing["ttft_ms"] <= timing["total_time_ms"]
    chunks = sse_payloads(await chat(client, stream=True, nvext=nvext))
    # as Dynamo: worker_id on every chunk, timing on the last one only
    assert all(c["nvext"]["worker_id"]["decode_worker_id"] == 22 for c in chunks)
    assert "timing" in chunks[-1]["nvext"]
    assert all("timing" not in c["nvext"] for c in chunks[:-1])
    plain = (await chat(client)).json()
    assert "nvext" not in plain
    missing = await chat(client, nvext={"backend_instance_id": 999})
    assert missing.status_code == 404


async def test_chat_logprobs(client: httpx.AsyncClient) -> None:
    body = (await chat(client, logprobs=True, top_logprobs=2, max_tokens=3)).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == 3
    assert all(item["logprob"] == -0.25 and len(item["top_logprobs"]) == 2 for item in content)
    assert "".join(item["token"] for item in content) == body["choices"][0]["message"]["content"]


# -- completions ------------------------------------------------------------------------------


async def test_completion_prompt_forms(
    client: httpx.AsyncClient, deployment: FakeDeployment
) -> None:
    tok = deployment.pipeline.tokenizer
    ids = tok.encode("def f(x):")
    for prompt in ("def f(x):", ["def f(x):"], ids, [ids]):
        body = (await complete(client, prompt=prompt, max_tokens=4)).json()
        assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
        [choice] = body["choices"]
        assert choice["text"] == tok.decode(deployment.engine.expected_ids(4))
        assert choice["finish_reason"] == "length"
        assert body["usage"]["prompt_tokens"] == len(ids)


async def test_completion_default_max_tokens_is_16(client: httpx.AsyncClient) -> None:
    body = (await complete(client, ignore_eos=True)).json()
    assert body["usage"]["completion_tokens"] == 16


async def test_completion_many_prompts_and_n(
    client: httpx.AsyncClient, deployment: FakeDeployment
) -> None:
    body = (await complete(client, prompt=["a", "bb bb"], n=2, max_tokens=2, echo=True)).json()
    texts = [c["text"] for c in body["choices"]]
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    reply = deployment.pipeline.tokenizer.decode(deployment.engine.expected_ids(2))
    assert texts == ["a" + reply, "a" + reply, "bb bb" + reply, "bb bb" + reply]
    isl = sum(len(deployment.pipeline.tokenizer.encode(p)) for p in ("a", "bb bb"))
    assert body["usage"]["prompt_tokens"] == isl
    assert body["usage"]["completion_tokens"] == 8


async def test_completion_streaming_and_logprobs(client: httpx.AsyncClient) -> None:
    response = await complete(
        client, stream=True, logprobs=1, max_tokens=5, stream_options={"include_usage": True}
    )
    chunks = sse_payloads(response)
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 5
    body = chunks[:-1]
    assert all(c["object"] == "text_completion" and c["usage"] is None for c in body)
    assert [c["choices"][0]["finish_reason"] for c in body][-1] == "length"
    tokens = [t for c in body for t in c["choices"][0]["logprobs"]["tokens"]]
    assert "".join(tokens) == "".join(c["choices"][0]["text"] for c in body)


# -- errors -----------------------------------------------------------------------------------


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    error = assert_openai_error(await chat(client, model="nope"), 404)
    assert error["param"] == "model" and error["code"] == "model_not_found"
    assert_openai_error(await complete(client, model="nope"), 404)
    assert_openai_error(await client.get("/v1/models/nope"), 404)


async def test_model_without_instances_is_503(
    client: httpx.AsyncClient, deployment: FakeDeployment
) -> None:
    deployment.router.workers.clear()
    assert_openai_error(await chat(client), 503)
    assert_openai_error(await chat(client, stream=True), 503)


async def test_context_length_is_400(client: httpx.AsyncClient) -> None:
    error = assert_openai_error(await chat(client, max_tokens=2040), 400)
    assert error["code"] == "context_length_exceeded"
    long_prompt = list(range(3, 2100))
    error = assert_openai_error(await complete(client, prompt=long_prompt), 400)
    assert error["code"] == "context_length_exceeded" and "2048" in error["message"]


async def test_token_ids_outside_the_vocabulary_are_400(
    client: httpx.AsyncClient, deployment: FakeDeployment
) -> None:
    vocab = deployment.pipeline.tokenizer.vocab_size
    for prompt in ([1, vocab], [-1], [[5], [vocab + 10]]):
        error = assert_openai_error(await complete(client, prompt=prompt), 400)
        assert error["param"] == "prompt"


BAD_BODIES: list[tuple[str, bytes]] = [
    ("/v1/chat/completions", b"{not json"),
    ("/v1/chat/completions", b""),
    ("/v1/chat/completions", b"[1, 2]"),
    ("/v1/chat/completions", b'{"model": "tiny"}'),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": []}'),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"content": "x"}]}'),
    ("/v1/chat/completions", b'{"model": "tiny", "messages": [{"role": 3, "content": "x"}]}'),
    ("/v1/chat/completions", b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "temperature": 9}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "temperature": "warm"}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "top_p": 0}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "top_p": 1.01}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "max_tokens": 0}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "max_tokens": "ten"}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "n": 0}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "n": 1000}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": []}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": [1, "a"]}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": {"text": "x"}}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "stop": [""]}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "stream": "yes"}'),
    ("/v1/completions", b'{"model": "tiny", "prompt": "x", "suffix": "tail"}'),
    ("/v1/completions", b"\xff\xfe\x00garbage"),
]


@pytest.mark.parametrize(("path", "body"), BAD_BODIES)
async def test_bad_input_is_400_in_openai_shape(
    client: httpx.AsyncClient, path: str, body: bytes
) -> None:
    headers = {"content-type": "application/json"}
    assert_openai_error(await client.post(path, content=body, headers=headers), 400)


async def test_unknown_route_and_method_have_openai_errors(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.get("/v1/nothing"), 404)
    assert_openai_error(await client.get("/v1/chat/completions"), 405)


async def test_engine_error_mid_stream(client: httpx.AsyncClient) -> None:
    nvext = {"annotations": ["error_after:3"]}
    error = assert_openai_error(await chat(client, nvext=nvext), 500)
    assert "scripted engine error" in error["message"]
    response = await chat(client, stream=True, nvext=nvext)
    assert response.status_code == 200
    events = [e for e in response.text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]"
    assert "scripted engine error" in json.loads(events[-2][len("data: ") :])["error"]["message"]


async def test_broken_worker_is_a_500_without_internals(client: httpx.AsyncClient) -> None:
    error = assert_openai_error(await chat(client, nvext={"annotations": ["fail_after:2"]}), 500)
    assert "scripted" not in error["message"]


async def test_server_answers_normally_after_500_invalid_requests(
    client: httpx.AsyncClient,
) -> None:
    for i in range(500):
        path, body = BAD_BODIES[i % len(BAD_BODIES)]
        response = await client.post(path, content=body)
        assert response.status_code == 400
    body = (await chat(client)).json()
    assert body["choices"][0]["message"]["content"] == REPLY
    metrics = (await client.get("/metrics")).text
    assert 'stator_frontend_inflight_requests{model="tiny"} 0.0' in metrics


# -- models and ops ---------------------------------------------------------------------------


async def test_models_health_live_metrics_openapi(client: httpx.AsyncClient) -> None:
    models = (await client.get("/v1/models")).json()
    assert models["object"] == "list"
    assert [(m["id"], m["object"]) for m in models["data"]] == [("tiny", "model")]
    assert (await client.get("/v1/models/tiny")).json()["id"] == "tiny"
    health = (await client.get("/health")).json()
    assert health["models"] == {"tiny": {"instances": [11, 22]}}
    assert (await client.get("/live")).status_code == 200
    await chat(client)
    await chat(client, stream=True)
    metrics = (await client.get("/metrics")).text
    for name in (
        "stator_frontend_requests_total",
        "stator_frontend_inflight_requests",
        "stator_frontend_time_to_first_token_seconds",
        "stator_frontend_inter_token_latency_seconds",
        "stator_frontend_request_duration_seconds",
        "stator_frontend_input_sequence_tokens",
        "stator_frontend_output_sequence_tokens",
        "stator_frontend_cached_tokens",
    ):
        assert name in metrics
    assert 'request_type="stream",status="200"' in metrics
    schema = (await client.get("/openapi.json")).json()
    chat_body = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert "ChatCompletionRequest" in json.dumps(chat_body)
    assert "ChatCompletionRequest" in schema["components"]["schemas"]


async def test_model_names_with_slashes(tiny_model_dir: Path) -> None:
    deployment = await fake_deployment(tiny_model_dir, name="org/model-1")
    transport = httpx.ASGITransport(app=create_app(deployment.registry))
    async with httpx.AsyncClient(transport=transport, base_url="http://f") as c:
        assert (await c.get("/v1/models/org/model-1")).json()["id"] == "org/model-1"
        response = await c.post(
            "/v1/chat/completions", json={"model": "org/model-1", "messages": MESSAGES}
        )
        assert response.json()["model"] == "org/model-1"


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    from stator.frontend.app import MAX_BODY_BYTES

    body = b'{"model": "tiny", "prompt": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'
    assert_openai_error(await client.post("/v1/completions", content=body), 413)

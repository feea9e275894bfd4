"""OpenAI request decoding/validation and error bodies (no sockets)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from stator.errors import (
    ContextLengthError,
    InvalidRequestError,
    NoInstanceError,
    NotFoundError,
    ServiceUnavailableError,
    StatorError,
)
from stator.frontend.errors import as_stator_error, error_body, error_response
from stator.frontend.protocol import (
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatDelta,
    Usage,
    decode_chat,
    decode_completion,
    output_limit,
    prompt_kind,
    stop_strings,
)

MSG = [{"role": "user", "content": "hi"}]


def chat(**fields: Any) -> bytes:
    body = {"model": "m", "messages": MSG, **fields}
    return json.dumps(body).encode()


def completion(**fields: Any) -> bytes:
    body = {"model": "m", "prompt": "hi", **fields}
    return json.dumps(body).encode()


def test_minimal_chat_request_has_openai_defaults() -> None:
    req = decode_chat(chat())
    assert req.model == "m" and req.n == 1 and req.stream is False
    assert req.messages[0].role == "user"
    assert msgspec.to_builtins(req.messages[0]) == {"role": "user", "content": "hi"}
    assert output_limit(req) is None
    assert stop_strings(req) == []


def test_chat_request_with_every_supported_field() -> None:
    req = decode_chat(
        chat(
            n=3,
            stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
            stop=["a", "b"],
            max_tokens=10,
            max_completion_tokens=7,
            min_tokens=2,
            ignore_eos=True,
            temperature=0.5,
            top_p=0.9,
            top_k=5,
            seed=42,
            frequency_penalty=0.1,
            presence_penalty=-0.1,
            repetition_penalty=1.1,
            logprobs=True,
            top_logprobs=3,
            user="u",
            tools=[{"type": "function", "function": {"name": "f"}}],
            nvext={
                "extra_fields": ["worker_id", "timing"],
                "backend_instance_id": 7,
                "agent_hints": {"priority": 5},
                "annotations": ["a"],
            },
            some_future_field={"ignored": True},
        )
    )
    assert output_limit(req) == 7  # max_completion_tokens wins
    assert req.stream_options is not None and req.stream_options.include_usage
    assert stop_strings(req) == ["a", "b"]
    assert req.nvext is not None and req.nvext.agent_hints is not None
    assert req.nvext.agent_hints.priority == 5 and req.nvext.backend_instance_id == 7


def test_text_parts_are_kept_for_the_template() -> None:
    content = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    req = decode_chat(chat(messages=[{"role": "user", "content": content}]))
    assert msgspec.to_builtins(req.messages[0])["content"] == content


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b"", None),
        (b"[]", None),
        (b'"x"', None),
        (json.dumps({"messages": MSG}).encode(), "model"),
        (json.dumps({"model": "m"}).encode(), "messages"),
        (chat(messages=[]), "messages"),
        (chat(messages=[{"content": "x"}]), "messages[0].role"),
        (chat(messages=[{"role": "wizard", "content": "x"}]), "messages[0].role"),
        (chat(messages=["hello"]), "messages[0]"),
        (chat(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), None),
        (chat(model=5), "model"),
        (chat(temperature=2.5), "temperature"),
        (chat(temperature=-0.1), "temperature"),
        (chat(temperature="hot"), "temperature"),
        (chat(top_p=0), "top_p"),
        (chat(top_p=1.5), "top_p"),
        (chat(n=0), "n"),
        (chat(n=129), "n"),
        (chat(n=1.5), "n"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(max_tokens=-5), "max_tokens"),
        (chat(max_completion_tokens=0), "max_completion_tokens"),
        (chat(max_tokens=3, min_tokens=5), "min_tokens"),
        (chat(frequency_penalty=3), "frequency_penalty"),
        (chat(presence_penalty=-3), "presence_penalty"),
        (chat(repetition_penalty=0), "repetition_penalty"),
        (chat(top_logprobs=3), "top_logprobs"),
        (chat(logprobs=True, top_logprobs=50), "top_logprobs"),
        (chat(stop=5), "stop"),
        (chat(stop=[""]), "stop"),
        (
            chat(stream=True, stream_options={"include_usage": "yes"}),
            "stream_options.include_usage",
        ),
        (chat(stream_options={"include_usage": True}), "stream_options"),
        (chat(stream="yes"), "stream"),
        (chat(nvext={"extra_fields": ["bogus"]}), "nvext.extra_fields"),
        (chat(nvext={"backend_instance_id": "w"}), "nvext.backend_instance_id"),
        (chat(nvext={"agent_hints": {"priority": "high"}}), "nvext.agent_hints.priority"),
    ],
)
def test_bad_chat_requests_are_invalid_request_errors(body: bytes, param: str | None) -> None:
    with pytest.raises(InvalidRequestError) as info:
        decode_chat(body)
    assert info.value.status_code == 400
    if param is not None:
        assert info.value.param == param


@pytest.mark.parametrize(
    ("prompt", "kind"),
    [("hi", "text"), (["a", "b"], "texts"), ([1, 2, 3], "tokens"), ([[1], [2, 3]], "token_lists")],
)
def test_prompt_forms(prompt: Any, kind: str) -> None:
    req = decode_completion(completion(prompt=prompt))
    assert prompt_kind(req.prompt) == kind
    assert output_limit(req) == 16  # OpenAI's default for completions


@pytest.mark.parametrize(
    "prompt", [[], "", None, 5, [1, "a"], [[1], []], [True, False], [[1.5]], {"a": 1}, [["x"]]]
)
def test_bad_prompts(prompt: Any) -> None:
    if prompt == "":
        decode_completion(completion(prompt=prompt))  # an empty string is a valid prompt
        return
    with pytest.raises(InvalidRequestError) as info:
        decode_completion(completion(prompt=prompt))
    assert info.value.param == "prompt"


def test_completion_logprobs_range_and_best_of() -> None:
    with pytest.raises(InvalidRequestError):
        decode_completion(completion(logprobs=21))
    with pytest.raises(InvalidRequestError):
        decode_completion(completion(n=1, best_of=2))
    assert decode_completion(completion(n=2, best_of=2)).best_of == 2


def test_missing_prompt_is_invalid() -> None:
    with pytest.raises(InvalidRequestError) as info:
        decode_completion(b'{"model": "m"}')
    assert info.value.param == "prompt"


@pytest.mark.parametrize(
    ("exc", "status", "etype"),
    [
        (InvalidRequestError("bad", param="x"), 400, "invalid_request_error"),
        (ContextLengthError("too long", param="messages"), 400, "invalid_request_error"),
        (NotFoundError("no model"), 404, "not_found_error"),
        (NoInstanceError("none"), 503, "service_unavailable"),
    ],
)
def test_error_body_has_openai_shape(exc: StatorError, status: int, etype: str) -> None:
    response = error_response(exc)
    assert response.status_code == status
    body = json.loads(error_body(exc))
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == etype
    assert body["error"]["message"] == exc.message
    assert body["error"]["param"] == exc.param
    assert body["error"]["code"] == exc.code


def test_service_unavailable_has_retry_after() -> None:
    response = error_response(ServiceUnavailableError("busy", retry_after_s=2.2))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3"


def test_unexpected_exception_becomes_generic_500() -> None:
    err = as_stator_error(RuntimeError("secret internals"))
    assert err.status_code == 500
    assert "secret" not in err.message


def test_chunk_usage_field_is_omitted_null_or_set() -> None:
    choice = ChatChunkChoice(index=0, delta=ChatDelta(content="x"))
    base = {"id": "c", "created": 1, "model": "m", "choices": [choice]}
    omitted = json.loads(msgspec.json.encode(ChatCompletionChunk(**base)))
    null = json.loads(msgspec.json.encode(ChatCompletionChunk(**base, usage=None)))
    usage = Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3)
    full = json.loads(msgspec.json.encode(ChatCompletionChunk(**base, usage=usage)))
    assert "usage" not in omitted
    assert null["usage"] is None
    assert full["usage"]["total_tokens"] == 3
    assert omitted["choices"][0] == {
        "index": 0,
        "delta": {"content": "x"},
        "logprobs": None,
        "finish_reason": None,
    }

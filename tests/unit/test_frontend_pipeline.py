"""ModelPipeline: templates (tools), context-length rules, OpenAI → engine request mapping."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stator.errors import ContextLengthError, InvalidRequestError
from stator.frontend.chat_template import ChatTemplate
from stator.frontend.pipeline import ModelPipeline, Prompt
from stator.frontend.protocol import decode_chat, decode_completion
from stator.frontend.tokenizer import Tokenizer
from stator.protocols.model_card import ModelCard

TOOLS_TEMPLATE = (
    "{% for t in tools or [] %}[tool:{{ t.function.name }}]{% endfor %}"
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model_dir)


def pipeline(tokenizer: Tokenizer, model_dir: Path, template: str | None = TOOLS_TEMPLATE,
             context_length: int = 64) -> ModelPipeline:  # fmt: skip
    card = ModelCard(
        name="m", tokenizer_path=str(model_dir), kv_cache_block_size=16,
        context_length=context_length,
    )  # fmt: skip
    return ModelPipeline(card, tokenizer, ChatTemplate(template) if template else None)


def chat(**fields: Any) -> bytes:
    return json.dumps(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}
    ).encode()


def test_tools_reach_the_template(tokenizer: Tokenizer, tiny_model_dir: Path) -> None:
    p = pipeline(tokenizer, tiny_model_dir)
    tools = [{"type": "function", "function": {"name": "get_weather"}}]
    assert p.render_chat(decode_chat(chat(tools=tools))) == "[tool:get_weather]<user>hi<assistant>"
    no_prompt = decode_chat(chat(add_generation_prompt=False))
    assert p.render_chat(no_prompt) == "<user>hi"


def test_model_without_template_rejects_chat(tokenizer: Tokenizer, tiny_model_dir: Path) -> None:
    with pytest.raises(InvalidRequestError, match="no chat template"):
        pipeline(tokenizer, tiny_model_dir, template=None).render_chat(decode_chat(chat()))


def test_context_length_rules(tokenizer: Tokenizer, tiny_model_dir: Path) -> None:
    p = pipeline(tokenizer, tiny_model_dir, context_length=10)
    assert p.fit([1] * 4, None, param="prompt") == Prompt([1] * 4, 6)  # the rest of the context
    assert p.fit([1] * 4, 6, param="prompt").max_tokens == 6
    with pytest.raises(ContextLengthError) as too_long:
        p.fit([1] * 10, None, param="prompt")
    assert (
        too_long.value.code == "context_length_exceeded" and "10 tokens" in too_long.value.message
    )
    with pytest.raises(ContextLengthError) as with_output:
        p.fit([1] * 4, 7, param="prompt")
    assert with_output.value.param == "max_tokens"


async def test_token_prompts_are_checked_against_the_vocabulary(
    tokenizer: Tokenizer, tiny_model_dir: Path
) -> None:
    p = pipeline(tokenizer, tiny_model_dir)
    body = {"model": "m", "prompt": [[1, 2], [3, tokenizer.vocab_size]]}
    with pytest.raises(InvalidRequestError) as info:
        await p.completion_prompts(decode_completion(json.dumps(body).encode()))
    assert info.value.param == "prompt" and str(tokenizer.vocab_size) in info.value.message


def test_engine_request_mapping(tokenizer: Tokenizer, tiny_model_dir: Path) -> None:
    p = pipeline(tokenizer, tiny_model_dir)
    request = decode_chat(
        chat(
            n=2, seed=5, top_k=3, temperature=0.5, logprobs=True, top_logprobs=2, min_tokens=1,
            nvext={"ignore_eos": True, "repetition_penalty": 1.3, "top_k": 9,
                   "backend_instance_id": 42, "agent_hints": {"priority": 3},
                   "annotations": ["a:1"]},
        )
    )  # fmt: skip
    first, second = p.engine_requests(request, Prompt([5, 6, 7], 12), "chatcmpl-x", 2)
    assert (first.request_id, second.request_id) == ("chatcmpl-x-0", "chatcmpl-x-1")
    assert (first.sampling_options.seed, second.sampling_options.seed) == (5, 6)
    assert first.sampling_options.top_k == 3  # the top-level field wins over nvext
    assert first.sampling_options.repetition_penalty == 1.3  # nvext fills what is unset
    assert first.stop_conditions.ignore_eos and first.stop_conditions.max_tokens == 12
    assert first.stop_conditions.min_tokens == 1
    assert first.output_options.logprobs == 2
    assert first.routing is not None and first.routing.backend_instance_id == 42
    assert first.priority == 3 and first.annotations == ["a:1"]
    assert first.eos_token_ids == sorted(tokenizer.eos_token_ids)
    assert first.token_ids == [5, 6, 7] and first.model == "m"

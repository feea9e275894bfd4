"""Chat-template rendering: transformers-compatible environment, message normalisation, errors."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stator.errors import InvalidRequestError
from stator.frontend.chat_template import (
    ChatTemplate,
    flatten_content,
    load_chat_template_source,
    normalize_messages,
)
from stator.frontend.tokenizer import Tokenizer
from stator.testing.chatml import CHATML_TEMPLATE


@pytest.fixture
def chatml() -> ChatTemplate:
    return ChatTemplate(CHATML_TEMPLATE, special_tokens={"eos_token": "<|im_end|>"})


def test_chatml_renders_turns_and_generation_prompt(chatml: ChatTemplate) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    with_prompt = chatml.render(messages)
    assert with_prompt == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    )
    assert chatml.render(messages, add_generation_prompt=False) == with_prompt.removesuffix(
        "<|im_start|>assistant\n"
    )


def test_text_parts_are_joined_and_other_parts_rejected(chatml: ChatTemplate) -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert "user\na\nb<|im_end|>" in chatml.render([{"role": "user", "content": parts}])
    image = [{"type": "image_url", "image_url": {"url": "x"}}]
    with pytest.raises(InvalidRequestError) as err:
        chatml.render([{"role": "user", "content": "x"}, {"role": "user", "content": image}])
    assert err.value.param == "messages[1].content[0]"
    assert "image_url" in err.value.message


def test_flatten_content_shapes() -> None:
    assert flatten_content(None) is None
    assert flatten_content("x") == "x"
    assert flatten_content([]) == ""
    with pytest.raises(InvalidRequestError):
        flatten_content(42)
    with pytest.raises(InvalidRequestError):
        flatten_content([{"type": "text", "text": 3}])


def test_tools_are_listed_as_json_keeping_order_and_non_ascii(chatml: ChatTemplate) -> None:
    tool = {"type": "function", "function": {"name": "f", "description": "<é> & z", "b": 1, "a": 2}}
    out = chatml.render([{"role": "user", "content": "q"}], tools=[tool])
    assert out.startswith("<|im_start|>system\n# Tools")
    assert "\n" + json.dumps(tool, ensure_ascii=False) + "\n</tools>" in out
    assert out.count("<|im_start|>user\nq<|im_end|>") == 1


def test_tool_call_arguments_string_is_parsed_for_the_template(chatml: ChatTemplate) -> None:
    call: dict[str, Any] = {
        "id": "1",
        "type": "function",
        "function": {"name": "f", "arguments": '{"x": [1, 2]}'},
    }
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "1", "content": "r"},
    ]
    out = chatml.render(messages, add_generation_prompt=False)
    assert '<tool_call>\n{"name": "f", "arguments": {"x": [1, 2]}}\n</tool_call>' in out
    assert "<tool_response>\nr\n</tool_response>" in out
    assert messages[1]["tool_calls"][0]["function"]["arguments"] == '{"x": [1, 2]}'  # not mutated
    normalized = normalize_messages(messages)
    assert normalized[1]["tool_calls"][0]["function"]["arguments"] == {"x": [1, 2]}


def test_unparseable_tool_arguments_stay_a_string() -> None:
    call = {"function": {"name": "f", "arguments": "not json"}}
    out = normalize_messages([{"role": "assistant", "tool_calls": [call]}])
    assert out[0]["tool_calls"][0]["function"]["arguments"] == "not json"


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"content": "no role"}], "messages[0].role"),
        ([{"role": "user", "content": "x"}, {"role": 3}], "messages[1].role"),
        (["not an object"], "messages[0]"),
        ("not a list", "messages"),
    ],
)
def test_malformed_messages_name_the_field(chatml: ChatTemplate, messages: Any, param: str) -> None:
    with pytest.raises(InvalidRequestError) as err:
        chatml.render(messages)
    assert err.value.param == param


def test_raise_exception_becomes_invalid_request(chatml: ChatTemplate) -> None:
    with pytest.raises(InvalidRequestError) as err:
        chatml.render([{"role": "wizard", "content": "x"}])
    assert "Unknown message role: wizard" in err.value.message
    assert err.value.status_code == 400


def test_syntax_error_names_chat_template() -> None:
    with pytest.raises(InvalidRequestError) as err:
        ChatTemplate("{% for m in messages %}")
    assert err.value.param == "chat_template"


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ messages.append(1) }}",
        "{{ messages[0].content + 1 }}",
        "{{ undefined_thing.attr }}",
    ],
)
def test_unsafe_or_failing_templates_raise_invalid_request(source: str) -> None:
    with pytest.raises(InvalidRequestError):
        ChatTemplate(source).render([{"role": "user", "content": "x"}])


def test_transformers_environment_features() -> None:
    source = (
        "{{ bos_token is defined }}|{{ eos_token }}|{{ flag }}|"
        "{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}"
        "{% generation %}{{ m.content }}{% endgeneration %}{% endfor %}|"
        "{{ strftime_now('%Y') }}|{{ {'b': '<é>', 'a': 1} | tojson }}"
    )
    template = ChatTemplate(source, special_tokens={"bos_token": None, "eos_token": "</s>"})
    out = template.render(
        [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
        template_kwargs={"flag": "on"},
    )
    assert out == f'False|</s>|on|one|{datetime.now().year}|{{"b": "<é>", "a": 1}}'


def test_template_kwargs_cannot_replace_messages() -> None:
    template = ChatTemplate("{{ messages | length }}:{{ add_generation_prompt }}")
    out = template.render([{"role": "user"}], template_kwargs={"messages": [], "x": 1})
    assert out == "1:True"


def test_load_source_prefers_jinja_file_then_config(tmp_path: Path) -> None:
    assert load_chat_template_source(tmp_path) is None
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "chat_template": [
                    {"name": "tool_use", "template": "T"},
                    {"name": "default", "template": "D"},
                ]
            }
        )
    )
    assert load_chat_template_source(tmp_path) == "D"
    (tmp_path / "chat_template.jinja").write_text("J")
    assert load_chat_template_source(tmp_path) == "J"


def test_load_source_rejects_bad_shape(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": 5}))
    with pytest.raises(InvalidRequestError):
        load_chat_template_source(tmp_path)


def test_tiny_model_template_loads_from_model_dir(tiny_model_dir: Path) -> None:
    tokenizer = Tokenizer.from_dir(tiny_model_dir)
    template = ChatTemplate.from_model_dir(
        tiny_model_dir, special_tokens=tokenizer.special_tokens_map
    )
    assert template is not None
    prompt = template.render([{"role": "user", "content": "hi"}])
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    im_start = tokenizer.token_to_id("<|im_start|>")
    assert ids[0] == im_start
    assert ids.count(im_start) == 2
    assert tokenizer.decode(ids, skip_special_tokens=False) == prompt


CONVERSATIONS: list[dict[str, Any]] = [
    {"messages": [{"role": "user", "content": "Hi"}]},
    {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "héllo 中文 🙂"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": "again"},
        ]
    },
    {
        "messages": [
            {"role": "system", "content": "Use tools."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": {"city": "Paris"}},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "18°C"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "description": "Weather <now> & later",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
    },
]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("case", range(len(CONVERSATIONS)))
def test_transformers_loads_it_and_renders_the_same(
    tiny_model_dir: Path, case: int, add_generation_prompt: bool
) -> None:
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tiny_model_dir))
    ours = Tokenizer.from_dir(tiny_model_dir)
    template = ChatTemplate.from_model_dir(tiny_model_dir, special_tokens=ours.special_tokens_map)
    assert template is not None
    conv = CONVERSATIONS[case]
    expected = hf.apply_chat_template(
        conv["messages"],
        tools=conv.get("tools"),
        add_generation_prompt=add_generation_prompt,
        tokenize=False,
    )
    rendered = template.render(
        conv["messages"], tools=conv.get("tools"), add_generation_prompt=add_generation_prompt
    )
    assert rendered == expected
    assert ours.encode(rendered, add_special_tokens=False) == hf.encode(
        rendered, add_special_tokens=False
    )
    assert hf.eos_token == ours.eos_token == "<|im_end|>"

"""Loading a model's tokenizer files: encode/decode, EOS ids, context length, special tokens."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from stator.errors import ConfigError
from stator.frontend.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model_dir)


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the tiny model's tokenizer and config files."""
    for name in ("tokenizer.json", "tokenizer_config.json", "config.json"):
        shutil.copy(tiny_model_dir / name, tmp_path / name)
    return tmp_path


def _edit_json(path: Path, **changes: Any) -> None:
    value = json.loads(path.read_text())
    for key, new in changes.items():
        if new is None:
            value.pop(key, None)
        else:
            value[key] = new
    path.write_text(json.dumps(value))


def test_tiny_model_facts(tokenizer: Tokenizer, tiny_model_dir: Path) -> None:
    config = json.loads((tiny_model_dir / "config.json").read_text())
    im_end = tokenizer.token_to_id("<|im_end|>")
    endoftext = tokenizer.token_to_id("<|endoftext|>")
    assert tokenizer.vocab_size == config["vocab_size"]
    assert tokenizer.eos_token_ids == {im_end, endoftext}
    assert tokenizer.context_length == config["max_position_embeddings"]
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.bos_token is None
    assert "bos_token" not in tokenizer.special_tokens_map
    assert tokenizer.special_tokens_map["additional_special_tokens"] == [
        "<|im_start|>",
        "<|im_end|>",
    ]
    assert {im_end, endoftext, tokenizer.token_to_id("<|im_start|>")} <= (
        tokenizer.special_token_ids
    )


@pytest.mark.parametrize(
    "text", ["def f(x):\n    return x\n", "héllo 中文 🙂 e\u0301", "", " \t\n"]
)
def test_encode_decode_round_trip(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text


def test_special_token_text_encodes_to_its_id(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)
    assert ids[0] == tokenizer.token_to_id("<|im_start|>")
    assert ids[-1] == tokenizer.token_to_id("<|im_end|>")
    assert tokenizer.decode(ids) == "user\nhi"
    assert tokenizer.decode(ids, skip_special_tokens=False) == "<|im_start|>user\nhi<|im_end|>"


def test_token_lookups_and_invalid_ids(tokenizer: Tokenizer) -> None:
    assert tokenizer.id_to_token(tokenizer.token_to_id("<|im_end|>") or 0) == "<|im_end|>"
    assert tokenizer.token_to_id("no such token at all") is None
    assert tokenizer.id_to_token(tokenizer.vocab_size + 5) is None
    bad = [-1, tokenizer.vocab_size, 10**9]
    assert tokenizer.invalid_token_ids([0, 5, *bad, tokenizer.vocab_size - 1]) == bad


def test_missing_tokenizer_json_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        Tokenizer.from_dir(tmp_path)
    assert "tokenizer.json" in err.value.message


def test_invalid_json_is_a_config_error(model_copy: Path) -> None:
    (model_copy / "config.json").write_text("{not json")
    with pytest.raises(ConfigError) as err:
        Tokenizer.from_dir(model_copy)
    assert "config.json" in err.value.message


def test_context_length_falls_back_to_model_max_length(model_copy: Path) -> None:
    _edit_json(model_copy / "config.json", max_position_embeddings=None)
    _edit_json(model_copy / "tokenizer_config.json", model_max_length=777)
    assert Tokenizer.from_dir(model_copy).context_length == 777
    _edit_json(model_copy / "tokenizer_config.json", model_max_length=1e30)
    assert Tokenizer.from_dir(model_copy).context_length is None


def test_context_length_from_nested_text_config(model_copy: Path) -> None:
    _edit_json(
        model_copy / "config.json", max_position_embeddings=None, text_config={"n_positions": 99}
    )
    assert Tokenizer.from_dir(model_copy).context_length == 99


def test_special_tokens_as_added_token_dicts_and_generation_eos(model_copy: Path) -> None:
    _edit_json(
        model_copy / "tokenizer_config.json",
        eos_token={"content": "<|endoftext|>", "special": True},
        bos_token="<|im_start|>",
    )
    _edit_json(model_copy / "config.json", eos_token_id=None)
    (model_copy / "generation_config.json").write_text(json.dumps({"eos_token_id": [7, 8]}))
    tok = Tokenizer.from_dir(model_copy)
    assert tok.eos_token == "<|endoftext|>"
    assert tok.bos_token == "<|im_start|>"
    assert tok.eos_token_ids == {7, 8, tok.token_to_id("<|endoftext|>")}

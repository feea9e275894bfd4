"""The tiny offline test model: files, shapes, determinism, caching.

That ``transformers`` loads it and renders its chat template like we do is checked in
``test_chat_template.py``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer as HFTokenizer

from stator.testing import tiny_model
from stator.testing.tiny_model import build_tiny_model, default_cache_dir, ensure_tiny_model

MODEL_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def _json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _digests(model_dir: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((model_dir / name).read_bytes()).hexdigest() for name in MODEL_FILES
    }


def test_model_dir_has_hf_files_and_consistent_config(tiny_model_dir: Path) -> None:
    assert sorted(p.name for p in tiny_model_dir.iterdir()) == sorted(MODEL_FILES)
    config = _json(tiny_model_dir / "config.json")
    tok_config = _json(tiny_model_dir / "tokenizer_config.json")
    tokenizer = HFTokenizer.from_file(str(tiny_model_dir / "tokenizer.json"))
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["model_type"] == "llama"
    assert config["tie_word_embeddings"] is True
    assert config["vocab_size"] == vocab_size
    assert 3000 <= vocab_size <= 4096
    im_end = tokenizer.token_to_id("<|im_end|>")
    endoftext = tokenizer.token_to_id("<|endoftext|>")
    assert config["eos_token_id"] == im_end
    assert _json(tiny_model_dir / "generation_config.json")["eos_token_id"] == [im_end, endoftext]
    assert tok_config["eos_token"] == "<|im_end|>"
    assert tok_config["bos_token"] is None
    assert tok_config["model_max_length"] == config["max_position_embeddings"]
    assert "<|im_start|>" in tok_config["chat_template"]


def test_weights_have_llama_names_and_shapes(tiny_model_dir: Path) -> None:
    config = _json(tiny_model_dir / "config.json")
    weights = load_file(str(tiny_model_dir / "model.safetensors"))
    h, inter = config["hidden_size"], config["intermediate_size"]
    kv = config["num_key_value_heads"] * h // config["num_attention_heads"]
    expected = {"model.embed_tokens.weight": (config["vocab_size"], h), "model.norm.weight": (h,)}
    for n in range(config["num_hidden_layers"]):
        p = f"model.layers.{n}."
        expected |= {
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (inter, h),
            p + "mlp.up_proj.weight": (inter, h),
            p + "mlp.down_proj.weight": (h, inter),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
    assert {k: v.shape for k, v in weights.items()} == expected
    assert all(v.dtype == np.float32 for v in weights.values())
    assert np.all(weights["model.norm.weight"] == 1.0)
    std = float(weights["model.embed_tokens.weight"].std())
    assert 0.015 < std < 0.025


def test_build_is_byte_identical_across_processes(tmp_path: Path) -> None:
    build_tiny_model(tmp_path / "a")
    subprocess.run(
        [sys.executable, "-m", "stator.testing.tiny_model", str(tmp_path / "b")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")


def test_second_variant_shares_tokenizer_not_weights(
    tiny_model_dir: Path, tiny_model_dir_b: Path
) -> None:
    a, b = _digests(tiny_model_dir), _digests(tiny_model_dir_b)
    assert a["tokenizer.json"] == b["tokenizer.json"]
    assert a["model.safetensors"] != b["model.safetensors"]
    assert tiny_model_dir != tiny_model_dir_b
    assert _json(tiny_model_dir_b / "config.json")["_name_or_path"] == "stator-tiny-llama-b"


def test_ensure_builds_once_then_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = ensure_tiny_model(tmp_path)
    assert (first / "model.safetensors").is_file()

    def fail(*args: object, **kwargs: object) -> Path:
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tiny_model, "build_tiny_model", fail)
    assert ensure_tiny_model(tmp_path) == first
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temp dirs left


def test_ensure_race_keeps_the_winners_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = tmp_path / tiny_model.cache_key()
    real_build = tiny_model.build_tiny_model

    def build_while_another_process_wins(out_dir: Path, **kwargs: Any) -> Path:
        real_build(final, **kwargs)  # the other process renames its copy into place first
        (final / "winner").write_text("x")
        return real_build(out_dir, **kwargs)

    monkeypatch.setattr(tiny_model, "build_tiny_model", build_while_another_process_wins)
    assert ensure_tiny_model(tmp_path) == final
    assert (final / "winner").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [final.name]


def test_default_cache_dir_honours_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATOR_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("STATOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "stator"

"""Build a tiny random-weight Llama model with a real tokenizer, offline and deterministically.

The model directory looks like a Hugging Face checkpoint, so the frontend, the mocker and vLLM can
all load it:

- ``tokenizer.json``: a byte-level BPE (GPT-2 style pre-tokenizer and decoder) trained with HF
  ``tokenizers`` on a sorted subset of the running interpreter's own stdlib ``*.py`` sources, with
  :data:`VOCAB_SIZE` tokens; special tokens ``<|endoftext|>`` (id 0), ``<|im_start|>`` (1),
  ``<|im_end|>`` (2).
- ``tokenizer_config.json``: the ChatML ``chat_template`` (:mod:`stator.testing.chatml`),
  ``eos_token`` ``<|im_end|>``, ``bos_token`` null, ``model_max_length``; plus
  ``special_tokens_map.json``.
- ``config.json``: a ``LlamaForCausalLM`` config (hidden 128, 4 layers, 4 heads, 2 KV heads, tied
  embeddings); ``generation_config.json`` with EOS ids ``[<|im_end|>, <|endoftext|>]``.
- ``model.safetensors``: float32 weights drawn from ``numpy.random.default_rng(seed)``, with HF
  Llama parameter names; no ``lm_head`` because the embeddings are tied. No torch needed.

Determinism: building twice (in any process) gives byte-identical files. BPE training in
``tokenizers`` is deterministic for this configuration: its known non-determinism (huggingface/
tokenizers#1794, explained in PR #2066) comes only from continuing-subword prefixes/end-of-word
suffixes, which a byte-level BPE does not use; the alphabet is sorted and merge ties break on pair
ids. The unit tests compare the sha256 of the files of two builds in separate processes.

The corpus depends on the interpreter's stdlib, so the default cache key includes the Python
version. Run ``python -m stator.testing.tiny_model DIR`` to build into ``DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from stator.testing.chatml import CHATML_TEMPLATE

FORMAT_VERSION = 2
"""Bump when the recipe changes, so cached models are rebuilt."""
DEFAULT_NAME = "stator-tiny-llama"
DEFAULT_SEED = 0
VOCAB_SIZE = 4096
"""Tokens in the trained tokenizer, special tokens included."""
CORPUS_CHARS = 1_000_000
"""Characters of stdlib source to train on (whole files, sorted by name): about 0.5 s."""
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END)
MAX_POSITION_EMBEDDINGS = 32768
"""Context length of the tiny model, in tokens: long enough for the Mooncake conversation trace
scaled to 64-token blocks (longest request: 17,321 tokens with its output); its KV cache costs
2 KiB/token (4 layers x K,V x 2 heads x 32 dims x fp32), so vLLM's 1 GiB CPU cache holds it."""


@dataclass(frozen=True)
class LlamaShape:
    """Architecture of the tiny Llama; sizes in elements (``head_dim = hidden / num_heads``)."""

    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2

    @property
    def head_dim(self) -> int:
        """Per-head width: ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads


def default_cache_dir() -> Path:
    """``$STATOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/stator``, else ``~/.cache/stator``."""
    if env := os.environ.get("STATOR_CACHE_DIR"):
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "stator"


def cache_key(name: str = DEFAULT_NAME, seed: int = DEFAULT_SEED) -> str:
    """Directory name of a cached build: recipe version, Python version (the corpus), seed."""
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    return f"{name.replace('/', '--')}-v{FORMAT_VERSION}-{py}-seed{seed}"


def ensure_tiny_model(
    cache_dir: str | Path | None = None, *, seed: int = DEFAULT_SEED, name: str = DEFAULT_NAME
) -> Path:
    """Return the directory of the tiny model, building it into ``cache_dir`` on first use.

    ``cache_dir`` defaults to :func:`default_cache_dir`. The build goes to a temporary directory
    beside the final one and is renamed into place, so concurrent callers (other processes or
    test workers) never see a half-written model; the loser of a race discards its copy.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = root / cache_key(name, seed)
    if final.is_dir():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))
    try:
        build_tiny_model(tmp, seed=seed, name=name)
        tmp.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
        os.rename(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_tiny_model(
    out_dir: str | Path, *, seed: int = DEFAULT_SEED, name: str = DEFAULT_NAME
) -> Path:
    """Write the tiny model's files into ``out_dir`` (created if missing); return it.

    ``seed`` selects the weights (the tokenizer does not depend on it); ``name`` is recorded as
    ``_name_or_path`` in ``config.json``. Existing files of the same names are overwritten.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    (out / "tokenizer.json").write_text(tokenizer.to_str(pretty=True), encoding="utf-8")
    ids = {tok: _token_id(tokenizer, tok) for tok in SPECIAL_TOKENS}
    vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
    shape = LlamaShape()
    _write_json(out / "tokenizer_config.json", _tokenizer_config(ids))
    _write_json(out / "special_tokens_map.json", _special_tokens_map())
    _write_json(out / "config.json", _llama_config(shape, vocab_size, ids, name))
    _write_json(out / "generation_config.json", _generation_config(ids))
    weights_path = out / "model.safetensors"
    save_file(random_weights(shape, vocab_size, seed), str(weights_path), {"format": "pt"})
    weights_path.chmod(0o644)  # safetensors creates the file private
    return out


def train_tokenizer(corpus_chars: int = CORPUS_CHARS, vocab_size: int = VOCAB_SIZE) -> Tokenizer:
    """Train the byte-level BPE on the first ``corpus_chars`` characters of stdlib sources."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(stdlib_corpus(corpus_chars), trainer)
    return tokenizer


def stdlib_corpus(max_chars: int) -> Iterator[str]:
    """Yield whole top-level stdlib ``*.py`` files in name order until ``max_chars`` is reached."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    total = 0
    for path in sorted(stdlib.glob("*.py")):
        if total >= max_chars:
            return
        text = path.read_text(encoding="utf-8", errors="replace")
        total += len(text)
        yield text


def random_weights(shape: LlamaShape, vocab_size: int, seed: int) -> dict[str, np.ndarray]:
    """HF Llama parameters, float32: ``N(0, 0.02)`` matrices, RMSNorm weights of ones.

    Shapes follow ``LlamaForCausalLM``: embeddings ``[vocab, hidden]``, q/o ``[hidden, hidden]``,
    k/v ``[kv_heads*head_dim, hidden]``, gate/up ``[intermediate, hidden]``, down
    ``[hidden, intermediate]`` (``[out_features, in_features]`` as in ``torch.nn.Linear``).
    """
    rng = np.random.default_rng(seed)
    h, i, kv = (
        shape.hidden_size,
        shape.intermediate_size,
        shape.num_key_value_heads * shape.head_dim,
    )

    def normal(*dims: int) -> np.ndarray:
        return (rng.standard_normal(dims, dtype=np.float32) * np.float32(0.02)).astype(np.float32)

    weights = {"model.embed_tokens.weight": normal(vocab_size, h)}
    for n in range(shape.num_hidden_layers):
        p = f"model.layers.{n}."
        weights[p + "self_attn.q_proj.weight"] = normal(h, h)
        weights[p + "self_attn.k_proj.weight"] = normal(kv, h)
        weights[p + "self_attn.v_proj.weight"] = normal(kv, h)
        weights[p + "self_attn.o_proj.weight"] = normal(h, h)
        weights[p + "mlp.gate_proj.weight"] = normal(i, h)
        weights[p + "mlp.up_proj.weight"] = normal(i, h)
        weights[p + "mlp.down_proj.weight"] = normal(h, i)
        weights[p + "input_layernorm.weight"] = np.ones(h, dtype=np.float32)
        weights[p + "post_attention_layernorm.weight"] = np.ones(h, dtype=np.float32)
    weights["model.norm.weight"] = np.ones(h, dtype=np.float32)
    return weights


def _token_id(tokenizer: Tokenizer, token: str) -> int:
    token_id = tokenizer.token_to_id(token)
    if token_id is None:  # pragma: no cover - the trainer always adds its special tokens
        raise RuntimeError(f"special token {token!r} missing from the trained tokenizer")
    return int(token_id)


def _added_token(content: str) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": False,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def _tokenizer_config(ids: dict[str, int]) -> dict[str, Any]:
    return {
        "added_tokens_decoder": {str(i): _added_token(t) for t, i in ids.items()},
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "model_max_length": MAX_POSITION_EMBEDDINGS,
        "pad_token": ENDOFTEXT,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }


def _special_tokens_map() -> dict[str, Any]:
    return {
        "additional_special_tokens": [IM_START, IM_END],
        "eos_token": IM_END,
        "pad_token": ENDOFTEXT,
    }


def _llama_config(
    shape: LlamaShape, vocab_size: int, ids: dict[str, int], name: str
) -> dict[str, Any]:
    return {
        "_name_or_path": name,
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": ids[IM_END],
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "hidden_size": shape.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": shape.intermediate_size,
        "max_position_embeddings": MAX_POSITION_EMBEDDINGS,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": shape.num_attention_heads,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_key_value_heads": shape.num_key_value_heads,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def _generation_config(ids: dict[str, int]) -> dict[str, Any]:
    return {
        "bos_token_id": ids[ENDOFTEXT],
        "eos_token_id": [ids[IM_END], ids[ENDOFTEXT]],
        "pad_token_id": ids[ENDOFTEXT],
    }


def _write_json(path: Path, value: dict[str, Any]) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``python -m stator.testing.tiny_model DIR [--seed N] [--name NAME]``: build into DIR."""
    parser = argparse.ArgumentParser(prog="python -m stator.testing.tiny_model")
    parser.add_argument("dir", help="output directory (created if missing)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="weights seed")
    parser.add_argument("--name", default=DEFAULT_NAME, help="model name in config.json")
    args = parser.parse_args(argv)
    print(build_tiny_model(args.dir, seed=args.seed, name=args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

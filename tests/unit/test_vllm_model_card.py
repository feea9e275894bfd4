"""The vLLM worker's model card from the engine's configuration; vLLM stays unimported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from stator.errors import ConfigError
from stator.vllm.config import parse_config
from stator.vllm.model_card import build_model_card, tokenizer_dir


def vllm_config(tokenizer: str) -> SimpleNamespace:
    return SimpleNamespace(
        cache_config=SimpleNamespace(block_size=32, num_gpu_blocks=1234),
        scheduler_config=SimpleNamespace(max_num_seqs=8, max_num_batched_tokens=2048),
        model_config=SimpleNamespace(max_model_len=1024, tokenizer=tokenizer),
    )


def test_card_from_engine_config(tmp_path: Path) -> None:
    cfg = parse_config(["--model", str(tmp_path), "--served-model-name", "tiny"])
    card = build_model_card(cfg, vllm_config(str(tmp_path)))
    assert (card.name, card.tokenizer_path) == ("tiny", str(tmp_path))
    assert (card.kv_cache_block_size, card.context_length) == (32, 1024)
    rc = card.runtime_config
    assert (rc.total_kv_blocks, rc.max_num_seqs, rc.max_num_batched_tokens) == (1234, 8, 2048)
    assert card.model_types == ["chat", "completions"]
    assert card.endpoint == str(cfg.endpoint)


def test_prefill_worker_registers_a_prefill_card(tmp_path: Path) -> None:
    cfg = parse_config(["--model", str(tmp_path), "--is-prefill-worker"])
    assert build_model_card(cfg, vllm_config(str(tmp_path))).model_types == ["prefill"]


def test_missing_tokenizer_names_the_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="--tokenizer"):
        tokenizer_dir("no-such-org/no-such-model")


def test_package_imports_without_vllm() -> None:
    code = (
        "import sys, stator.vllm.worker, stator.vllm.__main__; "
        "sys.exit(1 if any(m == 'vllm' or m.startswith('vllm.') for m in sys.modules) else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0

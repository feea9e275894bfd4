"""The model card a vLLM worker registers, from the engine's real configuration.

Read from ``AsyncLLM.vllm_config`` after the engine started (so the KV-block count is the one
vLLM allocated): ``cache_config.block_size``, ``cache_config.num_gpu_blocks``,
``scheduler_config.max_num_seqs`` / ``max_num_batched_tokens``, ``model_config.max_model_len``
and ``model_config.tokenizer``. Attributes are read duck-typed, so tests pass plain objects.
"""

from __future__ import annotations

import os
from typing import Any

from stator.errors import ConfigError
from stator.protocols.model_card import ModelCard, ModelRuntimeConfig, ModelType
from stator.vllm.config import VllmWorkerConfig

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)
"""Files the frontend reads from ``tokenizer_path`` (others are not downloaded)."""


def build_model_card(config: VllmWorkerConfig, vllm_config: Any) -> ModelCard:
    """The card of ``config.served_model_name`` served at ``config.endpoint``.

    Prefill workers register a ``prefill`` card; aggregated and decode workers ``chat`` and
    ``completions``.

    Raises:
        ConfigError: the tokenizer files cannot be found locally (names ``--tokenizer``).
    """
    cache = vllm_config.cache_config
    sched = vllm_config.scheduler_config
    model = vllm_config.model_config
    revision = getattr(model, "tokenizer_revision", None)
    types: list[ModelType] = ["prefill"] if config.role == "prefill" else ["chat", "completions"]
    return ModelCard(
        name=config.served_model_name,
        tokenizer_path=tokenizer_dir(str(model.tokenizer), revision),
        kv_cache_block_size=int(cache.block_size),
        context_length=int(model.max_model_len),
        model_types=types,
        runtime_config=ModelRuntimeConfig(
            total_kv_blocks=_optional_int(cache.num_gpu_blocks),
            max_num_seqs=_optional_int(sched.max_num_seqs),
            max_num_batched_tokens=_optional_int(sched.max_num_batched_tokens),
        ),
        endpoint=str(config.endpoint),
    )


def tokenizer_dir(tokenizer: str, revision: str | None = None) -> str:
    """A local directory with the tokenizer files: ``tokenizer`` itself when it is one, else
    the Hugging Face cache snapshot vLLM downloaded (no network access here).

    Raises:
        ConfigError: neither exists.
    """
    if os.path.isdir(tokenizer):
        return os.path.abspath(tokenizer)
    try:
        from huggingface_hub import snapshot_download

        return str(
            snapshot_download(
                tokenizer,
                revision=revision,
                allow_patterns=list(TOKENIZER_FILES),
                local_files_only=True,
            )
        )
    except Exception as exc:  # ImportError, or any hub error: not available locally
        raise ConfigError(
            "--tokenizer", f"no local tokenizer files for {tokenizer!r}: {exc}"
        ) from exc


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)

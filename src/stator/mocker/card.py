"""What a mocker worker takes from its model directory, and the model card it registers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from stator.frontend.tokenizer import Tokenizer
from stator.mocker.config import MockerConfig
from stator.mocker.worker_config import MockerProcessConfig
from stator.protocols.model_card import ModelCard, ModelRuntimeConfig


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """``vocab_size``: tokens (valid ids ``[0, vocab_size)``); ``context_length``: tokens, or
    None when the model files do not say."""

    vocab_size: int
    context_length: int | None


def load_model_info(model_path: str) -> ModelInfo:
    """Read the vocabulary size and context length of the model in ``model_path``.

    Raises:
        ConfigError: the tokenizer files are missing or unreadable.
    """
    tokenizer = Tokenizer.from_dir(model_path)
    return ModelInfo(tokenizer.vocab_size, tokenizer.context_length)


def engine_for_model(engine: MockerConfig, info: ModelInfo) -> MockerConfig:
    """``engine`` with the model's vocabulary and a sequence limit.

    The limit (``max_model_len``, tokens) is ``--max-model-len`` if given, else the model's
    context length, else the KV capacity (``num_gpu_blocks * block_size``): vLLM's choice order.
    """
    max_len = engine.max_model_len or info.context_length or engine.total_kv_tokens
    return dataclasses.replace(engine, vocab_size=info.vocab_size, max_model_len=max_len)


def build_model_card(config: MockerProcessConfig, engine: MockerConfig) -> ModelCard:
    """The card every worker of the process registers with its generate endpoint.

    ``engine`` must come from ``engine_for_model`` (its ``max_model_len`` is the context length).

    Raises:
        ValueError: ``engine.max_model_len`` is not set.
    """
    if engine.max_model_len is None:
        raise ValueError("build_model_card: engine.max_model_len is not set (use engine_for_model)")
    return ModelCard(
        name=config.model_name,
        tokenizer_path=config.model_path,
        kv_cache_block_size=engine.block_size,
        context_length=engine.max_model_len,
        runtime_config=ModelRuntimeConfig(
            total_kv_blocks=engine.num_gpu_blocks,
            max_num_seqs=engine.max_num_seqs,
            max_num_batched_tokens=engine.max_num_batched_tokens,
        ),
        endpoint=str(config.endpoint),
    )

"""The model card a worker registers in discovery (``v1/mdc/{ns}/{comp}/{ep}/{instance_id}``).

The frontend builds one preprocessing pipeline per model name from the cards it sees and drops the
model when its last instance goes.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from stator.protocols import PROTOCOL_VERSION

ModelType = Literal["chat", "completions", "prefill", "embedding"]


class ModelRuntimeConfig(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Engine limits: KV blocks in total, max concurrent sequences, tokens per engine step."""

    total_kv_blocks: int | None = None
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None


class ModelCard(msgspec.Struct, omit_defaults=True, kw_only=True):
    """What a frontend needs to serve a model.

    ``tokenizer_path``: a directory holding ``tokenizer.json``, ``tokenizer_config.json`` (with
    ``chat_template``) and ``config.json``; readable by the frontend (same machine or shared
    storage). ``kv_cache_block_size`` in tokens; ``context_length`` in tokens.
    """

    name: str
    tokenizer_path: str
    kv_cache_block_size: int
    context_length: int
    model_types: list[ModelType] = msgspec.field(default_factory=lambda: ["chat", "completions"])
    model_input: Literal["tokens", "text"] = "tokens"
    runtime_config: ModelRuntimeConfig = msgspec.field(default_factory=ModelRuntimeConfig)
    reasoning_parser: str | None = None
    tool_call_parser: str | None = None
    endpoint: str = ""
    version: str = PROTOCOL_VERSION

"""The worker contract: a preprocessed (tokenized) request in, a stream of output deltas out.

A frontend or router sends one ``PreprocessedRequest`` to one engine instance and receives a
stream of ``LLMEngineOutput`` chunks. Token ids are deltas; the last chunk has a
``finish_reason``. Empty non-final chunks are legal and must be skipped by consumers, never
treated as the end of the stream. ``n > 1`` is fanned out by the frontend into ``n`` engine
requests, so engines see ``n == 1``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from stator.protocols import PROTOCOL_VERSION

FinishReason = Literal["stop", "length", "cancelled", "error"]


class SamplingOptions(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Sampling parameters, as in vLLM's ``SamplingParams`` (``None`` = engine default)."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    repetition_penalty: float | None = None


class StopConditions(msgspec.Struct, omit_defaults=True, kw_only=True):
    """When generation ends. ``max_tokens``/``min_tokens`` count output tokens.

    ``stop_token_ids`` end generation (the token is not returned); ``ignore_eos`` makes the
    engine run to ``max_tokens`` regardless of EOS. Stop *strings* are handled by the frontend.
    """

    max_tokens: int | None = None
    min_tokens: int | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False


class OutputOptions(msgspec.Struct, omit_defaults=True, kw_only=True):
    """What to return besides token ids. ``logprobs``: number of top logprobs per token."""

    logprobs: int | None = None
    prompt_logprobs: int | None = None


class RoutingHints(msgspec.Struct, omit_defaults=True, kw_only=True):
    """Hints for the router: a pinned instance, or a data-parallel rank."""

    backend_instance_id: int | None = None
    dp_rank: int | None = None


class PreprocessedRequest(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One engine request. ``token_ids`` is the full prompt (tokens).

    ``eos_token_ids`` come from the model card so the engine knows which ids end a sequence.
    ``priority``: larger is more important (``nvext.agent_hints.priority``).
    ``disaggregated_params``: for a decode worker, what its prefill worker returned
    (vLLM ``kv_transfer_params``).
    """

    token_ids: list[int]
    request_id: str = ""
    model: str = ""
    sampling_options: SamplingOptions = msgspec.field(default_factory=SamplingOptions)
    stop_conditions: StopConditions = msgspec.field(default_factory=StopConditions)
    output_options: OutputOptions = msgspec.field(default_factory=OutputOptions)
    eos_token_ids: list[int] = msgspec.field(default_factory=list)
    annotations: list[str] = msgspec.field(default_factory=list)
    priority: int | None = None
    routing: RoutingHints | None = None
    disaggregated_params: dict[str, Any] | None = None
    version: str = PROTOCOL_VERSION


class TopLogprob(msgspec.Struct, array_like=True):
    """One alternative at a position: ``[token_id, logprob]``."""

    token_id: int
    logprob: float


class LLMEngineOutput(msgspec.Struct, omit_defaults=True, kw_only=True):
    """One response chunk: ``token_ids`` generated since the previous chunk (a delta).

    ``finish_reason`` is set on the last chunk only. ``log_probs[i]`` is the logprob of
    ``token_ids[i]``; ``top_logprobs[i]`` its alternatives. ``cached_tokens``: prompt tokens served
    from the prefix cache (set on the first chunk or later). ``disaggregated_params``: returned by
    prefill workers. ``error``: message when ``finish_reason == "error"``.
    """

    token_ids: list[int] = msgspec.field(default_factory=list)
    finish_reason: FinishReason | None = None
    cum_log_probs: float | None = None
    log_probs: list[float] | None = None
    top_logprobs: list[list[TopLogprob]] | None = None
    cached_tokens: int | None = None
    disaggregated_params: dict[str, Any] | None = None
    error: str | None = None

"""Checks a worker runs on a ``PreprocessedRequest`` before the engine sees it.

Limits follow vLLM: prompt token ids must lie in the vocabulary; the prompt must be shorter
than the context length and, with an explicit ``max_tokens``, prompt + output must fit it
(``vllm/entrypoints/openai/serving_engine.py``, "maximum context length"); sampling values as in
``vllm/sampling_params.py`` (temperature >= 0, 0 < top_p <= 1, top_k = -1 or >= 0,
0 <= min_p <= 1, penalties in [-2, 2], repetition_penalty > 0).
"""

from __future__ import annotations

import numpy as np

from stator.errors import ContextLengthError, InvalidRequestError
from stator.mocker.config import MockerConfig
from stator.protocols.engine import PreprocessedRequest, SamplingOptions


def check_request(request: PreprocessedRequest, engine: MockerConfig) -> None:
    """Reject a request the engine must not run.

    ``engine.max_model_len`` is the context length (tokens; None = no limit).

    Raises:
        InvalidRequestError: empty prompt, token id outside ``[0, vocab_size)``, a negative or
            inconsistent ``max_tokens``/``min_tokens``, a bad sampling value, or a prompt that
            needs more KV blocks than the engine has (``param`` names the field).
        ContextLengthError: the prompt (plus an explicit ``max_tokens``) exceeds the context.
    """
    _check_prompt(request.token_ids, engine)
    _check_stop(request, engine)
    _check_sampling(request.sampling_options)


def _check_prompt(token_ids: list[int], engine: MockerConfig) -> None:
    if not token_ids:
        raise InvalidRequestError("the prompt is empty", param="token_ids")
    ids = np.asarray(token_ids, dtype=np.int64)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= engine.vocab_size:
        bad = low if low < 0 else high
        raise InvalidRequestError(
            f"token id {bad} is out of vocabulary (size {engine.vocab_size})", param="token_ids"
        )
    blocks = -(-len(token_ids) // engine.block_size)
    if blocks > engine.num_gpu_blocks:
        raise InvalidRequestError(
            f"the prompt needs {blocks} KV blocks, the engine has {engine.num_gpu_blocks}",
            param="token_ids",
        )


def _check_stop(request: PreprocessedRequest, engine: MockerConfig) -> None:
    stop = request.stop_conditions
    num_prompt = len(request.token_ids)
    if stop.max_tokens is not None and stop.max_tokens < 0:
        raise InvalidRequestError("max_tokens must be >= 0", param="max_tokens")
    if stop.min_tokens is not None:
        if stop.min_tokens < 0:
            raise InvalidRequestError("min_tokens must be >= 0", param="min_tokens")
        if stop.max_tokens is not None and stop.min_tokens > stop.max_tokens:
            raise InvalidRequestError("min_tokens must be <= max_tokens", param="min_tokens")
    limit = engine.max_model_len
    if limit is None:
        return
    if num_prompt >= limit:
        raise ContextLengthError(
            f"this model's maximum context length is {limit} tokens; the prompt has "
            f"{num_prompt} tokens",
            param="token_ids",
        )
    if stop.max_tokens is not None and num_prompt + stop.max_tokens > limit:
        raise ContextLengthError(
            f"this model's maximum context length is {limit} tokens; you requested "
            f"{num_prompt + stop.max_tokens} tokens ({num_prompt} in the prompt, "
            f"{stop.max_tokens} for the completion)",
            param="max_tokens",
        )


def _check_sampling(s: SamplingOptions) -> None:
    _require(s.temperature is None or s.temperature >= 0, "temperature", "must be >= 0")
    _require(s.top_p is None or 0 < s.top_p <= 1, "top_p", "must be in (0, 1]")
    _require(s.top_k is None or s.top_k >= -1, "top_k", "must be -1 (off) or >= 0")
    _require(s.min_p is None or 0 <= s.min_p <= 1, "min_p", "must be in [0, 1]")
    for name, value in (
        ("frequency_penalty", s.frequency_penalty),
        ("presence_penalty", s.presence_penalty),
    ):
        _require(value is None or -2 <= value <= 2, name, "must be in [-2, 2]")
    _require(
        s.repetition_penalty is None or s.repetition_penalty > 0,
        "repetition_penalty",
        "must be > 0",
    )


def _require(ok: bool, param: str, message: str) -> None:
    if not ok:
        raise InvalidRequestError(f"{param} {message}", param=param)

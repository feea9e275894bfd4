"""stator's engine contract ⇄ vLLM's request and output types, as pure functions.

``sampling_kwargs`` turns a ``PreprocessedRequest`` into keyword arguments for vLLM's
``SamplingParams`` (the caller adds ``output_kind=DELTA``); ``engine_output`` turns one delta
``CompletionOutput`` (duck-typed: ``token_ids``, ``finish_reason``, ``logprobs``,
``cumulative_logprob``) into an ``LLMEngineOutput``. No vLLM import, so unit tests run without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from stator.errors import ContextLengthError, InvalidRequestError
from stator.protocols.engine import FinishReason, LLMEngineOutput, PreprocessedRequest, TopLogprob

FINISH_REASONS: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "abort": "cancelled",
    "error": "error",
    "repetition": "stop",
}
"""vLLM ``CompletionOutput.finish_reason`` → stator's (vLLM ``v1/engine/__init__.py``
``FinishReason``). vLLM's ``repetition`` (a repeated pattern was cut) ends like a stop."""

SAMPLING_FIELDS = (
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "repetition_penalty",
)
"""``SamplingOptions`` fields with the same name and meaning in vLLM's ``SamplingParams``."""


@dataclass(frozen=True, slots=True)
class EngineLimits:
    """What the request conversion needs from the engine's configuration.

    ``max_model_len``: context length (tokens). ``supports_priority``: the scheduler's policy is
    ``priority``. ``defaults``: sampling defaults from the model's generation config (vLLM
    ``ModelConfig.get_diff_sampling_param()``), used where the request leaves a field unset.
    """

    max_model_len: int
    supports_priority: bool = False
    defaults: Mapping[str, Any] = field(default_factory=dict)


def sampling_kwargs(
    request: PreprocessedRequest, limits: EngineLimits, *, prefill: bool = False
) -> dict[str, Any]:
    """Keyword arguments for ``SamplingParams`` (``n`` is always 1: the frontend fans out).

    ``max_tokens`` defaults to the room left in the context. ``eos_token_ids`` of the request
    become stop tokens unless ``ignore_eos``. ``prefill``: one token only, and ask the KV
    connector to keep the blocks for a remote decode (``kv_transfer_params.do_remote_decode``).
    A decode request's ``disaggregated_params`` go to vLLM as ``kv_transfer_params``.

    Raises:
        ContextLengthError: the prompt leaves no room for an output token.
        InvalidRequestError: an empty prompt or a negative token count.
    """
    num_prompt = len(request.token_ids)
    if num_prompt == 0:
        raise InvalidRequestError("token_ids must not be empty", param="token_ids")
    room = limits.max_model_len - num_prompt
    if room < 1:
        raise ContextLengthError(
            f"prompt of {num_prompt} tokens leaves no room in the context of "
            f"{limits.max_model_len} tokens",
            param="token_ids",
        )
    kwargs: dict[str, Any] = {k: v for k, v in limits.defaults.items() if k in SAMPLING_FIELDS}
    options = request.sampling_options
    for name in SAMPLING_FIELDS:
        value = getattr(options, name)
        if value is not None:
            kwargs[name] = value
    kwargs.update(_stop_kwargs(request, room))
    kwargs.update(_output_kwargs(request))
    if prefill:
        kwargs.update(max_tokens=1, min_tokens=0)
        kwargs["extra_args"] = {"kv_transfer_params": {"do_remote_decode": True}}
    elif request.disaggregated_params is not None:
        kwargs["extra_args"] = {"kv_transfer_params": dict(request.disaggregated_params)}
    return kwargs


def _stop_kwargs(request: PreprocessedRequest, room: int) -> dict[str, Any]:
    stop = request.stop_conditions
    for name in ("max_tokens", "min_tokens"):
        value = getattr(stop, name)
        if value is not None and value < 0:
            raise InvalidRequestError(f"{name} must be >= 0, got {value}", param=name)
    out: dict[str, Any] = {
        "max_tokens": min(stop.max_tokens, room) if stop.max_tokens is not None else room,
        "ignore_eos": stop.ignore_eos,
    }
    if stop.min_tokens is not None:
        out["min_tokens"] = stop.min_tokens
    stop_ids = list(stop.stop_token_ids or [])
    if not stop.ignore_eos:
        stop_ids += [t for t in request.eos_token_ids if t not in stop_ids]
    if stop_ids:
        out["stop_token_ids"] = stop_ids
    return out


def _output_kwargs(request: PreprocessedRequest) -> dict[str, Any]:
    out: dict[str, Any] = {"n": 1, "detokenize": False}
    opts = request.output_options
    if opts.logprobs is not None:
        out["logprobs"] = opts.logprobs
    if opts.prompt_logprobs is not None:
        out["prompt_logprobs"] = opts.prompt_logprobs
    return out


def engine_priority(priority: int | None, limits: EngineLimits) -> int:
    """vLLM's ``priority`` for stator's: vLLM schedules *lower* values first, stator's larger
    values are more important, so the sign flips. 0 when unset or the scheduler is FCFS (vLLM
    rejects a non-zero priority then)."""
    if priority is None or not limits.supports_priority:
        return 0
    return -priority


class Logprob(Protocol):
    """vLLM's ``Logprob``: ``logprob`` and 1-based ``rank`` among the vocabulary."""

    logprob: float
    rank: int | None


class CompletionDelta(Protocol):
    """The fields of vLLM's ``CompletionOutput`` used here (``output_kind=DELTA``)."""

    token_ids: Sequence[int]
    finish_reason: str | None
    cumulative_logprob: float | None
    logprobs: Sequence[Mapping[int, Logprob]] | None


def engine_output(
    delta: CompletionDelta, *, cached_tokens: int | None = None, num_top_logprobs: int = 0
) -> LLMEngineOutput | None:
    """The ``LLMEngineOutput`` for one delta, or None when it carries nothing (an empty
    non-final delta is skipped, never sent as the end of the stream).

    ``log_probs[i]``: logprob of ``token_ids[i]``; ``top_logprobs[i]``: the ``num_top_logprobs``
    most likely tokens at that position, by rank.
    """
    token_ids = list(delta.token_ids)
    reason = finish_reason(delta.finish_reason)
    if not token_ids and reason is None:
        return None
    out = LLMEngineOutput(token_ids=token_ids, finish_reason=reason, cached_tokens=cached_tokens)
    if delta.logprobs:
        out.log_probs, out.top_logprobs = logprob_lists(token_ids, delta.logprobs, num_top_logprobs)
        out.cum_log_probs = delta.cumulative_logprob
    return out


def finish_reason(vllm_reason: str | None) -> FinishReason | None:
    """Map vLLM's finish reason; an unknown one counts as ``stop``."""
    if vllm_reason is None:
        return None
    return FINISH_REASONS.get(str(vllm_reason), "stop")


def logprob_lists(
    token_ids: Sequence[int], positions: Sequence[Mapping[int, Logprob]], num_top: int
) -> tuple[list[float], list[list[TopLogprob]]]:
    """Per generated token: its logprob, and the ``num_top`` best alternatives by rank."""
    chosen: list[float] = []
    tops: list[list[TopLogprob]] = []
    for token_id, candidates in zip(token_ids, positions, strict=False):
        entry = candidates.get(token_id)
        chosen.append(float(entry.logprob) if entry is not None else float("-inf"))
        ranked = sorted(candidates.items(), key=lambda kv: kv[1].rank or 0)
        tops.append([TopLogprob(t, float(lp.logprob)) for t, lp in ranked if _in_top(lp, num_top)])
    return chosen, tops


def _in_top(lp: Logprob, num_top: int) -> bool:
    return lp.rank is not None and 1 <= lp.rank <= num_top

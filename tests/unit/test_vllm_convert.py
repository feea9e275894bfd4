"""PreprocessedRequest → vLLM SamplingParams kwargs, and vLLM deltas → LLMEngineOutput."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from stator.errors import ContextLengthError, InvalidRequestError
from stator.protocols.engine import (
    OutputOptions,
    PreprocessedRequest,
    SamplingOptions,
    StopConditions,
    TopLogprob,
)
from stator.vllm.convert import EngineLimits, engine_output, engine_priority, sampling_kwargs

LIMITS = EngineLimits(max_model_len=100)


@dataclass
class Lp:
    logprob: float
    rank: int | None


@dataclass
class Delta:
    token_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cumulative_logprob: float | None = None
    logprobs: list[dict[int, Lp]] | None = None


def req(n: int = 10, **kw: object) -> PreprocessedRequest:
    return PreprocessedRequest(token_ids=list(range(n)), **kw)  # type: ignore[arg-type]


def test_sampling_options_map_by_name() -> None:
    opts = SamplingOptions(
        temperature=0.5,
        top_p=0.9,
        top_k=5,
        min_p=0.1,
        seed=7,
        frequency_penalty=0.2,
        presence_penalty=0.3,
        repetition_penalty=1.1,
    )
    kw = sampling_kwargs(req(sampling_options=opts), LIMITS)
    assert {k: kw[k] for k in ("temperature", "top_p", "top_k", "min_p", "seed")} == {
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 5,
        "min_p": 0.1,
        "seed": 7,
    }
    assert (kw["frequency_penalty"], kw["presence_penalty"], kw["repetition_penalty"]) == (
        0.2,
        0.3,
        1.1,
    )
    assert kw["n"] == 1 and kw["detokenize"] is False


def test_unset_options_take_generation_config_defaults_only() -> None:
    limits = EngineLimits(max_model_len=100, defaults={"temperature": 0.7, "max_new_tokens": 5})
    kw = sampling_kwargs(req(), limits)
    assert kw["temperature"] == 0.7
    assert "max_new_tokens" not in kw and "top_p" not in kw
    kw = sampling_kwargs(req(sampling_options=SamplingOptions(temperature=0.0)), limits)
    assert kw["temperature"] == 0.0


def test_max_tokens_defaults_to_room_left_and_is_capped() -> None:
    assert sampling_kwargs(req(30), LIMITS)["max_tokens"] == 70
    stop = StopConditions(max_tokens=500, min_tokens=3, ignore_eos=True)
    kw = sampling_kwargs(req(30, stop_conditions=stop), LIMITS)
    assert (kw["max_tokens"], kw["min_tokens"], kw["ignore_eos"]) == (70, 3, True)


def test_eos_ids_become_stop_tokens_unless_ignore_eos() -> None:
    stop = StopConditions(stop_token_ids=[9, 2])
    kw = sampling_kwargs(req(stop_conditions=stop, eos_token_ids=[2, 3]), LIMITS)
    assert kw["stop_token_ids"] == [9, 2, 3]
    stop = StopConditions(stop_token_ids=[9], ignore_eos=True)
    kw = sampling_kwargs(req(stop_conditions=stop, eos_token_ids=[2, 3]), LIMITS)
    assert kw["stop_token_ids"] == [9]
    assert "stop_token_ids" not in sampling_kwargs(req(), LIMITS)


def test_logprobs_options() -> None:
    kw = sampling_kwargs(req(output_options=OutputOptions(logprobs=2, prompt_logprobs=1)), LIMITS)
    assert (kw["logprobs"], kw["prompt_logprobs"]) == (2, 1)
    assert "logprobs" not in sampling_kwargs(req(), LIMITS)


def test_prompt_that_fills_the_context_is_rejected() -> None:
    with pytest.raises(ContextLengthError):
        sampling_kwargs(req(100), LIMITS)
    assert sampling_kwargs(req(99), LIMITS)["max_tokens"] == 1


def test_bad_requests_are_client_errors() -> None:
    with pytest.raises(InvalidRequestError, match="token_ids"):
        sampling_kwargs(req(0), LIMITS)
    with pytest.raises(InvalidRequestError, match="max_tokens"):
        sampling_kwargs(req(stop_conditions=StopConditions(max_tokens=-1)), LIMITS)


def test_prefill_runs_one_token_and_asks_for_remote_decode() -> None:
    stop = StopConditions(max_tokens=50, min_tokens=5)
    kw = sampling_kwargs(req(stop_conditions=stop), LIMITS, prefill=True)
    assert (kw["max_tokens"], kw["min_tokens"]) == (1, 0)
    assert kw["extra_args"] == {"kv_transfer_params": {"do_remote_decode": True}}


def test_decode_passes_disaggregated_params_as_kv_transfer_params() -> None:
    params = {"remote_block_ids": [1, 2], "remote_engine_id": "e"}
    kw = sampling_kwargs(req(disaggregated_params=params), LIMITS)
    assert kw["extra_args"] == {"kv_transfer_params": params}


def test_priority_flips_sign_only_when_supported() -> None:
    assert engine_priority(5, LIMITS) == 0
    prio = EngineLimits(max_model_len=10, supports_priority=True)
    assert engine_priority(5, prio) == -5
    assert engine_priority(None, prio) == 0


@pytest.mark.parametrize(
    ("vllm_reason", "reason"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("abort", "cancelled"),
        ("error", "error"),
        ("repetition", "stop"),
        (None, None),
    ],
)
def test_finish_reasons(vllm_reason: str | None, reason: str | None) -> None:
    out = engine_output(Delta([5], vllm_reason))
    assert out is not None and out.finish_reason == reason and out.token_ids == [5]


def test_empty_non_final_delta_is_skipped_but_empty_final_is_not() -> None:
    assert engine_output(Delta()) is None
    final = engine_output(Delta([], "stop"), cached_tokens=4)
    assert final is not None and final.finish_reason == "stop" and final.cached_tokens == 4


def test_logprobs_of_chosen_and_top_alternatives_by_rank() -> None:
    positions = [
        {7: Lp(-2.0, 3), 1: Lp(-0.5, 1), 2: Lp(-1.0, 2)},
        {4: Lp(-0.1, 1), 8: Lp(-3.0, 2)},
    ]
    out = engine_output(Delta([7, 4], None, -2.1, positions), num_top_logprobs=2)
    assert out is not None
    assert out.log_probs == [-2.0, -0.1]
    assert out.top_logprobs == [
        [TopLogprob(1, -0.5), TopLogprob(2, -1.0)],
        [TopLogprob(4, -0.1), TopLogprob(8, -3.0)],
    ]
    assert out.cum_log_probs == -2.1

"""ChoiceState: engine chunks → text deltas (detokenization, stop strings, EOS, budget)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stator.errors import ServerError
from stator.frontend.postprocess import (
    ChoiceDelta,
    ChoiceLimits,
    ChoiceState,
    chat_logprobs,
    completion_logprobs,
)
from stator.frontend.tokenizer import Tokenizer
from stator.protocols.engine import LLMEngineOutput, TopLogprob

TEXT = "Hi 世界 🚀 and more text here."


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.from_dir(tiny_model_dir)


def run(
    state: ChoiceState, chunks: list[list[int]], last_finish: str | None = None
) -> list[ChoiceDelta]:
    out = []
    for i, ids in enumerate(chunks):
        finish = last_finish if i == len(chunks) - 1 else None
        delta = state.step(LLMEngineOutput(token_ids=ids, finish_reason=finish))  # type: ignore[arg-type]
        if delta is not None:
            out.append(delta)
    return out


def text_of(deltas: list[ChoiceDelta]) -> str:
    return "".join(d.text for d in deltas)


def one_per_chunk(ids: list[int]) -> list[list[int]]:
    return [[t] for t in ids]


def test_multibyte_text_is_never_split(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    state = ChoiceState(0, tokenizer, [], ChoiceLimits(max_tokens=100))
    deltas = run(state, one_per_chunk(ids), last_finish="stop")
    assert all("\ufffd" not in d.text for d in deltas)
    assert text_of(deltas) == TEXT
    assert deltas[-1].finish_reason == "stop"
    assert all(d.finish_reason is None for d in deltas[:-1])
    assert state.completion_tokens == len(ids)


def test_max_tokens_cuts_extra_tokens(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    state = ChoiceState(0, tokenizer, [], ChoiceLimits(max_tokens=3))
    deltas = run(state, [ids])
    assert deltas[-1].finish_reason == "length"
    assert state.completion_tokens == 3
    assert text_of(deltas) == tokenizer.decode(ids[:3])
    assert state.step(LLMEngineOutput(token_ids=ids)) is None  # done: further chunks ignored


def test_eos_stops_and_is_not_shown(tokenizer: Tokenizer) -> None:
    eos = min(tokenizer.eos_token_ids)
    ids = tokenizer.encode("abc def", add_special_tokens=False)
    limits = ChoiceLimits(max_tokens=50, eos_token_ids=frozenset({eos}))
    state = ChoiceState(0, tokenizer, [], limits)
    deltas = run(state, [[*ids, eos, *ids]])
    assert text_of(deltas) == "abc def"
    assert deltas[-1].finish_reason == "stop"
    assert state.completion_tokens == len(ids) + 1


def test_min_tokens_and_ignore_eos_skip_early_eos(tokenizer: Tokenizer) -> None:
    eos = min(tokenizer.eos_token_ids)
    a = tokenizer.encode("a", add_special_tokens=False)
    for limits in (
        ChoiceLimits(max_tokens=4, eos_token_ids=frozenset({eos}), min_tokens=3),
        ChoiceLimits(max_tokens=4, eos_token_ids=frozenset({eos}), ignore_eos=True),
    ):
        state = ChoiceState(0, tokenizer, [], limits)
        deltas = run(state, [[eos], a, a, a, a])
        if limits.ignore_eos:
            assert deltas[-1].finish_reason == "length" and state.completion_tokens == 4
        else:
            assert deltas[-1].finish_reason == "length"  # EOS came before min_tokens


def test_stop_string_split_across_chunks_is_held_back(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    limits = ChoiceLimits(max_tokens=100, stop=("and more",))
    state = ChoiceState(0, tokenizer, [], limits)
    deltas = run(state, one_per_chunk(ids))
    assert text_of(deltas) == TEXT[: TEXT.index("and more")]
    assert deltas[-1].finish_reason == "stop"
    assert all("and" not in d.text for d in deltas)


def test_held_text_is_flushed_at_the_end(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("ends with an", add_special_tokens=False)
    state = ChoiceState(0, tokenizer, [], ChoiceLimits(max_tokens=100, stop=("and",)))
    deltas = run(state, one_per_chunk(ids), last_finish="length")
    assert text_of(deltas) == "ends with an"
    assert deltas[-1].finish_reason == "length"


def test_end_of_stream_without_finish(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("partial", add_special_tokens=False)
    state = ChoiceState(0, tokenizer, [], ChoiceLimits(max_tokens=100))
    deltas = run(state, [ids])
    final = state.end_of_stream()
    assert text_of([*deltas, final]) == "partial" and final.finish_reason == "stop"


@pytest.mark.parametrize(
    ("engine", "openai"), [("stop", "stop"), ("cancelled", "stop"), ("length", "length")]
)
def test_engine_finish_reasons_map_like_dynamo(
    tokenizer: Tokenizer, engine: str, openai: str
) -> None:
    state = ChoiceState(0, tokenizer, [], ChoiceLimits(max_tokens=100))
    delta = state.step(LLMEngineOutput(token_ids=[], finish_reason=engine))  # type: ignore[arg-type]
    assert delta is not None and delta.finish_reason == openai and delta.text == ""


def test_engine_error_raises(tokenizer: Tokenizer) -> None:
    state = ChoiceState(0, tokenizer, [], ChoiceLimits(max_tokens=100))
    with pytest.raises(ServerError, match="out of memory"):
        state.step(LLMEngineOutput(finish_reason="error", error="out of memory"))


def test_empty_chunks_are_skipped_and_cached_tokens_kept(tokenizer: Tokenizer) -> None:
    state = ChoiceState(0, tokenizer, [], ChoiceLimits(max_tokens=100))
    assert state.step(LLMEngineOutput(cached_tokens=32)) is None
    assert not state.done and state.cached_tokens == 32


def test_logprobs_are_formatted(tokenizer: Tokenizer) -> None:
    ids = tokenizer.encode("abc", add_special_tokens=False)
    state = ChoiceState(0, tokenizer, [], ChoiceLimits(max_tokens=100, logprobs=True))
    out = LLMEngineOutput(
        token_ids=ids,
        log_probs=[-0.5] * len(ids),
        top_logprobs=[[TopLogprob(t, -0.5), TopLogprob(0, -3.0)] for t in ids],
    )
    delta = state.step(out)
    assert delta is not None and delta.logprobs is not None and len(delta.logprobs) == len(ids)
    chat = chat_logprobs(tokenizer, delta.logprobs, 1)
    assert "".join(c.token for c in chat.content) == "abc"
    assert all(len(c.top_logprobs) == 1 for c in chat.content)
    legacy = completion_logprobs(tokenizer, delta.logprobs, 2, text_offset=4)
    assert legacy.text_offset[0] == 4 and legacy.token_logprobs == [-0.5] * len(ids)
    assert all(len(top or {}) == 2 for top in legacy.top_logprobs)

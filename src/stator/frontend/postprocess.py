"""Engine output chunks → text deltas of one choice: detokenize, stop strings, EOS, max_tokens.

``ChoiceState.step`` takes each ``LLMEngineOutput`` of the choice's engine stream and returns
what to send: new text (never a partial character, never part of a stop string), the OpenAI
``finish_reason`` on the last delta, and token logprobs when asked for. The frontend enforces
``max_tokens`` and EOS itself too (the engine should, but a stray token must not leak): the
first EOS id after ``min_tokens`` output tokens ends the choice with ``stop`` unless
``ignore_eos``; the EOS token is counted but not shown, as vLLM does. Engine finish reasons
map as Dynamo maps them: ``stop``/``cancelled`` → ``stop``, ``length`` → ``length``, ``error`` →
a ``ServerError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from stator.errors import ServerError
from stator.frontend.detokenizer import IncrementalDetokenizer
from stator.frontend.protocol import (
    ChatLogprobs,
    CompletionLogprobs,
    TokenLogprob,
    TopLogprobEntry,
)
from stator.frontend.stop_strings import StopStringMatcher
from stator.frontend.tokenizer import Tokenizer
from stator.protocols.engine import LLMEngineOutput

_FINISH = {"stop": "stop", "cancelled": "stop", "length": "length"}


@dataclass(slots=True)
class TokenLogprobData:
    """One output token's logprob and its alternatives ``[(token_id, logprob)]``."""

    token_id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass(slots=True)
class ChoiceDelta:
    """What one step of a choice produced. ``finish_reason``: ``stop``/``length`` on the last."""

    index: int
    text: str
    finish_reason: str | None
    logprobs: list[TokenLogprobData] | None = None


@dataclass(frozen=True, slots=True)
class ChoiceLimits:
    """A choice's end conditions: output-token budget, EOS ids, stop strings."""

    max_tokens: int
    min_tokens: int = 0
    ignore_eos: bool = False
    eos_token_ids: frozenset[int] = frozenset()
    stop: tuple[str, ...] = ()
    logprobs: bool = False


class ChoiceState:
    """Postprocessing state of one choice (one engine stream).

    ``completion_tokens``: output tokens accepted so far; ``cached_tokens``: the engine's
    prefix-cache hit (tokens), once reported; ``finish_reason`` once done.
    """

    __slots__ = (
        "_detok",
        "_limits",
        "_matcher",
        "cached_tokens",
        "completion_tokens",
        "finish_reason",
        "index",
    )

    def __init__(
        self, index: int, tokenizer: Tokenizer, prompt_ids: Sequence[int], limits: ChoiceLimits
    ) -> None:
        self.index = index
        self._limits = limits
        self._detok = IncrementalDetokenizer(tokenizer, prompt_token_ids=prompt_ids)
        self._matcher = StopStringMatcher(limits.stop) if limits.stop else None
        self.completion_tokens = 0
        self.cached_tokens: int | None = None
        self.finish_reason: str | None = None

    @property
    def done(self) -> bool:
        """True once the choice has its finish reason."""
        return self.finish_reason is not None

    def step(self, out: LLMEngineOutput) -> ChoiceDelta | None:
        """Apply one engine chunk; ``None`` when there is nothing to send yet.

        Raises:
            ServerError: the engine reported ``finish_reason == "error"``.
        """
        if self.finish_reason is not None:
            return None
        if out.cached_tokens is not None:
            self.cached_tokens = out.cached_tokens
        if out.finish_reason == "error":
            raise ServerError(f"engine error: {out.error or 'unknown'}")
        taken, finish = self._accept(out.token_ids)
        if finish is None and out.finish_reason is not None:
            finish = _FINISH[out.finish_reason]
        text = self._detok.step(taken) if taken else ""
        text, finish = self._stop_strings(text, finish)
        logprobs = _logprobs(out, len(taken)) if self._limits.logprobs and taken else None
        self.finish_reason = finish
        if not text and finish is None and not logprobs:
            return None
        return ChoiceDelta(self.index, text, finish, logprobs)

    def end_of_stream(self) -> ChoiceDelta:
        """The engine stream ended without a finish reason: flush, finish (``length`` if the
        budget is used up, else ``stop``)."""
        budget_used = self.completion_tokens >= self._limits.max_tokens
        text, finish = self._stop_strings("", "length" if budget_used else "stop")
        self.finish_reason = finish
        return ChoiceDelta(self.index, text, finish)

    def _accept(self, ids: list[int]) -> tuple[list[int], str | None]:
        """The ids to keep from a chunk and the finish they cause (EOS → stop, budget → length)."""
        limits, finish = self._limits, None
        room = limits.max_tokens - self.completion_tokens
        eos_end = self._eos_end(ids) if not limits.ignore_eos else None
        if eos_end is not None and eos_end <= room:
            ids, finish = ids[:eos_end], "stop"
        elif len(ids) >= room:
            ids, finish = ids[:room], "length"
        self.completion_tokens += len(ids)
        return ids, finish

    def _eos_end(self, ids: list[int]) -> int | None:
        """One past the first EOS in ``ids`` allowed by ``min_tokens``, or ``None``."""
        eos, first_allowed = self._limits.eos_token_ids, self._limits.min_tokens
        if not eos:
            return None
        for i, token in enumerate(ids):
            if token in eos and self.completion_tokens + i >= first_allowed:
                return i + 1
        return None

    def _stop_strings(self, text: str, finish: str | None) -> tuple[str, str | None]:
        if finish is not None:
            text += self._detok.flush()
        if self._matcher is None:
            return text, finish
        sent, stopped = self._matcher.feed(text)
        if stopped:
            return sent, "stop"
        if finish is not None:
            sent += self._matcher.flush()
        return sent, finish


def _logprobs(out: LLMEngineOutput, num_taken: int) -> list[TokenLogprobData] | None:
    if out.log_probs is None:
        return None
    tops = out.top_logprobs or []
    data = []
    for i in range(min(num_taken, len(out.log_probs))):
        top = [(t.token_id, t.logprob) for t in tops[i]] if i < len(tops) else []
        data.append(TokenLogprobData(out.token_ids[i], out.log_probs[i], top))
    return data


def chat_logprobs(
    tokenizer: Tokenizer, data: Sequence[TokenLogprobData], num_top: int
) -> ChatLogprobs:
    """OpenAI chat ``logprobs`` (``content`` entries with ``num_top`` alternatives each)."""
    content = []
    for item in data:
        token = _token_text(tokenizer, item.token_id)
        top = [
            TopLogprobEntry(token=t, logprob=lp, bytes=list(t.encode()))
            for t, lp in ((_token_text(tokenizer, tid), lp) for tid, lp in item.top[:num_top])
        ]
        content.append(
            TokenLogprob(
                token=token, logprob=item.logprob, bytes=list(token.encode()), top_logprobs=top
            )
        )
    return ChatLogprobs(content=content)


def completion_logprobs(
    tokenizer: Tokenizer, data: Sequence[TokenLogprobData], num_top: int, text_offset: int
) -> CompletionLogprobs:
    """OpenAI legacy completions ``logprobs``; ``text_offset`` is where this delta's text
    starts in the choice's text (characters)."""
    tokens, offsets, offset = [], [], text_offset
    for item in data:
        token = _token_text(tokenizer, item.token_id)
        tokens.append(token)
        offsets.append(offset)
        offset += len(token)
    return CompletionLogprobs(
        tokens=tokens,
        token_logprobs=[item.logprob for item in data],
        top_logprobs=[
            {_token_text(tokenizer, tid): lp for tid, lp in item.top[:num_top]} for item in data
        ],
        text_offset=offsets,
    )


def _token_text(tokenizer: Tokenizer, token_id: int) -> str:
    return tokenizer.decode([token_id], skip_special_tokens=False)

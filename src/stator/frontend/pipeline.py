"""Per-model preprocessing: model card → tokenizer + chat template → ``PreprocessedRequest``.

A ``ModelPipeline`` turns a validated OpenAI request into prompt token ids (chat template then
tokenizer, or the completions prompt forms), checks them against the vocabulary and the context
length, and builds one engine request per choice (``n > 1`` is fanned out by the frontend; each
choice gets ``seed + i`` so seeded choices differ but stay reproducible).

Context rule (vLLM's): the prompt must be shorter than ``context_length``; an explicit
``max_tokens`` must fit beside it; without one, the output may use the rest of the context.
Prompts longer than ``_THREAD_CHARS`` characters are tokenized in a worker thread so a huge
prompt does not stall the event loop.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import msgspec

from stator.errors import ContextLengthError, InvalidRequestError
from stator.frontend.chat_template import ChatTemplate
from stator.frontend.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    output_limit,
    prompt_kind,
)
from stator.frontend.tokenizer import Tokenizer
from stator.protocols.engine import (
    OutputOptions,
    PreprocessedRequest,
    RoutingHints,
    SamplingOptions,
    StopConditions,
)
from stator.protocols.model_card import ModelCard

_THREAD_CHARS = 32_768
"""Prompts longer than this (characters) are tokenized off the event loop."""


@dataclass(frozen=True, slots=True)
class Prompt:
    """One tokenized prompt and the output budget it leaves. ``max_tokens`` in tokens."""

    token_ids: list[int]
    max_tokens: int


class ModelPipeline:
    """Preprocessing for one model (immutable after construction; shared by its requests).

    ``context_length``: the card's (tokens); ``eos_token_ids`` from the tokenizer files.
    """

    def __init__(self, card: ModelCard, tokenizer: Tokenizer, template: ChatTemplate | None):
        self.card = card
        self.tokenizer = tokenizer
        self.template = template
        self.context_length = card.context_length
        self.eos_token_ids = sorted(tokenizer.eos_token_ids)

    @classmethod
    def from_card(cls, card: ModelCard) -> ModelPipeline:
        """Load the tokenizer and chat template named by ``card.tokenizer_path``.

        Raises:
            ConfigError: the tokenizer files are missing or unreadable.
            InvalidRequestError: the chat template does not compile.
        """
        tokenizer = Tokenizer.from_dir(card.tokenizer_path)
        template = ChatTemplate.from_model_dir(
            card.tokenizer_path, special_tokens=tokenizer.special_tokens_map
        )
        return cls(card, tokenizer, template)

    # -- prompts ---------------------------------------------------------------------------

    def render_chat(self, request: ChatCompletionRequest) -> str:
        """The chat prompt text (the model's template applied to the messages).

        Raises:
            InvalidRequestError: the model has no chat template, or the template rejects the
                messages.
        """
        if self.template is None:
            raise InvalidRequestError(
                f"model {self.card.name!r} has no chat template; use /v1/completions",
                param="messages",
            )
        messages: list[dict[str, Any]] = msgspec.to_builtins(request.messages)
        return self.template.render(
            messages,
            add_generation_prompt=request.add_generation_prompt,
            tools=request.tools,
            template_kwargs=request.chat_template_kwargs,
        )

    async def chat_prompt(self, request: ChatCompletionRequest) -> Prompt:
        """Render and tokenize a chat request and check its length.

        Raises:
            InvalidRequestError: see ``render_chat``.
            ContextLengthError: the prompt (plus ``max_tokens``) exceeds the context length.
        """
        text = self.render_chat(request)
        ids = await self.tokenize(text, add_special_tokens=False)
        return self.fit(ids, output_limit(request), param="messages")

    async def completion_prompts(self, request: CompletionRequest) -> list[Prompt]:
        """Tokenize (or check) each prompt of a completions request.

        Raises:
            InvalidRequestError: a token id outside the vocabulary (``param="prompt"``).
            ContextLengthError: a prompt (plus ``max_tokens``) exceeds the context length.
        """
        kind = prompt_kind(request.prompt)
        if kind == "text":
            lists = [await self.tokenize(request.prompt)]
        elif kind == "texts":
            lists = [await self.tokenize(p) for p in request.prompt]
        elif kind == "tokens":
            lists = [list(request.prompt)]
        else:
            lists = [list(p) for p in request.prompt]
        if kind in ("tokens", "token_lists"):
            for ids in lists:
                self.check_vocab(ids)
        limit = output_limit(request)
        return [self.fit(ids, limit, param="prompt") for ids in lists]

    async def tokenize(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text`` (in a worker thread when the text is long)."""
        if len(text) <= _THREAD_CHARS:
            return self.tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return await asyncio.to_thread(
            self.tokenizer.encode, text, add_special_tokens=add_special_tokens
        )

    def check_vocab(self, token_ids: list[int]) -> None:
        """Raises ``InvalidRequestError`` (``param="prompt"``) for ids outside the vocabulary."""
        bad = self.tokenizer.invalid_token_ids(token_ids)
        if bad:
            raise InvalidRequestError(
                f"token ids {bad[:8]} are outside the vocabulary [0, {self.tokenizer.vocab_size})",
                param="prompt",
            )

    def fit(self, token_ids: list[int], max_tokens: int | None, *, param: str) -> Prompt:
        """Check the prompt against the context length and settle the output budget.

        Raises:
            ContextLengthError: the prompt is not shorter than the context, or prompt plus an
                explicit ``max_tokens`` exceeds it. Messages follow vLLM/OpenAI wording.
        """
        isl, limit = len(token_ids), self.context_length
        if isl >= limit:
            raise ContextLengthError(
                f"This model's maximum context length is {limit} tokens. However, your prompt "
                f"has {isl} tokens. Please reduce the length of the {param}.",
                param=param,
            )
        if max_tokens is None:
            return Prompt(token_ids, limit - isl)
        if isl + max_tokens > limit:
            raise ContextLengthError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{isl + max_tokens} tokens ({isl} in the {param}, {max_tokens} for the "
                "completion). Please reduce the length of the prompt or the completion.",
                param="max_tokens",
            )
        return Prompt(token_ids, max_tokens)

    # -- engine requests -------------------------------------------------------------------

    def engine_requests(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        prompt: Prompt,
        request_id: str,
        num_choices: int,
    ) -> list[PreprocessedRequest]:
        """One engine request per choice, ids ``{request_id}-{i}``."""
        base = self.engine_request(request, prompt, request_id)
        if num_choices == 1:
            return [base]
        out = []
        for i in range(num_choices):
            seed = None if request.seed is None else request.seed + i
            sampling = msgspec.structs.replace(base.sampling_options, seed=seed)
            out.append(
                msgspec.structs.replace(
                    base, request_id=f"{request_id}-{i}", sampling_options=sampling
                )
            )
        return out

    def engine_request(
        self,
        request: ChatCompletionRequest | CompletionRequest,
        prompt: Prompt,
        request_id: str,
    ) -> PreprocessedRequest:
        """The engine request for one choice (the OpenAI fields mapped to the worker contract)."""
        nvext = request.nvext
        top_k = request.top_k
        if top_k is None and nvext is not None:
            top_k = nvext.top_k
        rep = request.repetition_penalty
        if rep is None and nvext is not None:
            rep = nvext.repetition_penalty
        ignore_eos = request.ignore_eos
        if ignore_eos is None and nvext is not None:
            ignore_eos = nvext.ignore_eos
        hints = nvext.agent_hints if nvext is not None else None
        pinned = nvext.backend_instance_id if nvext is not None else None
        return PreprocessedRequest(
            token_ids=prompt.token_ids,
            request_id=request_id,
            model=self.card.name,
            sampling_options=SamplingOptions(
                temperature=request.temperature,
                top_p=request.top_p,
                top_k=top_k,
                min_p=request.min_p,
                seed=request.seed,
                frequency_penalty=request.frequency_penalty,
                presence_penalty=request.presence_penalty,
                repetition_penalty=rep,
            ),
            stop_conditions=StopConditions(
                max_tokens=prompt.max_tokens,
                min_tokens=request.min_tokens,
                ignore_eos=bool(ignore_eos),
            ),
            output_options=OutputOptions(logprobs=_logprobs(request)),
            eos_token_ids=self.eos_token_ids,
            annotations=list(nvext.annotations or []) if nvext is not None else [],
            priority=hints.priority if hints is not None else None,
            routing=RoutingHints(backend_instance_id=pinned) if pinned is not None else None,
        )


def _logprobs(request: ChatCompletionRequest | CompletionRequest) -> int | None:
    """Top logprobs to ask the engine for (0 = only the sampled token's), or ``None``."""
    if isinstance(request, ChatCompletionRequest):
        return (request.top_logprobs or 0) if request.logprobs else None
    return request.logprobs

"""``POST /v1/chat/completions``: a chat request → engine requests → OpenAI chunks or response.

Streaming follows OpenAI: each choice's first chunk carries ``delta.role = "assistant"``, its
last chunk the ``finish_reason``; with ``stream_options.include_usage`` every chunk has
``"usage": null`` and a final chunk has ``"choices": []`` and the usage;
``continuous_usage_stats`` puts the usage so far on every chunk. A choice's last chunk has an
empty delta when it brings no text. Dynamo's ``nvext`` response (``extra_fields``): ``worker_id``
on every chunk, ``timing`` on each choice's last chunk, both at the top level of a full response.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec

from stator.frontend.generation import Arrival, RequestInfo, RequestRun
from stator.frontend.metrics import FrontendMetrics
from stator.frontend.models import ModelRegistry
from stator.frontend.postprocess import (
    ChoiceDelta,
    ChoiceLimits,
    ChoiceState,
    TokenLogprobData,
    chat_logprobs,
)
from stator.frontend.protocol import (
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChatDelta,
    ChatLogprobs,
    ChatResponseMessage,
    decode_chat,
    stop_strings,
)
from stator.frontend.respond import CollectedChoice, Result, StreamChunks, collect
from stator.frontend.tokenizer import Tokenizer

_ENCODER = msgspec.json.Encoder()
ENDPOINT = "chat_completions"


@dataclass(slots=True)
class ChatJob:
    """A preprocessed chat request: its (not yet started) ``run`` and how to answer it."""

    request: ChatCompletionRequest
    run: RequestRun
    tokenizer: Tokenizer
    response_id: str
    created: int

    @property
    def stream(self) -> bool:
        """Whether the client asked for SSE."""
        return self.request.stream

    def events(self) -> AsyncIterator[bytes]:
        """The response's SSE events, ending with ``data: [DONE]``."""
        started = [False] * len(self.run.choices)

        def choice(d: ChoiceDelta) -> ChatChunkChoice:
            if not started[d.index]:
                started[d.index] = True
                delta = ChatDelta(role="assistant", content=d.text)
            else:
                delta = ChatDelta(content=d.text) if d.text else ChatDelta()
            return ChatChunkChoice(
                index=d.index,
                delta=delta,
                logprobs=self._logprobs(d.logprobs),
                finish_reason=d.finish_reason,
            )

        return StreamChunks(self.request, self.run, self._chunk).events(choice)

    async def collect(self) -> Result:
        """The whole response as ``(status, headers, body)``."""
        return await collect(self.run, self._response)

    def _response(self, collected: list[CollectedChoice]) -> bytes:
        choices = [
            ChatChoice(
                index=i,
                message=ChatResponseMessage(content=c.text),
                logprobs=self._logprobs(c.logprobs) if self.request.logprobs else None,
                finish_reason=c.finish_reason,
            )
            for i, c in enumerate(collected)
        ]
        response = ChatCompletionResponse(
            id=self.response_id,
            created=self.created,
            model=self.request.model,
            choices=choices,
            usage=self.run.usage(),
        )
        nvext = self.run.nvext(self.request.nvext.extra_fields if self.request.nvext else None)
        if nvext is not None:
            response.nvext = nvext
        return _ENCODER.encode(response)

    def _chunk(self, choices: list[ChatChunkChoice]) -> ChatCompletionChunk:
        return ChatCompletionChunk(
            id=self.response_id, created=self.created, model=self.request.model, choices=choices
        )

    def _logprobs(self, data: list[TokenLogprobData] | None) -> ChatLogprobs | None:
        if not data:
            return None
        return chat_logprobs(self.tokenizer, data, self.request.top_logprobs or 0)


async def prepare_chat(
    body: bytes, models: ModelRegistry, metrics: FrontendMetrics, arrival: Arrival
) -> ChatJob:
    """Decode, check and preprocess a chat request; the job's run is not started yet.

    Raises:
        InvalidRequestError / ContextLengthError: bad input (400).
        NotFoundError: unknown model (404).
    """
    request = decode_chat(body)
    served = models.get(request.model)
    pipeline = served.pipeline
    prompt = await pipeline.chat_prompt(request)
    response_id = f"chatcmpl-{uuid.uuid4().hex}"
    engine_requests = pipeline.engine_requests(request, prompt, response_id, request.n)
    limits = ChoiceLimits(
        max_tokens=prompt.max_tokens,
        min_tokens=request.min_tokens or 0,
        ignore_eos=engine_requests[0].stop_conditions.ignore_eos,
        eos_token_ids=frozenset(pipeline.eos_token_ids),
        stop=tuple(stop_strings(request)),
        logprobs=request.logprobs,
    )
    choices = [
        ChoiceState(i, pipeline.tokenizer, prompt.token_ids, limits) for i in range(request.n)
    ]
    run = RequestRun(
        served.router,
        engine_requests,
        choices,
        prompt_tokens=len(prompt.token_ids),
        prompt_groups=[0] * request.n,
        info=RequestInfo(request.model, ENDPOINT, request.stream, arrival),
        metrics=metrics,
    )
    created = arrival.received_unix_ms // 1000
    return ChatJob(request, run, pipeline.tokenizer, response_id, created)

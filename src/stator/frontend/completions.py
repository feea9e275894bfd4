"""``POST /v1/completions``: prompts → engine requests → ``text_completion`` chunks or response.

The prompt may be a string, a list of strings, a list of token ids or a list of token-id lists;
each prompt gets ``n`` choices, numbered ``prompt_index * n + j`` as OpenAI does. ``echo``
prepends the prompt's text to its choices. Usage counts every prompt's tokens once.
Streaming and ``stream_options`` behave as in chat (see ``stator.frontend.chat``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec

from stator.errors import InvalidRequestError
from stator.frontend.generation import Arrival, RequestInfo, RequestRun
from stator.frontend.metrics import FrontendMetrics
from stator.frontend.models import ModelRegistry
from stator.frontend.pipeline import ModelPipeline, Prompt
from stator.frontend.postprocess import (
    ChoiceDelta,
    ChoiceLimits,
    ChoiceState,
    TokenLogprobData,
    completion_logprobs,
)
from stator.frontend.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
    decode_completion,
    prompt_kind,
    stop_strings,
)
from stator.frontend.respond import CollectedChoice, Result, StreamChunks, collect
from stator.frontend.tokenizer import Tokenizer
from stator.protocols.engine import PreprocessedRequest

_ENCODER = msgspec.json.Encoder()
ENDPOINT = "completions"


@dataclass(slots=True)
class CompletionJob:
    """A preprocessed completions request: its (not yet started) ``run`` and how to answer.

    ``echo_texts[i]``: text put before choice ``i``'s output (``echo``), else empty.
    """

    request: CompletionRequest
    run: RequestRun
    tokenizer: Tokenizer
    response_id: str
    created: int
    echo_texts: list[str]

    @property
    def stream(self) -> bool:
        """Whether the client asked for SSE."""
        return self.request.stream

    def events(self) -> AsyncIterator[bytes]:
        """The response's SSE events, ending with ``data: [DONE]``; ``echo`` text leads each
        choice's first chunk."""
        started = [False] * len(self.run.choices)
        offsets = [0] * len(self.run.choices)

        def choice(d: ChoiceDelta) -> CompletionChoice:
            text = d.text
            if not started[d.index]:
                started[d.index] = True
                text = self.echo_texts[d.index] + text
            out = CompletionChoice(
                index=d.index,
                text=text,
                logprobs=self._logprobs(d.logprobs, offsets[d.index] + len(text) - len(d.text)),
                finish_reason=d.finish_reason,
            )
            offsets[d.index] += len(text)
            return out

        return StreamChunks(self.request, self.run, self._response).events(choice)

    async def collect(self) -> Result:
        """The whole response as ``(status, headers, body)``."""
        return await collect(self.run, self._full)

    def _full(self, collected: list[CollectedChoice]) -> bytes:
        choices = []
        for i, c in enumerate(collected):
            echo = self.echo_texts[i]
            logprobs = self._logprobs(c.logprobs, len(echo)) if self.request.logprobs else None
            choices.append(
                CompletionChoice(
                    index=i, text=echo + c.text, logprobs=logprobs, finish_reason=c.finish_reason
                )
            )
        response = self._response(choices)
        response.usage = self.run.usage()
        nvext = self.run.nvext(self.request.nvext.extra_fields if self.request.nvext else None)
        if nvext is not None:
            response.nvext = nvext
        return _ENCODER.encode(response)

    def _response(self, choices: list[CompletionChoice]) -> CompletionResponse:
        return CompletionResponse(
            id=self.response_id, created=self.created, model=self.request.model, choices=choices
        )

    def _logprobs(
        self, data: list[TokenLogprobData] | None, text_offset: int
    ) -> CompletionLogprobs | None:
        if not data:
            return None
        return completion_logprobs(self.tokenizer, data, self.request.logprobs or 0, text_offset)


async def prepare_completion(
    body: bytes, models: ModelRegistry, metrics: FrontendMetrics, arrival: Arrival
) -> CompletionJob:
    """Decode, check and preprocess a completions request; the job's run is not started yet.

    Raises:
        InvalidRequestError / ContextLengthError: bad input (400).
        NotFoundError: unknown model (404).
    """
    request = decode_completion(body)
    if request.suffix:
        raise InvalidRequestError("suffix is not supported", param="suffix")
    served = models.get(request.model)
    pipeline = served.pipeline
    prompts = await pipeline.completion_prompts(request)
    response_id = f"cmpl-{uuid.uuid4().hex}"
    n = request.n
    engine_requests: list[PreprocessedRequest] = []
    choices: list[ChoiceState] = []
    for p, prompt in enumerate(prompts):
        rid = response_id if len(prompts) == 1 else f"{response_id}-p{p}"
        engine_requests += pipeline.engine_requests(request, prompt, rid, n)
        limits = _limits(request, prompt, pipeline, engine_requests[-1])
        choices += [
            ChoiceState(p * n + j, pipeline.tokenizer, prompt.token_ids, limits) for j in range(n)
        ]
    run = RequestRun(
        served.router,
        engine_requests,
        choices,
        prompt_tokens=sum(len(p.token_ids) for p in prompts),
        prompt_groups=[p for p in range(len(prompts)) for _ in range(n)],
        info=RequestInfo(request.model, ENDPOINT, request.stream, arrival),
        metrics=metrics,
    )
    echo = _echo_texts(request, prompts, pipeline) if request.echo else [""] * len(prompts)
    return CompletionJob(
        request,
        run,
        pipeline.tokenizer,
        response_id,
        arrival.received_unix_ms // 1000,
        [text for text in echo for _ in range(n)],
    )


def _limits(
    request: CompletionRequest, prompt: Prompt, pipeline: ModelPipeline, sent: PreprocessedRequest
) -> ChoiceLimits:
    return ChoiceLimits(
        max_tokens=prompt.max_tokens,
        min_tokens=request.min_tokens or 0,
        ignore_eos=sent.stop_conditions.ignore_eos,
        eos_token_ids=frozenset(pipeline.eos_token_ids),
        stop=tuple(stop_strings(request)),
        logprobs=request.logprobs is not None,
    )


def _echo_texts(
    request: CompletionRequest, prompts: list[Prompt], pipeline: ModelPipeline
) -> list[str]:
    kind = prompt_kind(request.prompt)
    if kind == "text":
        return [request.prompt]
    if kind == "texts":
        return list(request.prompt)
    return [pipeline.tokenizer.decode(p.token_ids, skip_special_tokens=False) for p in prompts]

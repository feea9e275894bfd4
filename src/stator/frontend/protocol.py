"""OpenAI API wire types (requests decoded, responses encoded) as msgspec structs.

Requests follow OpenAI's ``createChatCompletion``/``createCompletion`` schemas plus the vLLM
extensions (``top_k``, ``min_tokens``, ``ignore_eos``, ``repetition_penalty``) and Dynamo's
``nvext``. Type and range errors are found by msgspec at decode time (``decode_chat`` /
``decode_completion`` turn them into ``InvalidRequestError`` naming the field); rules that span
fields are checked by ``check_*`` afterwards. Unknown fields are ignored, as OpenAI-compatible
servers (vLLM, Dynamo) do.

Ranges are OpenAI's: ``temperature`` in [0, 2], ``top_p`` in (0, 1], ``n`` in [1, 128],
``max_tokens`` >= 1, penalties in [-2, 2], ``top_logprobs`` in [0, 20].
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from stator.errors import InvalidRequestError

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
NumChoices = Annotated[int, Meta(ge=1, le=128)]
MaxTokens = Annotated[int, Meta(ge=1)]
MinTokens = Annotated[int, Meta(ge=0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
RepetitionPenalty = Annotated[float, Meta(gt=0.0, le=10.0)]
TopK = Annotated[int, Meta(ge=-1)]
TopLogprobs = Annotated[int, Meta(ge=0, le=20)]
StopList = Annotated[list[str], Meta(max_length=64)]

CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
NVEXT_FIELDS = frozenset({"worker_id", "timing"})

# ---------------------------------------------------------------------------------------------
# requests


class StreamOptions(Struct, kw_only=True):
    """``include_usage``: a final usage chunk; ``continuous_usage_stats``: usage on every chunk."""

    include_usage: bool = False
    continuous_usage_stats: bool = False


class AgentHints(Struct, kw_only=True):
    """Dynamo ``nvext.agent_hints``: ``priority`` (larger = more important) goes to the router
    and the engine."""

    priority: int | None = None


class NvExt(Struct, kw_only=True):
    """Dynamo's request extension.

    ``extra_fields``: response extras to return (``worker_id``, ``timing``);
    ``backend_instance_id``: pin the request to this worker; ``annotations``: passed to the
    engine. ``ignore_eos``/``top_k``/``repetition_penalty`` may be given here as in Dynamo; the
    top-level field wins.
    """

    extra_fields: list[str] | None = None
    backend_instance_id: Annotated[int, Meta(ge=0)] | None = None
    agent_hints: AgentHints | None = None
    annotations: list[str] | None = None
    ignore_eos: bool | None = None
    top_k: TopK | None = None
    repetition_penalty: RepetitionPenalty | None = None


class ContentPart(Struct, kw_only=True, omit_defaults=True):
    """One part of a multi-part message content; only ``type == "text"`` is served."""

    type: str
    text: str | None = None


class ChatMessage(Struct, kw_only=True, omit_defaults=True):
    """A chat message. ``content`` is a string, a list of text parts, or null (tool calls).

    Unset optional fields stay out of ``msgspec.to_builtins`` so chat templates see them as
    undefined, as with ``transformers``.
    """

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class _SamplingFields(Struct, kw_only=True):
    """Fields shared by chat and completions requests."""

    model: str
    n: NumChoices = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | StopList | None = None
    max_tokens: MaxTokens | None = None
    min_tokens: MinTokens | None = None
    ignore_eos: bool | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    top_k: TopK | None = None
    min_p: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    seed: int | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    repetition_penalty: RepetitionPenalty | None = None
    user: str | None = None
    nvext: NvExt | None = None


class ChatCompletionRequest(_SamplingFields, kw_only=True):
    """``POST /v1/chat/completions``. ``max_completion_tokens`` wins over ``max_tokens``."""

    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    max_completion_tokens: MaxTokens | None = None
    logprobs: bool = False
    top_logprobs: TopLogprobs | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    add_generation_prompt: bool = True
    chat_template_kwargs: dict[str, Any] | None = None


class CompletionRequest(_SamplingFields, kw_only=True):
    """``POST /v1/completions``. ``prompt``: a string, list of strings, list of token ids, or
    list of token-id lists (checked by ``check_completion``). ``max_tokens`` defaults to 16, as in
    OpenAI's API reference."""

    prompt: Any
    logprobs: TopLogprobs | None = None
    echo: bool = False
    suffix: str | None = None
    best_of: NumChoices | None = None


# ---------------------------------------------------------------------------------------------
# responses


class PromptTokensDetails(Struct, kw_only=True):
    """``cached_tokens``: prompt tokens served from the engine's prefix cache."""

    cached_tokens: int = 0


class Usage(Struct, kw_only=True):
    """Token counts of a request (all choices together)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class WorkerIdInfo(Struct, kw_only=True):
    """Dynamo's ``nvext.worker_id``: the workers (and data-parallel ranks) that ran prefill
    and decode."""

    prefill_worker_id: int | None = None
    prefill_dp_rank: int = 0
    decode_worker_id: int | None = None
    decode_dp_rank: int = 0


class TimingInfo(Struct, kw_only=True, omit_defaults=True):
    """Dynamo's ``nvext.timing``: ms since the frontend received the request."""

    request_received_ms: int | None = None
    ttft_ms: float | None = None
    total_time_ms: float | None = None


class NvExtResponse(Struct, kw_only=True, omit_defaults=True):
    """Top-level ``nvext`` of a response (final chunk when streaming)."""

    worker_id: WorkerIdInfo | None = None
    timing: TimingInfo | None = None


class TopLogprobEntry(Struct, kw_only=True):
    """One alternative token at a position (chat logprobs)."""

    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(Struct, kw_only=True):
    """A sampled token's logprob with its alternatives (chat logprobs)."""

    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprobEntry] = msgspec.field(default_factory=list)


class ChatLogprobs(Struct, kw_only=True):
    """``choices[i].logprobs`` of a chat response."""

    content: list[TokenLogprob]


class CompletionLogprobs(Struct, kw_only=True):
    """``choices[i].logprobs`` of a completions response (legacy shape)."""

    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class ChatDelta(Struct, kw_only=True):
    """A streamed message delta; unset fields are omitted."""

    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET


class ChatChunkChoice(Struct, kw_only=True):
    """One choice of a ``chat.completion.chunk``."""

    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(Struct, kw_only=True):
    """A streamed chat event. ``usage``: omitted, ``null`` or the counts (``stream_options``)."""

    id: str
    object: str = "chat.completion.chunk"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChunkChoice]
    usage: Usage | UnsetType | None = UNSET
    nvext: NvExtResponse | UnsetType = UNSET


class ChatResponseMessage(Struct, kw_only=True):
    """The assistant message of a non-streamed choice."""

    role: str = "assistant"
    content: str | None = None
    refusal: str | None = None


class ChatChoice(Struct, kw_only=True):
    """One choice of a ``chat.completion``."""

    index: int
    message: ChatResponseMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(Struct, kw_only=True):
    """A non-streamed chat completion."""

    id: str
    object: str = "chat.completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[ChatChoice]
    usage: Usage
    nvext: NvExtResponse | UnsetType = UNSET


class CompletionChoice(Struct, kw_only=True):
    """One choice of a ``text_completion`` (streamed or not)."""

    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(Struct, kw_only=True):
    """A completions response or streamed chunk (same object name, as OpenAI does)."""

    id: str
    object: str = "text_completion"
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[CompletionChoice]
    usage: Usage | UnsetType | None = UNSET
    nvext: NvExtResponse | UnsetType = UNSET


class ModelObject(Struct, kw_only=True):
    """One entry of ``GET /v1/models``."""

    id: str
    object: str = "model"
    created: int
    owned_by: str = "stator"


class ModelList(Struct, kw_only=True):
    """``GET /v1/models``."""

    object: str = "list"
    data: list[ModelObject]


class ErrorDetail(Struct, kw_only=True):
    """OpenAI's error object."""

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(Struct, kw_only=True):
    """Every error body: ``{"error": {"message", "type", "param", "code"}}``."""

    error: ErrorDetail


# ---------------------------------------------------------------------------------------------
# decoding and cross-field checks

T = TypeVar("T")
_CHAT_DECODER = msgspec.json.Decoder(ChatCompletionRequest)
_COMPLETION_DECODER = msgspec.json.Decoder(CompletionRequest)
_AT_PATH = re.compile(r" - at `\$\.?(.*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def decode_chat(body: bytes) -> ChatCompletionRequest:
    """Decode and check a chat request body.

    Raises:
        InvalidRequestError: malformed JSON, a wrong type, an out-of-range value or a bad
            combination; ``param`` names the field (e.g. ``messages[0].role``).
    """
    request = _decode(_CHAT_DECODER, body)
    check_chat(request)
    return request


def decode_completion(body: bytes) -> CompletionRequest:
    """Decode and check a completions request body (errors as ``decode_chat``)."""
    request = _decode(_COMPLETION_DECODER, body)
    check_completion(request)
    return request


def _decode(decoder: msgspec.json.Decoder[T], body: bytes) -> T:
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, param = validation_message(str(exc))
        raise InvalidRequestError(message, param=param) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"Request body is not valid JSON: {exc}") from None


def validation_message(text: str) -> tuple[str, str | None]:
    """Split msgspec's ``"<what> - at `$.a.b`"`` into (message, param ``a.b``)."""
    match = _AT_PATH.search(text)
    path = match.group(1) if match else ""
    missing = _MISSING.search(text)
    if missing:
        path = f"{path}.{missing.group(1)}" if path else missing.group(1)
    message = text[: match.start()] if match else text
    param = path or None
    return (f"{message} (at '{param}')" if param else message), param


def check_chat(request: ChatCompletionRequest) -> None:
    """Cross-field rules of a chat request.

    Raises:
        InvalidRequestError: unknown role, non-text content, ``top_logprobs`` without
            ``logprobs``, or a rule of ``_check_common``.
    """
    for i, message in enumerate(request.messages):
        if message.role not in CHAT_ROLES:
            raise InvalidRequestError(
                f"Invalid role {message.role!r}; expected one of {sorted(CHAT_ROLES)}",
                param=f"messages[{i}].role",
            )
        if isinstance(message.content, list):
            _check_parts(message.content, i)
    if request.top_logprobs is not None and not request.logprobs:
        raise InvalidRequestError("top_logprobs requires logprobs=true", param="top_logprobs")
    _check_common(request, output_limit(request))


def _check_parts(parts: list[ContentPart], index: int) -> None:
    for j, part in enumerate(parts):
        if part.type != "text" or part.text is None:
            raise InvalidRequestError(
                f"Unsupported content part type {part.type!r}: only 'text' parts are served",
                param=f"messages[{index}].content[{j}]",
            )


def check_completion(request: CompletionRequest) -> None:
    """Cross-field rules of a completions request: the prompt's form, ``best_of``, common ones.

    Raises:
        InvalidRequestError: see ``prompt_kind`` and ``_check_common``.
    """
    prompt_kind(request.prompt)
    if request.best_of is not None and request.best_of != request.n:
        raise InvalidRequestError("best_of different from n is not supported", param="best_of")
    _check_common(request, output_limit(request))


def _check_common(request: _SamplingFields, max_tokens: int | None) -> None:
    if request.stream_options is not None and not request.stream:
        raise InvalidRequestError(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    stops = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    if any(s == "" for s in stops):
        raise InvalidRequestError("stop strings must not be empty", param="stop")
    min_tokens = request.min_tokens
    if min_tokens is not None and max_tokens is not None and min_tokens > max_tokens:
        raise InvalidRequestError(
            f"min_tokens ({min_tokens}) must not exceed max_tokens ({max_tokens})",
            param="min_tokens",
        )
    nvext = request.nvext
    if nvext is not None and nvext.extra_fields:
        unknown = sorted(set(nvext.extra_fields) - NVEXT_FIELDS)
        if unknown:
            raise InvalidRequestError(
                f"Unknown nvext.extra_fields {unknown}; supported: {sorted(NVEXT_FIELDS)}",
                param="nvext.extra_fields",
            )


PromptKind = Literal["text", "texts", "tokens", "token_lists"]


def prompt_kind(prompt: Any) -> PromptKind:
    """Which of OpenAI's four prompt forms ``prompt`` is.

    Raises:
        InvalidRequestError: empty, or not a string / list of strings / list of ints / list of
            lists of ints (booleans are not token ids).
    """
    if isinstance(prompt, str):
        return "text"
    if not isinstance(prompt, list) or not prompt:
        raise InvalidRequestError(
            "prompt must be a string, a list of strings, a list of token ids or a list of "
            "token-id lists, and must not be empty",
            param="prompt",
        )
    if _all_tokens(prompt):
        return "tokens"
    if all(isinstance(p, str) for p in prompt):
        return "texts"
    if all(isinstance(p, list) and p and _all_tokens(p) for p in prompt):
        return "token_lists"
    raise InvalidRequestError(
        "prompt must be a string, a list of strings, a list of token ids or a list of non-empty "
        "token-id lists",
        param="prompt",
    )


def _all_tokens(values: list[Any]) -> bool:
    """Every value is an ``int`` (not a ``bool``); one C-level pass over the types."""
    return set(map(type, values)) == {int}


def output_limit(request: ChatCompletionRequest | CompletionRequest) -> int | None:
    """The requested output tokens: ``max_completion_tokens`` or ``max_tokens`` (chat, may be
    ``None`` = up to the context length); ``max_tokens`` or 16 (completions, OpenAI's default)."""
    if isinstance(request, ChatCompletionRequest):
        return request.max_completion_tokens or request.max_tokens
    return request.max_tokens if request.max_tokens is not None else 16


def stop_strings(request: _SamplingFields) -> list[str]:
    """The request's stop strings as a list (``stop`` may be a string, a list or null)."""
    if request.stop is None:
        return []
    return [request.stop] if isinstance(request.stop, str) else list(request.stop)

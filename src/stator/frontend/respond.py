"""The two ways a run becomes an HTTP answer, shared by chat and completions.

``StreamChunks`` puts on every streamed chunk what OpenAI's ``stream_options`` and Dynamo's
``nvext.extra_fields`` ask for (usage, worker id, timing) and adds the final usage chunk.
``sse_events`` turns a run's deltas into SSE events (one chunk per delta, an optional final
usage chunk, ``data: [DONE]``); an engine failure mid-stream becomes an OpenAI error event
followed by ``[DONE]``. ``collect`` gathers every delta into per-choice text and logprobs and
builds one JSON body. Both always close the run's streams and record its end in metrics: 200,
the error's status, or 499 when the client went away first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from msgspec import UNSET

from stator.frontend.errors import as_stator_error, error_body
from stator.frontend.generation import RequestRun
from stator.frontend.postprocess import ChoiceDelta, TokenLogprobData
from stator.frontend.sse import DONE_EVENT, JSON_HEADERS, sse_event

Result = tuple[int, list[tuple[bytes, bytes]], bytes]
CLIENT_GONE = 499
_ENCODER = msgspec.json.Encoder()


@dataclass(slots=True)
class CollectedChoice:
    """A finished choice: its text pieces, logprobs and finish reason."""

    pieces: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprobData] = field(default_factory=list)
    finish_reason: str | None = None

    @property
    def text(self) -> str:
        """The choice's whole text."""
        return "".join(self.pieces)


class StreamChunks:
    """The SSE events of a chat or completion run.

    ``request``: a chat or completion request (``stream_options``, ``nvext``). ``envelope(choices)``
    wraps choices in the endpoint's chunk struct (which has ``usage`` and ``nvext`` fields).
    Every chunk gets ``usage: null`` with ``include_usage``, the running usage with
    ``continuous_usage_stats`` (no field otherwise), and the requested ``nvext`` fields.
    """

    def __init__(self, request: Any, run: RequestRun, envelope: Callable[[list[Any]], Any]):
        options = request.stream_options
        self._include_usage = options is not None and bool(options.include_usage)
        self._continuous = options is not None and bool(options.continuous_usage_stats)
        self._blank_usage = None if self._include_usage or self._continuous else UNSET
        self._extra = request.nvext.extra_fields if request.nvext is not None else None
        self._run = run
        self._envelope = envelope

    def events(self, choice: Callable[[ChoiceDelta], Any]) -> AsyncIterator[bytes]:
        """SSE events: one chunk per delta holding ``choice(delta)``, then usage and DONE."""
        usage = self._usage_chunk if self._include_usage else None
        return sse_events(self._run, lambda d: self._chunk(choice(d), d), usage)

    def _chunk(self, choice: Any, delta: ChoiceDelta) -> bytes:
        out = self._envelope([choice])
        out.usage = self._run.usage() if self._continuous else self._blank_usage
        if self._extra:
            final = delta.finish_reason is not None
            out.nvext = self._run.nvext(self._extra, delta.index, final=final) or UNSET
        return _ENCODER.encode(out)

    def _usage_chunk(self) -> bytes:
        out = self._envelope([])
        out.usage = self._run.usage()
        return _ENCODER.encode(out)


async def sse_events(
    run: RequestRun,
    chunk: Callable[[ChoiceDelta], bytes],
    usage_chunk: Callable[[], bytes] | None,
) -> AsyncIterator[bytes]:
    """SSE events: ``chunk(delta)`` per delta, then ``usage_chunk()`` if given, then DONE."""
    status = CLIENT_GONE
    try:
        async for delta in run.deltas():
            yield sse_event(chunk(delta))
        if usage_chunk is not None:
            yield sse_event(usage_chunk())
        status = 200
        yield DONE_EVENT
    except Exception as exc:
        error = as_stator_error(exc)
        status = error.status_code
        yield sse_event(error_body(error))
        yield DONE_EVENT
    finally:
        await run.close()
        run.finish(status)


async def collect(run: RequestRun, build: Callable[[list[CollectedChoice]], bytes]) -> Result:
    """Run to the end and return ``(status, headers, body)``: ``build(choices)`` or an error."""
    status = CLIENT_GONE
    choices = [CollectedChoice() for _ in run.choices]
    try:
        async for delta in run.deltas():
            choice = choices[delta.index]
            choice.pieces.append(delta.text)
            if delta.logprobs:
                choice.logprobs.extend(delta.logprobs)
            if delta.finish_reason is not None:
                choice.finish_reason = delta.finish_reason
        body = build(choices)
        status = 200
        return status, JSON_HEADERS, body
    except Exception as exc:
        error = as_stator_error(exc)
        status = error.status_code
        return status, JSON_HEADERS, error_body(error)
    finally:
        await run.close()
        run.finish(status)

"""The two ways a run becomes an HTTP answer, shared by chat and completions.

``sse_events`` turns a run's deltas into SSE events (one chunk per delta, an optional final
usage chunk, ``data: [DONE]``); an engine failure mid-stream becomes an OpenAI error event
followed by ``[DONE]``. ``collect`` gathers every delta into per-choice text and logprobs and
builds one JSON body. Both always close the run's streams and record its end in metrics: 200,
the error's status, or 499 when the client went away first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from stator.frontend.errors import as_stator_error, error_body
from stator.frontend.generation import RequestRun
from stator.frontend.postprocess import ChoiceDelta, TokenLogprobData
from stator.frontend.sse import DONE_EVENT, JSON_HEADERS, sse_event

Result = tuple[int, list[tuple[bytes, bytes]], bytes]
CLIENT_GONE = 499


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

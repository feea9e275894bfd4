"""One streamed ``/v1/completions`` request, timed on the client into a ``RequestRecord``.

Times are ``time.perf_counter`` ms relative to the run's start. TTFT: request sent → first
chunk carrying text. A request's inter-token gaps are spread evenly over its tokens:
(last content chunk - first content chunk) / (completion_tokens - 1), weighted by
completion_tokens - 1 when pooled (so the pooled mean is total gap time / number of gaps, as in
the offline replay report).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from stator.bench.report import RequestRecord

_DONE = b"[DONE]"
_EMPTY_TEXT = (b'"text":""', b'"text": ""')
_USAGE_OR_ERROR = (b'"usage":{', b'"usage": {', b'"error"')


class _Usage(msgspec.Struct):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt_tokens_details: dict[str, Any] | None = None


class _Chunk(msgspec.Struct):
    """The fields of an SSE chunk the benchmark reads (everything else is skipped)."""

    usage: _Usage | None = None
    error: Any = None


_decode_chunk = msgspec.json.Decoder(_Chunk).decode


@dataclass(slots=True)
class RequestResult:
    """Outcome of one request: its ``record`` (times in ms from the run start) and ``status``:
    ``"ok"``, an HTTP status code, or an error kind (``incomplete``, an httpx error class)."""

    index: int
    status: str
    record: RequestRecord
    error: str | None = None
    itl_ms: float | None = None
    _first_s: float | None = field(default=None, repr=False)
    _last_s: float | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        """True when the request completed with HTTP 200 and a full stream."""
        return self.status == "ok"


async def send_streaming_completion(
    http: aiohttp.ClientSession, index: int, body: dict[str, Any], run_start_s: float
) -> RequestResult:
    """POST ``body`` (``stream: true`` and ``include_usage`` forced) to ``/v1/completions``.

    Never raises for HTTP or transport errors: they come back as the result's ``status``.
    """
    payload = msgspec.json.encode(
        {**body, "stream": True, "stream_options": {"include_usage": True}}
    )
    start = time.perf_counter()
    record = RequestRecord(arrival_ms=(start - run_start_s) * 1e3, input_tokens=0)
    result = RequestResult(index=index, status="ok", record=record)
    headers = {"content-type": "application/json"}
    try:
        async with http.post("/v1/completions", data=payload, headers=headers) as response:
            if response.status != 200:
                result.status = str(response.status)
                result.error = (await response.read()).decode(errors="replace")[:500]
                return result
            done = await _consume(response, result)
    except (aiohttp.ClientError, TimeoutError) as exc:
        result.status, result.error = type(exc).__name__, str(exc)[:500]
        return result
    _finish(result, run_start_s, done)
    return result


async def _consume(response: aiohttp.ClientResponse, result: RequestResult) -> bool:
    async for raw in response.content:
        if not raw.startswith(b"data: "):
            continue
        data = raw[6:].rstrip()
        if data == _DONE:
            return True
        if b'"text"' in data and not any(e in data for e in _EMPTY_TEXT):
            result._last_s = time.perf_counter()
            result._first_s = result._first_s or result._last_s
        wanted = any(marker in data for marker in _USAGE_OR_ERROR)
        if wanted and not _take_chunk(result, data):
            return False
    return False


def _take_chunk(result: RequestResult, data: bytes) -> bool:
    """Read usage or an error from a chunk; False when the stream carried an error."""
    chunk = _decode_chunk(data)
    if chunk.error:
        result.status, result.error = "stream_error", str(chunk.error)[:500]
        return False
    if chunk.usage is not None:
        rec, usage = result.record, chunk.usage
        rec.input_tokens, rec.output_tokens = usage.prompt_tokens, usage.completion_tokens
        rec.cached_tokens = int((usage.prompt_tokens_details or {}).get("cached_tokens") or 0)
    return True


def _finish(result: RequestResult, run_start_s: float, done: bool) -> None:
    if not done:
        if result.status == "ok":
            result.status, result.error = "incomplete", "stream ended without [DONE]"
        return
    rec = result.record
    rec.completed = True
    end = time.perf_counter()
    first, last = result._first_s, result._last_s
    rec.first_token_ms = None if first is None else (first - run_start_s) * 1e3
    rec.last_token_ms = ((end if last is None else last) - run_start_s) * 1e3
    if first is not None and last is not None and rec.output_tokens > 1:
        result.itl_ms = (last - first) * 1e3 / (rec.output_tokens - 1)

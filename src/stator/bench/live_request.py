"""One streamed ``/v1/completions`` request, timed on the client into a ``RequestRecord``.

Times are ``time.perf_counter`` ms relative to the run's start. TTFT: request sent → first
chunk carrying text. A request's inter-token gaps are spread evenly over its tokens:
(last content chunk - first content chunk) / (completion_tokens - 1), weighted by
completion_tokens - 1 when pooled (so the pooled mean is total gap time / number of gaps, as in
the offline replay report).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from stator.bench.report import RequestRecord


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
    http: httpx.AsyncClient, index: int, body: dict[str, Any], run_start_s: float
) -> RequestResult:
    """POST ``body`` (``stream: true`` and ``include_usage`` forced) to ``/v1/completions``.

    Never raises for HTTP or transport errors: they come back as the result's ``status``.
    """
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    record = RequestRecord(arrival_ms=(start - run_start_s) * 1e3, input_tokens=0)
    result = RequestResult(index=index, status="ok", record=record)
    try:
        async with http.stream("POST", "/v1/completions", json=body) as response:
            if response.status_code != 200:
                result.status = str(response.status_code)
                result.error = (await response.aread()).decode(errors="replace")[:500]
                return result
            done = await _consume(response, result)
    except httpx.HTTPError as exc:
        result.status, result.error = type(exc).__name__, str(exc)[:500]
        return result
    _finish(result, run_start_s, done)
    return result


async def _consume(response: httpx.Response, result: RequestResult) -> bool:
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            return True
        chunk = json.loads(data)
        if chunk.get("error"):
            result.status, result.error = "stream_error", str(chunk["error"])[:500]
            return False
        if any(c.get("text") for c in chunk.get("choices") or ()):
            result._last_s = time.perf_counter()
            result._first_s = result._first_s or result._last_s
        if chunk.get("usage"):
            _take_usage(result.record, chunk["usage"])
    return False


def _take_usage(record: RequestRecord, usage: dict[str, Any]) -> None:
    record.input_tokens = int(usage.get("prompt_tokens") or 0)
    record.output_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    record.cached_tokens = int(details.get("cached_tokens") or 0)


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

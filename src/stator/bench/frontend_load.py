"""A lean HTTP/1.1 load generator for OpenAI-compatible servers (benchmarks only).

General clients (httpx) spend hundreds of µs per request, more than the server under test; this
one keeps one keep-alive connection per worker and parses just enough HTTP: the status line,
``Content-Length`` bodies and ``Transfer-Encoding: chunked`` bodies (how SSE streams arrive).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


class HttpError(Exception):
    """A non-200 answer or a malformed response."""


class Connection:
    """One keep-alive HTTP/1.1 connection to ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        """Connect (once)."""
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        """Close the socket."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    async def post(self, path: str, body: bytes) -> bytes:
        """POST ``body`` (JSON) and return the whole response body.

        Raises:
            HttpError: the status is not 200.
        """
        assert self._reader is not None and self._writer is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        status, headers = await self._read_head()
        payload = await self._read_body(headers)
        if status != 200:
            raise HttpError(f"HTTP {status}: {payload[:200]!r}")
        return payload

    async def _read_head(self) -> tuple[int, dict[str, str]]:
        assert self._reader is not None
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        return status, headers

    async def _read_body(self, headers: dict[str, str]) -> bytes:
        assert self._reader is not None
        if "content-length" in headers:
            return await self._reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() != "chunked":
            raise HttpError(f"unsupported response framing: {headers}")
        parts: list[bytes] = []
        while True:
            size = int((await self._reader.readline()).split(b";")[0], 16)
            data = await self._reader.readexactly(size + 2)
            if size == 0:
                return b"".join(parts)
            parts.append(data[:-2])


@dataclass(frozen=True, slots=True)
class LoadResult:
    """Requests completed in the ``elapsed_s`` window, and completion tokens received;
    ``all_requests``/``all_tokens`` count the warm-up too (for CPU per request)."""

    num_requests: int
    num_tokens: int
    elapsed_s: float
    all_requests: int = 0
    all_tokens: int = 0

    @property
    def requests_per_s(self) -> float:
        """Completed requests per second."""
        return self.num_requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def tokens_per_s(self) -> float:
        """Completion tokens per second."""
        return self.num_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


async def run_load(
    url: str, path: str, body: bytes, *, concurrency: int, duration_s: float, warmup_s: float
) -> LoadResult:
    """``concurrency`` connections POST ``body`` back to back; counts what completes in the
    ``duration_s`` window after ``warmup_s``. Tokens are read from each response's ``usage``
    (the last SSE chunk's, for streams requested with ``include_usage``).

    Raises:
        HttpError: a request failed.
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    conns = [Connection(host, port) for _ in range(concurrency)]
    for conn in conns:
        await conn.open()
    start = time.perf_counter()
    window = (start + warmup_s, start + warmup_s + duration_s)
    counts = [0, 0, 0, 0]  # in window: requests, tokens; overall: requests, tokens

    async def worker(conn: Connection) -> None:
        while True:
            t0 = time.perf_counter()
            if t0 >= window[1]:
                return
            payload = await conn.post(path, body)
            tokens = completion_tokens(payload)
            counts[2] += 1
            counts[3] += tokens
            if t0 >= window[0] and time.perf_counter() <= window[1]:
                counts[0] += 1
                counts[1] += tokens

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        for conn in conns:
            await conn.close()
    return LoadResult(counts[0], counts[1], duration_s, counts[2], counts[3])


def completion_tokens(payload: bytes) -> int:
    """``usage.completion_tokens`` of a JSON body, or of the last SSE event that has usage."""
    if not payload.startswith(b"data:"):
        return int(json.loads(payload)["usage"]["completion_tokens"])
    for event in reversed(payload.split(b"\n\n")):
        if event.startswith(b"data: {") and b'"usage":{' in event:
            return int(json.loads(event[6:])["usage"]["completion_tokens"])
    return 0


def process_cpu_s(pids: list[int]) -> float:
    """CPU seconds (user + system) used so far by ``pids`` (Linux ``/proc``; 0 if unreadable)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks
    return total

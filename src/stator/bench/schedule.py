"""Fixed-schedule load: send each request at its arrival time, whatever is still in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from tqdm import tqdm

from stator.bench.live_request import RequestResult, send_streaming_completion


@dataclass(frozen=True, slots=True)
class ScheduledRequest:
    """A request body and its arrival time in seconds from the start of the run."""

    arrival_s: float
    body: dict[str, Any]


async def run_schedule(
    base_url: str,
    requests: Sequence[ScheduledRequest],
    *,
    timeout_s: float = 600.0,
    progress: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
) -> tuple[list[RequestResult], float]:
    """Send every request at ``arrival_s`` after the start; return results (in request order)
    and the wall time of the whole run in seconds. ``transport``: for tests (httpx mock)."""
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    timeout = httpx.Timeout(timeout_s, connect=30.0)
    bar = tqdm(total=len(requests), unit="req", disable=not progress, dynamic_ncols=True)
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, timeout=timeout, transport=transport
    ) as http:
        start = time.perf_counter()
        tasks = [
            asyncio.create_task(_fire(http, i, req, start, bar)) for i, req in enumerate(requests)
        ]
        results = await asyncio.gather(*tasks)
        wall_s = time.perf_counter() - start
    bar.close()
    return list(results), wall_s


async def _fire(
    http: httpx.AsyncClient, index: int, req: ScheduledRequest, start: float, bar: tqdm
) -> RequestResult:
    delay = start + req.arrival_s - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    result = await send_streaming_completion(http, index, req.body, start)
    bar.update(1)
    return result

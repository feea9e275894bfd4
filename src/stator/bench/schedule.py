"""Fixed-schedule load: send each request at its arrival time, whatever is still in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
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
) -> tuple[list[RequestResult], float]:
    """Send every request at ``arrival_s`` after the start; return results (in request order)
    and the wall time of the whole run in seconds.

    The client is aiohttp with unlimited connections: a fixed schedule must not queue on the
    client side, and aiohttp's C line reader keeps the client's CPU small beside the server's.
    """
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=30.0)
    bar = tqdm(total=len(requests), unit="req", disable=not progress, dynamic_ncols=True)
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as http:
        start = time.perf_counter()
        tasks = [
            asyncio.create_task(_fire(http, i, req, start, bar)) for i, req in enumerate(requests)
        ]
        results = await asyncio.gather(*tasks)
        wall_s = time.perf_counter() - start
    bar.close()
    return list(results), wall_s


async def _fire(
    http: aiohttp.ClientSession, index: int, req: ScheduledRequest, start: float, bar: tqdm
) -> RequestResult:
    delay = start + req.arrival_s - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    result = await send_streaming_completion(http, index, req.body, start)
    bar.update(1)
    return result

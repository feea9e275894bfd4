"""The live replay client against a scripted SSE server (aiohttp on port 0, loopback)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from stator.bench.live_request import send_streaming_completion
from stator.bench.replay import build_report
from stator.bench.replay_config import config_from_args, parse
from stator.bench.schedule import ScheduledRequest, run_schedule


def _events(body: dict, num_tokens: int, cached: int) -> list[bytes]:
    chunks = [
        {"choices": [{"index": 0, "text": f"t{i}"}], "usage": None} for i in range(num_tokens)
    ]
    chunks.insert(0, {"choices": [{"index": 0, "text": ""}], "usage": None})
    usage = {
        "prompt_tokens": len(body["prompt"]), "completion_tokens": num_tokens,
        "total_tokens": len(body["prompt"]) + num_tokens,
        "prompt_tokens_details": {"cached_tokens": cached},
    }  # fmt: skip
    chunks.append({"choices": [], "usage": usage})
    return [f"data: {json.dumps(c)}\n\n".encode() for c in chunks]


async def _completions(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    if body.get("model") == "busy":
        return web.json_response({"error": {"message": "busy"}}, status=503)
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    for event in _events(body, num_tokens=5, cached=10):
        await response.write(event)
    if body.get("model") != "truncated":
        await response.write(b"data: [DONE]\n\n")
    return response


@pytest.fixture
async def server_url() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/completions", _completions)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def test_stream_is_timed_and_usage_read(server_url: str) -> None:
    async with aiohttp.ClientSession(server_url) as http:
        res = await send_streaming_completion(http, 0, {"model": "m", "prompt": [1] * 20}, 0.0)
    assert res.ok, res.error
    rec = res.record
    assert (rec.input_tokens, rec.output_tokens, rec.cached_tokens) == (20, 5, 10)
    assert rec.completed and rec.ttft_ms is not None and rec.e2e_ms is not None
    assert rec.e2e_ms >= rec.ttft_ms >= 0
    assert res.itl_ms is not None and res.itl_ms >= 0


async def test_errors_are_reported_not_raised(server_url: str) -> None:
    async with aiohttp.ClientSession(server_url) as http:
        busy = await send_streaming_completion(http, 0, {"model": "busy", "prompt": [1]}, 0.0)
        cut = await send_streaming_completion(http, 1, {"model": "truncated", "prompt": [1]}, 0.0)
    assert busy.status == "503" and "busy" in (busy.error or "")
    assert cut.status == "incomplete" and not cut.record.completed
    async with aiohttp.ClientSession("http://127.0.0.1:9") as http:
        refused = await send_streaming_completion(http, 2, {"model": "m", "prompt": [1]}, 0.0)
    assert not refused.ok and refused.status.startswith("Client")


async def test_schedule_follows_arrivals_and_report_sums_up(server_url: str) -> None:
    reqs = [ScheduledRequest(0.02 * i, {"model": "m", "prompt": [1] * 20}) for i in range(5)]
    reqs.append(ScheduledRequest(0.1, {"model": "busy", "prompt": [1]}))
    results, wall = await run_schedule(server_url, reqs, progress=False)
    assert wall >= 0.1
    starts = [r.record.arrival_ms for r in results[:5]]
    assert starts == sorted(starts) and starts[-1] >= 80.0
    args, parser = parse(["--synthetic"])
    s = build_report(config_from_args(args, parser), "m", results, wall)["summary"]
    assert s["num_requests"] == 6 and s["completed_requests"] == 5
    assert s["prefix_cache_reused_ratio"] == pytest.approx(0.5)
    assert s["errors_by_status"] == {"503": 1}
    assert s["total_output_tokens"] == 25

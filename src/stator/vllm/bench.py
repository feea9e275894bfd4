"""``python -m stator.vllm.bench URL --model NAME``: output tokens/s of an OpenAI-compatible server.

Runs ``--num-requests`` streaming ``/v1/completions`` requests, ``--concurrency`` at a time, each
with a prompt of about ``--isl`` tokens (distinct per request, so the prefix cache does not help)
and exactly ``--osl`` output tokens (``ignore_eos``), and prints one JSON object: output
tokens/s, requests/s, TTFT and ITL percentiles (ms). Used to compare a stator frontend + vLLM
worker with vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``) on the
same model. Needs only ``httpx``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx

WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
]


@dataclass(slots=True)
class RequestTiming:
    """One request: TTFT and inter-token gaps (s), output tokens (from ``usage``)."""

    ttft_s: float = 0.0
    gaps_s: list[float] = field(default_factory=list)
    num_output_tokens: int = 0


def prompt_for(index: int, isl: int) -> str:
    """A prompt of roughly ``isl`` tokens that differs from the others from its first word."""
    words = [str(index)] + [WORDS[(index + i) % len(WORDS)] for i in range(isl - 1)]
    return " ".join(words)


async def one_request(
    client: httpx.AsyncClient, model: str, prompt: str, osl: int
) -> RequestTiming:
    """Stream one completion; raise ``httpx.HTTPStatusError`` on an HTTP error."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": osl,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    timing = RequestTiming()
    start = last = time.perf_counter()
    async with client.stream("POST", "/v1/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            now = time.perf_counter()
            if chunk.get("choices") and chunk["choices"][0].get("text"):
                if timing.ttft_s == 0.0:
                    timing.ttft_s = now - start
                else:
                    timing.gaps_s.append(now - last)
                last = now
            if chunk.get("usage"):
                timing.num_output_tokens = chunk["usage"]["completion_tokens"]
    return timing


async def run(args: argparse.Namespace) -> dict[str, float | int | str]:
    """Run the load; return the summary."""
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=args.url, timeout=600, limits=limits) as client:
        await one_request(client, args.model, prompt_for(-1, args.isl), 2)  # warm-up
        gate = asyncio.Semaphore(args.concurrency)

        async def gated(i: int) -> RequestTiming:
            async with gate:
                return await one_request(client, args.model, prompt_for(i, args.isl), args.osl)

        start = time.perf_counter()
        timings = await asyncio.gather(*(gated(i) for i in range(args.num_requests)))
        wall_s = time.perf_counter() - start
    return summarize(args, timings, wall_s)


def summarize(
    args: argparse.Namespace, timings: Sequence[RequestTiming], wall_s: float
) -> dict[str, float | int | str]:
    """Throughput (tokens/s over the wall time) and latency percentiles (ms)."""
    tokens = sum(t.num_output_tokens for t in timings)
    ttfts = sorted(t.ttft_s * 1e3 for t in timings)
    gaps = sorted(g * 1e3 for t in timings for g in t.gaps_s) or [0.0]
    return {
        "url": args.url,
        "model": args.model,
        "num_requests": len(timings),
        "concurrency": args.concurrency,
        "isl_words": args.isl,
        "osl": args.osl,
        "wall_s": round(wall_s, 3),
        "output_tokens": tokens,
        "output_tokens_per_s": round(tokens / wall_s, 1),
        "requests_per_s": round(len(timings) / wall_s, 2),
        "ttft_p50_ms": round(statistics.median(ttfts), 1),
        "ttft_p99_ms": round(ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))], 1),
        "itl_p50_ms": round(statistics.median(gaps), 2),
        "itl_p99_ms": round(gaps[min(len(gaps) - 1, int(0.99 * len(gaps)))], 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Parse flags, run, print the JSON summary."""
    p = argparse.ArgumentParser(prog="python -m stator.vllm.bench", description=__doc__)
    p.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8000")
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument("--num-requests", type=int, default=32)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--isl", type=int, default=128, help="prompt length in words (~tokens)")
    p.add_argument("--osl", type=int, default=64, help="output tokens per request")
    print(json.dumps(asyncio.run(run(p.parse_args(argv)))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

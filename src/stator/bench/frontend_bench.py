"""``stator bench frontend``: the frontend's own cost, with an engine that answers instantly.

Without ``--url`` it starts ``python -m stator.frontend`` as a subprocess over ``file``
discovery in a temporary directory, and serves an instant engine in this process through the
runtime: each request gets ``max_tokens`` chunks of one token, sent back to back
(``--engine mocker``: one ``python -m stator.mocker`` worker at ``--speedup-ratio`` instead, the
setup Dynamo's numbers are taken with). With ``--url``
it measures any OpenAI-compatible server instead (e.g. Dynamo's frontend with its mocker at a
very high ``--speedup-ratio``), for side-by-side numbers.

Measured with a lean keep-alive HTTP/1.1 client (``stator.bench.frontend_load``), chat
completions of a one-line prompt:

- ``rps_c1`` / ``rps_c64``: non-streamed 1-token requests per second at concurrency 1 and 64;
- ``stream_tokens_per_s``: streamed completion tokens per second, ``--stream-tokens`` tokens per
  request (``ignore_eos``), ``--stream-concurrency`` streams at once;
- ``server_cpu_ms_per_*``: CPU (user + system, from ``/proc``) the server processes spent per
  request / streamed token: the frontend subprocess, or ``--server-pids`` with ``--url``. On a
  shared machine this is steadier than throughput.

``--json`` prints one JSON object with those keys (plus the settings used).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import uvloop

from stator.bench.frontend_load import Connection, LoadResult, process_cpu_s, run_load
from stator.frontend.tokenizer import Tokenizer
from stator.protocols.engine import LLMEngineOutput, PreprocessedRequest
from stator.protocols.model_card import ModelCard
from stator.runtime.config import RuntimeConfig
from stator.runtime.request_plane.base import RequestContext
from stator.runtime.runtime import DistributedRuntime
from stator.testing.tiny_model import default_cache_dir, ensure_tiny_model

MODEL_NAME = "bench-tiny"
CHAT_PATH = "/v1/chat/completions"


def build_parser() -> argparse.ArgumentParser:
    """Flags of ``stator bench frontend``."""
    p = argparse.ArgumentParser(prog="stator bench frontend", description=__doc__.split("\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--url", default="", help="measure this server instead of starting stator's")
    p.add_argument("--model", default=MODEL_NAME, help="model name to request (with --url)")
    p.add_argument("--model-dir", default="", help="tokenizer directory (default: tiny model)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds measured per scenario")
    p.add_argument("--warmup", type=float, default=0.5, help="seconds before measuring")
    p.add_argument("--stream-tokens", type=int, default=1000, help="tokens per streamed request")
    p.add_argument("--stream-concurrency", type=int, default=8, help="concurrent streams")
    p.add_argument("--router-mode", default="round-robin", help="passed to the frontend")
    p.add_argument(
        "--server-pids", default="", help="with --url: comma-separated PIDs whose CPU to count"
    )
    p.add_argument(
        "--engine",
        choices=["instant", "mocker"],
        default="instant",
        help="instant: in-process handler; mocker: python -m stator.mocker at --speedup-ratio",
    )
    p.add_argument(
        "--speedup-ratio", type=float, default=100000.0, help="mocker speedup (--engine mocker)"
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; returns the exit status."""
    args = build_parser().parse_args(argv)
    result = uvloop.run(run(args))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>24}: {value}")
    return 0


async def run(args: argparse.Namespace) -> dict[str, object]:
    """Start what is needed, measure the three scenarios, stop everything."""
    if args.url:
        pids = [int(p) for p in args.server_pids.split(",") if p.strip()]
        return await measure(args.url, args.model, args, pids)
    model_dir = Path(args.model_dir) if args.model_dir else ensure_tiny_model(default_cache_dir())
    engine = instant_engine if args.engine == "instant" else mocker_engine
    with tempfile.TemporaryDirectory(prefix="stator-bench-frontend-") as tmp:
        async with (
            engine(Path(tmp), model_dir, args),
            frontend_process(Path(tmp), args) as (url, pid),
        ):
            await wait_for_model(url, MODEL_NAME)
            result = await measure(url, MODEL_NAME, args, [pid])
            result["engine"] = args.engine
            return result


async def measure(
    url: str, model: str, args: argparse.Namespace, pids: list[int]
) -> dict[str, object]:
    """The three numbers (and the settings) for the server at ``url``; with ``pids``, also
    the CPU those processes spent per request and per streamed token (ms)."""
    messages = [{"role": "user", "content": "Say something."}]
    one = {"model": model, "messages": messages, "max_tokens": 1}
    stream = {
        **one,
        "max_tokens": args.stream_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    cpu: dict[str, float | None] = {}
    c1, cpu["c1"] = await _load(url, one, 1, args, pids)
    c64, cpu["c64"] = await _load(url, one, 64, args, pids)
    streamed, cpu["stream"] = await _load(url, stream, args.stream_concurrency, args, pids)
    return {
        "rps_c1": round(c1.requests_per_s, 1),
        "rps_c64": round(c64.requests_per_s, 1),
        "stream_tokens_per_s": round(streamed.tokens_per_s, 1),
        "server_cpu_ms_per_request_c1": _per(cpu["c1"], c1.all_requests),
        "server_cpu_ms_per_request_c64": _per(cpu["c64"], c64.all_requests),
        "server_cpu_ms_per_streamed_token": _per(cpu["stream"], streamed.all_tokens),
        "server_pids": pids,
        "url": url,
        "model": model,
        "duration_s": args.duration,
        "stream_tokens": args.stream_tokens,
        "stream_concurrency": args.stream_concurrency,
    }


async def _load(
    url: str, body: dict[str, object], c: int, args: argparse.Namespace, pids: list[int]
) -> tuple[LoadResult, float | None]:
    """One scenario; also the server CPU seconds it cost (None without pids)."""
    cpu_before = process_cpu_s(pids)
    result = await run_load(
        url,
        CHAT_PATH,
        json.dumps(body).encode(),
        concurrency=c,
        duration_s=args.duration,
        warmup_s=args.warmup,
    )
    return result, (process_cpu_s(pids) - cpu_before if pids else None)


def _per(cpu_s: float | None, count: int) -> float | None:
    """Milliseconds of CPU per unit, or None."""
    return None if cpu_s is None or count == 0 else round(cpu_s * 1000.0 / count, 4)


@contextlib.asynccontextmanager
async def mocker_engine(
    tmp: Path, model_dir: Path, args: argparse.Namespace
) -> AsyncIterator[None]:
    """One ``python -m stator.mocker`` worker for ``MODEL_NAME`` at ``--speedup-ratio``."""
    log = (tmp / "mocker.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stator.mocker", "--model-path", str(model_dir),
        "--model-name", MODEL_NAME, "--num-workers", "1", "--block-size", "64",
        "--speedup-ratio", str(args.speedup_ratio), "--discovery-backend", "file",
        "--discovery-dir", str(tmp / "discovery"),
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        yield
    finally:
        await _stop(proc)
        log.close()


async def _stop(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


@contextlib.asynccontextmanager
async def instant_engine(
    tmp: Path, model_dir: Path, args: argparse.Namespace | None = None
) -> AsyncIterator[None]:
    """Serve the instant engine for ``MODEL_NAME`` over file discovery under ``tmp``."""
    config = RuntimeConfig(discovery_backend="file", discovery_dir=str(tmp / "discovery"))
    runtime = await DistributedRuntime.create(config)
    token = Tokenizer.from_dir(model_dir).encode(" hello", add_special_tokens=False)[0]
    mid = LLMEngineOutput(token_ids=[token])
    last = LLMEngineOutput(token_ids=[token], finish_reason="length")

    async def handler(
        request: PreprocessedRequest, ctx: RequestContext
    ) -> AsyncIterator[LLMEngineOutput]:
        for _ in range((request.stop_conditions.max_tokens or 1) - 1):
            yield mid
        yield last

    card = ModelCard(
        name=MODEL_NAME, tokenizer_path=str(model_dir), kv_cache_block_size=16, context_length=8192
    )
    await runtime.endpoint(f"dyn://dynamo.{MODEL_NAME}.generate").serve(
        handler, request_type=PreprocessedRequest, model_card=card
    )
    try:
        yield
    finally:
        await runtime.shutdown(drain_timeout_s=1.0)


@contextlib.asynccontextmanager
async def frontend_process(tmp: Path, args: argparse.Namespace) -> AsyncIterator[tuple[str, int]]:
    """``python -m stator.frontend`` on an ephemeral port; yields its URL and PID."""
    log = (tmp / "frontend.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "stator.frontend",
        "--http-host",
        "127.0.0.1",
        "--http-port",
        "0",
        "--discovery-backend",
        "file",
        "--discovery-dir",
        str(tmp / "discovery"),
        "--router-mode",
        args.router_mode,
        "--log-level",
        "warning",
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
        env=os.environ.copy(),
    )
    try:
        yield await _listening_url(proc, tmp / "frontend.log"), proc.pid
    finally:
        await _stop(proc)
        log.close()


async def _listening_url(proc: asyncio.subprocess.Process, log: Path) -> str:
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode()
        if line.startswith("stator frontend listening on"):
            return line.strip().rsplit(" ", 1)[-1]
        if not line:
            break
    raise RuntimeError(f"the frontend did not start:\n{log.read_text()}")


async def wait_for_model(url: str, model: str, timeout_s: float = 30.0) -> None:
    """Poll ``/v1/chat/completions`` until ``model`` answers (it appears via discovery)."""
    host_port = url.split("//", 1)[1]
    host, port = host_port.rsplit(":", 1)
    body = json.dumps(
        {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    ).encode()
    deadline = time.monotonic() + timeout_s
    while True:
        conn = Connection(host, int(port))
        try:
            await conn.open()
            await conn.post(CHAT_PATH, body)
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)
        finally:
            await conn.close()

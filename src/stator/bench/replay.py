"""``stator bench replay``: replay a trace against any OpenAI-compatible URL (stator, Dynamo,
vLLM) on a fixed schedule, and report what a user sees.

Each trace request becomes a streamed ``/v1/completions`` call with token-id prompt
(equal hash ids → equal token blocks), ``max_tokens = output_length``, ``ignore_eos: true`` and
``stream_options.include_usage``; it is sent at its (sped-up) timestamp whatever is in flight.
The summary uses the keys of ``stator replay`` (``bench/report.py``), plus ``errors_by_status``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from stator.bench.compare import compare_table, load_summary
from stator.bench.live_request import RequestResult
from stator.bench.replay_config import LiveReplayConfig, config_from_args, parse
from stator.bench.report import LatencySketch, summarize
from stator.bench.schedule import ScheduledRequest, run_schedule
from stator.bench.synthetic import scale_trace, synthetic_trace
from stator.bench.trace import TraceRequest, load_mooncake_trace, synthesize_token_ids
from stator.errors import ConfigError


def build_requests(cfg: LiveReplayConfig, model: str) -> list[ScheduledRequest]:
    """The scheduled request bodies of the configured workload (trace or synthetic)."""
    trace = _workload(cfg)
    t0 = trace[0].timestamp_ms if trace else 0.0
    return [ScheduledRequest((r.timestamp_ms - t0) / 1000.0, _body(r, model, cfg)) for r in trace]


def _workload(cfg: LiveReplayConfig) -> list[TraceRequest]:
    if cfg.synthetic is not None:
        trace = synthetic_trace(cfg.synthetic, cfg.trace_block_size)
        trace = [
            TraceRequest(r.timestamp_ms / cfg.arrival_speedup_ratio, r.input_length,
                         r.output_length, r.hash_ids)
            for r in trace
        ]  # fmt: skip
    else:
        assert cfg.trace is not None
        trace = load_mooncake_trace(
            cfg.trace,
            trace_block_size=cfg.trace_block_size,
            max_requests=cfg.max_requests,
            arrival_speedup_ratio=cfg.arrival_speedup_ratio,
        )
    return scale_trace(
        trace, length_factor=cfg.length_factor, duplication_factor=cfg.duplication_factor
    )


def _body(r: TraceRequest, model: str, cfg: LiveReplayConfig) -> dict[str, Any]:
    tokens = synthesize_token_ids(
        r.hash_ids, r.input_length, cfg.trace_block_size, vocab_size=cfg.vocab_size, seed=cfg.seed
    )
    return {
        "model": model,
        "prompt": tokens.tolist(),
        "max_tokens": max(1, r.output_length),
        "ignore_eos": True,
        "temperature": 0.0,
    }


def build_report(
    cfg: LiveReplayConfig, model: str, results: list[RequestResult], wall_s: float
) -> dict[str, Any]:
    """The JSON report: ``summary`` (keys of ``stator replay`` + ``errors_by_status``) and
    ``config``. ``duration_ms`` is the measured span from the first arrival to the last token."""
    itl = LatencySketch()
    for res in results:
        if res.itl_ms is not None:
            itl.add(res.itl_ms, weight=res.record.output_tokens - 1)
    records = [r.record for r in results]
    ends = [r.last_token_ms for r in records if r.completed and r.last_token_ms is not None]
    duration_ms = max(ends) if ends else wall_s * 1e3
    summary: dict[str, Any] = summarize(
        records, itl, duration_ms=duration_ms, wall_time_ms=wall_s * 1e3
    )
    summary["errors_by_status"] = dict(Counter(r.status for r in results if not r.ok))
    config = {
        "url": cfg.url, "model": model, "trace": cfg.trace,
        "synthetic": cfg.synthetic is not None, "trace_block_size": cfg.trace_block_size,
        "max_requests": cfg.max_requests, "arrival_speedup_ratio": cfg.arrival_speedup_ratio,
        "trace_length_factor": cfg.length_factor,
        "trace_duplication_factor": cfg.duplication_factor,
    }  # fmt: skip
    return {"summary": summary, "config": config}


def print_summary(summary: dict[str, Any]) -> None:
    """A readable table of the main figures."""
    keys = (
        "num_requests", "completed_requests", "mean_ttft_ms", "median_ttft_ms", "p90_ttft_ms",
        "p99_ttft_ms", "mean_itl_ms", "p90_itl_ms", "p99_itl_ms", "mean_e2e_latency_ms",
        "median_e2e_latency_ms", "p90_e2e_latency_ms", "p99_e2e_latency_ms",
        "request_throughput_rps", "output_throughput_tok_s", "prefix_cache_reused_ratio",
        "duration_ms", "wall_time_ms",
    )  # fmt: skip
    for key in keys:
        value = summary.get(key)
        text = f"{value:,.3f}" if isinstance(value, float) else str(value)
        print(f"  {key:<28} {text:>14}")
    print(f"  {'errors_by_status':<28} {json.dumps(summary.get('errors_by_status', {})):>14}")


async def _resolve_model(cfg: LiveReplayConfig) -> str:
    if cfg.model:
        return cfg.model
    try:
        async with httpx.AsyncClient(base_url=cfg.url, timeout=10.0) as http:
            data = (await http.get("/v1/models")).json().get("data") or []
    except (httpx.HTTPError, ValueError) as exc:
        raise ConfigError("--url", f"cannot list models at {cfg.url}: {exc}") from None
    if not data:
        raise ConfigError("--model", f"{cfg.url}/v1/models lists no model; pass --model")
    return str(data[0]["id"])


async def run(cfg: LiveReplayConfig) -> dict[str, Any]:
    """Replay the workload and return the report."""
    model = await _resolve_model(cfg)
    requests = build_requests(cfg, model)
    print(f"replaying {len(requests)} requests against {cfg.url} (model {model})")
    results, wall_s = await run_schedule(
        cfg.url, requests, timeout_s=cfg.timeout_s, progress=cfg.progress
    )
    report = build_report(cfg, model, results, wall_s)
    if cfg.plot:
        from stator.bench.plot import plot_latencies

        ttft = [t for t in (r.record.ttft_ms for r in results if r.ok) if t is not None]
        itl = [r.itl_ms for r in results if r.itl_ms is not None]
        plot_latencies(ttft, itl, cfg.plot, f"{model} @ {cfg.url}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``stator bench replay``. Exit 0 when every request succeeded, 1 when
    some failed (the report is still written), 2 for bad flags."""
    args, parser = parse(sys.argv[1:] if argv is None else argv)
    try:
        if args.compare:
            a, b = (load_summary(p) for p in args.compare)
            print(compare_table(a, b, (Path(args.compare[0]).stem, Path(args.compare[1]).stem)))
            return 0
        cfg = config_from_args(args, parser)
        report = asyncio.run(run(cfg))
    except ConfigError as exc:
        print(f"stator bench replay: error: {exc}", file=sys.stderr)
        return 2
    print_summary(report["summary"])
    if cfg.report_json:
        Path(cfg.report_json).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.report_json).write_text(json.dumps(report, indent=2))
    return 0 if not report["summary"]["errors_by_status"] else 1


if __name__ == "__main__":
    sys.exit(main())

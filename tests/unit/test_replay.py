"""Offline replay on a virtual clock: fidelity against Dynamo 1.6.1's replay, routing, CLI, report.

Reference numbers come from ``dynamo.replay.run_trace_replay([trace], num_workers=1,
router_mode="round_robin", trace_block_size=512, capture_per_request=True)`` with Dynamo 1.6.1's
default engine settings, on the small traces written below.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from stator.bench.report import LatencySketch, RequestRecord, summarize
from stator.bench.trace import TraceRequest, load_mooncake_trace
from stator.mocker.config import MockerConfig
from stator.mocker.replay import ReplayOptions, ReplayResult, run_replay
from stator.mocker.replay_cli import main
from stator.router.factory import make_router_core

SUMMARY_KEYS = {
    "num_requests",
    "completed_requests",
    "mean_ttft_ms",
    "median_ttft_ms",
    "p99_ttft_ms",
    "mean_itl_ms",
    "mean_e2e_latency_ms",
    "p99_e2e_latency_ms",
    "prefix_cache_reused_ratio",
    "duration_ms",
    "wall_time_ms",
}


def _row(ts: float, isl: int, osl: int, ids: list[int]) -> dict[str, object]:
    return {"timestamp": ts, "input_length": isl, "output_length": osl, "hash_ids": ids}


def _replay(
    tmp_path: Path, rows: list[dict[str, object]], workers: int = 1, mode: str = "round-robin",
    fuse: bool = True, config: MockerConfig | None = None,
) -> ReplayResult:  # fmt: skip
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = config or MockerConfig()
    router = make_router_core(mode, config.block_size, 0)
    options = ReplayOptions(
        num_workers=workers, record_kv_events=mode == "kv", fuse_decode_steps=fuse
    )
    result, _ = run_replay(load_mooncake_trace(path), config, router, options)
    return result


def test_decode_interleaved_with_prefill_matches_dynamo(tmp_path: Path) -> None:
    rows = [_row(0, 1024, 100, [1, 2]), _row(100, 4096, 5, list(range(10, 18)))]
    summary = _replay(tmp_path, rows).summary(0.0)
    assert summary["mean_ttft_ms"] == pytest.approx(63.023721, abs=1e-4)
    assert summary["mean_itl_ms"] == pytest.approx(6.644156417475728, abs=1e-6)
    assert summary["mean_e2e_latency_ms"] == pytest.approx(405.1977765, abs=1e-4)
    assert summary["duration_ms"] == pytest.approx(692.822703, abs=1e-4)


def test_same_prefix_in_one_step_reuses_blocks_like_dynamo(tmp_path: Path) -> None:
    ids = list(range(10, 18))
    summary = _replay(tmp_path, [_row(0, 4096, 2, ids), _row(0, 4096, 2, ids)]).summary(0.0)
    assert summary["prefix_cache_reused_ratio"] == pytest.approx(0.4921875)
    assert summary["mean_ttft_ms"] == pytest.approx(86.950169, abs=1e-4)


def test_prefix_computed_by_an_earlier_chunk_is_reused_like_dynamo(tmp_path: Path) -> None:
    rows = [_row(0, 20480, 2, list(range(100, 140))), _row(10, 5120, 2, list(range(100, 110)))]
    result = _replay(tmp_path, rows)
    ttfts = [r.ttft_ms for r in result.records]
    assert ttfts == [pytest.approx(425.224, abs=1e-3), pytest.approx(415.224, abs=1e-3)]
    assert result.summary(0.0)["prefix_cache_reused_ratio"] == pytest.approx(0.1975)


def test_preemption_and_resumption_match_dynamo(tmp_path: Path) -> None:
    # 512 blocks of 128 tokens: two 30000-token prompts decoding 4000 tokens each run out of
    # blocks; the newer one is preempted, waits, and resumes on its surviving cached prefix.
    rows = [_row(0, 30000, 4000, list(range(60))), _row(0, 30000, 4000, list(range(100, 160)))]
    config = MockerConfig(block_size=128, num_gpu_blocks=512)
    summary = _replay(tmp_path, rows, config=config).summary(0.0)
    assert summary["mean_ttft_ms"] == pytest.approx(1010.2877575, abs=1e-4)
    assert summary["mean_itl_ms"] == pytest.approx(35.75699295786443, abs=1e-6)
    assert summary["mean_e2e_latency_ms"] == pytest.approx(144002.502596, abs=1e-3)
    assert summary["prefix_cache_reused_ratio"] == pytest.approx(0.5248)
    assert summary["duration_ms"] == pytest.approx(160410.612315, abs=1e-3)


def test_round_robin_spreads_requests_in_arrival_order(tmp_path: Path) -> None:
    rows = [_row(i * 10, 600, 3, [i, i + 100]) for i in range(5)]
    result = _replay(tmp_path, rows, workers=2)
    assert result.worker_of == [0, 1, 0, 1, 0]
    assert all(r.completed and r.output_tokens == 3 for r in result.records)


def test_fusing_decode_steps_changes_nothing(tmp_path: Path) -> None:
    rows = [_row(i * 37.5, 500 + 40 * i, 40 + i, [i % 3, 50 + i]) for i in range(12)]
    fused = _replay(tmp_path, rows, workers=2, fuse=True)
    single = _replay(tmp_path, rows, workers=2, fuse=False)
    assert fused.num_steps == single.num_steps
    for key, value in single.summary(0.0).items():
        assert fused.summary(0.0)[key] == pytest.approx(value), key


def test_kv_mode_runs_with_kv_events(tmp_path: Path) -> None:
    rows = [_row(i * 200, 1024, 4, [7, 8]) for i in range(6)]
    result = _replay(tmp_path, rows, workers=3, mode="kv")
    assert all(r.completed for r in result.records)
    assert result.summary(0.0)["prefix_cache_reused_ratio"] > 0


def test_cli_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text("".join(json.dumps(_row(i * 50, 700, 4, [i, 99])) + "\n" for i in range(6)))
    out = tmp_path / "report.json"
    code = main([
        "--trace", str(trace), "--num-workers", "2", "--router-mode", "round-robin",
        "--trace-block-size", "512", "--max-requests", "4", "--report-json", str(out),
        "--block-size", "32",
    ])  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["summary"].keys() >= SUMMARY_KEYS
    assert report["summary"]["num_requests"] == report["summary"]["completed_requests"] == 4
    assert report["config"]["engine"]["block_size"] == 32
    assert json.loads(capsys.readouterr().out)["num_requests"] == 4


def test_cli_rejects_a_bad_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = tmp_path / "bad.jsonl"
    trace.write_text("{}\n")
    assert main(["--trace", str(trace)]) == 2
    assert "--trace" in capsys.readouterr().err


def test_latency_sketch_mean_is_exact_and_quantiles_close() -> None:
    sketch = LatencySketch()
    values = [0.5 + i * 0.37 for i in range(1000)]
    for v in values:
        sketch.add(v)
    sketch.add(1000.0, weight=0)
    assert sketch.mean == pytest.approx(sum(values) / len(values))
    exact_p90 = sorted(values)[899]
    assert sketch.quantile(90) == pytest.approx(exact_p90, rel=2e-3)
    assert math.isnan(LatencySketch().mean)


def test_summarize_covers_completed_requests() -> None:
    records = [
        RequestRecord(0.0, 100, 10, 50, first_token_ms=20.0, last_token_ms=110.0, completed=True),
        RequestRecord(5.0, 300, 0, 0, completed=False),
    ]
    itl = LatencySketch()
    itl.add(10.0, 9)
    summary = summarize(records, itl, duration_ms=2000.0, wall_time_ms=3.0)
    assert summary.keys() >= SUMMARY_KEYS
    assert (summary["num_requests"], summary["completed_requests"]) == (2, 1)
    assert summary["mean_ttft_ms"] == 20.0 and summary["mean_e2e_latency_ms"] == 110.0
    assert summary["prefix_cache_reused_ratio"] == 0.5
    assert summary["request_throughput_rps"] == 0.5


def test_trace_request_is_hashable_value() -> None:
    assert TraceRequest(1.0, 2, 3, (4,)) == TraceRequest(1.0, 2, 3, (4,))

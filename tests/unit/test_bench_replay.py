import json
from pathlib import Path

import pytest

from stator.bench.compare import compare_table, load_summary
from stator.bench.replay import build_requests
from stator.bench.replay_config import config_from_args, parse
from stator.bench.synthetic import SyntheticSpec, scale_trace, synthetic_trace
from stator.bench.trace import TraceRequest
from stator.errors import ConfigError


def test_synthetic_trace_shares_group_prefixes() -> None:
    spec = SyntheticSpec(
        num_requests=50,
        request_rate=100.0,
        isl=256,
        osl=8,
        num_prefix_groups=2,
        prefix_ratio=0.5,
        seed=1,
    )
    trace = synthetic_trace(spec, block_size=32)
    assert len(trace) == 50
    assert all(len(r.hash_ids) == 8 for r in trace)
    prefixes = {r.hash_ids[:4] for r in trace}
    assert len(prefixes) == 2
    suffixes = [r.hash_ids[4:] for r in trace]
    assert len(set(suffixes)) == 50
    times = [r.timestamp_ms for r in trace]
    assert times == sorted(times) and times[0] == 0.0
    assert 200 < times[-1] < 1000  # 49 gaps of mean 10 ms


def test_synthetic_spec_validation_names_flag() -> None:
    with pytest.raises(ConfigError, match="--synthetic-prefix-ratio"):
        synthetic_trace(SyntheticSpec(prefix_ratio=1.5), 64)


def test_scale_trace_length_and_duplication() -> None:
    trace = [TraceRequest(0.0, 100, 5, (0, 1)), TraceRequest(10.0, 60, 5, (0, 2))]
    longer = scale_trace(trace, length_factor=2)
    assert longer[0].hash_ids == (0, 1, 2, 3) and longer[0].input_length == 200
    assert longer[1].hash_ids[:2] == longer[0].hash_ids[:2]
    dup = scale_trace(trace, duplication_factor=2)
    assert len(dup) == 4
    assert [r.timestamp_ms for r in dup] == [0.0, 0.0, 10.0, 10.0]
    assert set(dup[0].hash_ids).isdisjoint(dup[1].hash_ids)
    with pytest.raises(ConfigError, match="--trace-duplication-factor"):
        scale_trace(trace, duplication_factor=0)


def test_build_requests_from_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    rows = [
        {"timestamp": 0, "input_length": 1000, "output_length": 7, "hash_ids": [1, 2]},
        {"timestamp": 2000, "input_length": 600, "output_length": 3, "hash_ids": [1, 3]},
    ]
    trace.write_text("\n".join(json.dumps(r) for r in rows))
    args, parser = parse(
        [
            "--trace",
            str(trace),
            "--trace-block-size",
            "64",
            "--arrival-speedup-ratio",
            "2",
            "--model",
            "m",
        ]
    )
    reqs = build_requests(config_from_args(args, parser), "m")
    assert [r.arrival_s for r in reqs] == [0.0, 1.0]
    assert len(reqs[0].body["prompt"]) == 125  # ceil(1000 * 64 / 512)
    assert reqs[0].body["prompt"][:64] == reqs[1].body["prompt"][:64]
    assert reqs[0].body["prompt"][64:128] != reqs[1].body["prompt"][64:128]
    assert reqs[0].body["max_tokens"] == 7 and reqs[0].body["ignore_eos"] is True


def test_trace_and_synthetic_are_exclusive() -> None:
    args, parser = parse([])
    with pytest.raises(SystemExit):
        config_from_args(args, parser)


def test_compare_table(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"summary": {"mean_ttft_ms": 100.0, "num_requests": 10}}))
    b.write_text(json.dumps({"summary": {"mean_ttft_ms": 50.0, "num_requests": 10}}))
    table = compare_table(load_summary(str(a)), load_summary(str(b)), ("a", "b"))
    assert "mean_ttft_ms" in table and "0.500" in table
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ConfigError, match="--compare"):
        load_summary(str(tmp_path / "bad.json"))

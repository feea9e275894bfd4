"""Mooncake trace loading, scaling and token synthesis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stator.bench.trace import load_mooncake_trace, synthesize_token_ids
from stator.errors import ConfigError


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS: list[dict[str, object]] = [
    {"timestamp": 30, "input_length": 1000, "output_length": 5, "hash_ids": [1, 2]},
    {"timestamp": 10, "input_length": 512, "output_length": 7, "hash_ids": [1]},
    {"timestamp": 10, "input_length": 1536, "output_length": 1, "hash_ids": [1, 2, 3]},
]


def test_load_sorts_by_arrival_keeping_file_order_for_ties(tmp_path: Path) -> None:
    trace = load_mooncake_trace(_write(tmp_path / "t.jsonl", ROWS))
    assert [(r.timestamp_ms, r.input_length) for r in trace] == [(10, 512), (10, 1536), (30, 1000)]
    assert trace[0].hash_ids == (1,) and trace[0].output_length == 7


def test_max_requests_and_arrival_speedup(tmp_path: Path) -> None:
    trace = load_mooncake_trace(
        _write(tmp_path / "t.jsonl", ROWS), max_requests=2, arrival_speedup_ratio=2.0
    )
    assert [r.timestamp_ms for r in trace] == [5.0, 15.0]


def test_block_size_scales_input_lengths_rounding_up(tmp_path: Path) -> None:
    trace = load_mooncake_trace(_write(tmp_path / "t.jsonl", ROWS), trace_block_size=64)
    # 1000 * 64 / 512 = 125; 512 -> 64; 1536 -> 192 (blocks and sharing kept)
    assert sorted(r.input_length for r in trace) == [64, 125, 192]
    rounded = load_mooncake_trace(
        _write(tmp_path / "u.jsonl", [{"timestamp": 0, "input_length": 7, "output_length": 1,
                                       "hash_ids": [4]}]),
        trace_block_size=100,
    )  # fmt: skip
    assert rounded[0].input_length == 2  # ceil(7 * 100 / 512)


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        json.dumps({"timestamp": 0, "output_length": 1, "hash_ids": [1]}),
        json.dumps({"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1]}),
        json.dumps({"timestamp": 0, "input_length": 5, "output_length": 1, "hash_ids": []}),
    ],
)
def test_bad_lines_name_the_flag_and_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n")
    with pytest.raises(ConfigError) as info:
        load_mooncake_trace(path)
    assert info.value.flag == "--trace" and "line 2" in str(info.value)


def test_missing_or_empty_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_mooncake_trace(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConfigError):
        load_mooncake_trace(tmp_path / "empty.jsonl")


def test_shared_hash_ids_give_shared_token_prefixes() -> None:
    a = synthesize_token_ids([5, 6, 7], 40, 16, vocab_size=1000)
    b = synthesize_token_ids([5, 6, 8], 48, 16, vocab_size=1000)
    assert len(a) == 40 and len(b) == 48 and a.dtype == np.uint32
    assert (a[:32] == b[:32]).all()
    assert not (a[32:40] == b[32:40]).all()
    assert a.max() < 1000


def test_a_hash_id_block_is_the_same_everywhere_and_seeded() -> None:
    first = synthesize_token_ids([9], 16, 16, vocab_size=50000, seed=1)
    again = synthesize_token_ids([9, 1], 20, 16, vocab_size=50000, seed=1)
    other_seed = synthesize_token_ids([9], 16, 16, vocab_size=50000, seed=2)
    assert (first == again[:16]).all()
    assert not (first == other_seed).all()
    assert len(set(first.tolist())) > 8  # not a constant block


def test_synthesize_rejects_too_few_hash_ids() -> None:
    with pytest.raises(ValueError):
        synthesize_token_ids([1], 17, 16, vocab_size=10)

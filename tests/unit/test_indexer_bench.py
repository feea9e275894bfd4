import json
from pathlib import Path

import pytest

from stator.bench.indexer_bench import build_workload, load_trace, main, replay_queries
from stator.cli import main as cli_main
from stator.router.indexer import KvIndexer


def _trace(tmp_path: Path) -> Path:
    lines = []
    for i in range(40):
        ids = [*[0, 1, 2][: 1 + i % 3], 100 + i, 200 + i]
        lines.append(
            json.dumps(
                {
                    "timestamp": i,
                    "input_length": 512 * len(ids),
                    "output_length": 10,
                    "hash_ids": ids,
                }
            )
        )
    path = tmp_path / "trace.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_workload_events_reproduce_the_simulated_caches(tmp_path: Path) -> None:
    trace = load_trace(_trace(tmp_path))
    workload = build_workload(trace, num_workers=3, capacity=8)
    index = KvIndexer()
    for batch in workload.batches:
        assert index.apply_event_batch(batch) is False  # event ids are gap-free
    sizes = index.find_matches([]).tree_sizes
    assert all(0 < n <= 8 for n in sizes.values())
    assert sum(sizes.values()) <= workload.num_block_ops
    assert len(replay_queries(workload, 3)) == len(trace)


def test_json_output_has_the_documented_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--trace", str(_trace(tmp_path)), "--workers", "2,5", "--repeats", "1", "--json"]
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["workers"] for r in results] == [2, 5]
    for r in results:
        assert r["block_ops_per_s"] > 0 and r["find_matches_p99_us"] > 0


def test_cli_dispatch_and_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["bench", "indexer", "--trace", str(tmp_path / "missing.jsonl")]) == 2
    assert "trace not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--workers", "8,x"])
    assert "--workers" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"timestamp": 0}\n')
    with pytest.raises(ValueError, match="hash_ids"):
        load_trace(bad)

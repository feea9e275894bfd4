"""``stator bench indexer``: KV indexer block operations/s and ``find_matches`` latency.

Workload (built before timing): every request of the Mooncake trace becomes its block sequence
hashes (the trace's ``hash_ids`` chained as local hashes, ``stator.kv.hashing``). A simple
KV-aware placement (fewest new blocks + in-flight blocks, over the workers holding a prefix and
the least-loaded one) assigns it to one of N simulated workers; each worker is an LRU cache of
``--blocks-per-worker`` blocks that emits ``BlockStored`` for the blocks it misses and
``BlockRemoved`` for the blocks it evicts, as one ``KvEventBatch`` per request.

Timed replays on a fresh ``KvIndexer``: (1) every batch through ``apply_event_batch``;
``block_ops_per_s`` = blocks stored + removed per second of the thread's CPU time (one core;
``block_ops_per_s_wall`` per wall-clock second). (2) per request, ``find_matches(seq_hashes)``
(each call timed on the wall clock) then that request's batch; ``find_matches_p99_us`` = p99 of
those times. Best of ``--repeats`` replays. Target (issue 5): >= 4 M block ops/s, p99 < 1 ms.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from stator.kv.hashing import sequence_hashes
from stator.protocols.kv_events import BlockRemoved, BlockStored, KvCacheEvent, KvEventBatch
from stator.router.indexer import KvIndexer

TRACE_BLOCK_SIZE = 512  # tokens per Mooncake hash id
DEFAULT_TRACE = Path(__file__).resolve().parents[3] / (
    "../shared/traces/mooncake_conversation_trace.jsonl"
)


@dataclass(frozen=True, slots=True)
class Workload:
    """Per request: its sequence hashes, and the event batch its worker published."""

    queries: list[list[int]]
    batches: list[KvEventBatch]
    num_block_ops: int


@dataclass(frozen=True, slots=True)
class BenchResult:
    """One worker count's figures (the JSON object printed with ``--json``)."""

    workers: int
    block_ops_per_s: float
    find_matches_p99_us: float
    find_matches_p50_us: float
    block_ops_per_s_wall: float
    num_block_ops: int
    num_queries: int


def load_trace(path: Path, limit: int | None = None) -> list[list[int]]:
    """Each request's ``hash_ids`` from a Mooncake-format JSONL trace (first ``limit`` lines).

    Raises:
        FileNotFoundError: no such trace.
        ValueError: a line is not a JSON object with a ``hash_ids`` list.
    """
    requests: list[list[int]] = []
    with path.open() as f:
        for number, line in enumerate(f, 1):
            if limit is not None and len(requests) >= limit:
                break
            if not line.strip():
                continue
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("hash_ids"), list):
                raise ValueError(f"{path}:{number}: expected an object with a hash_ids list")
            requests.append([int(h) for h in record["hash_ids"]])
    return requests


class _Placement:
    """Assigns requests to simulated workers and tracks their LRU caches (workload generator)."""

    def __init__(self, num_workers: int, capacity: int, window: int) -> None:
        self.index = KvIndexer()
        self.caches: list[OrderedDict[int, None]] = [OrderedDict() for _ in range(num_workers)]
        self.inflight = [0] * num_workers  # blocks of the last `window` requests, per worker
        self.recent: deque[tuple[int, int]] = deque()
        self.event_ids = [0] * num_workers
        self.capacity = capacity
        self.window = window

    def place(self, hashes: list[int]) -> KvEventBatch:
        worker = self._choose(hashes)
        self._track_inflight(worker, len(hashes))
        stored, evicted = self._touch(worker, hashes)
        events: list[KvCacheEvent] = []
        if stored:
            events.append(
                BlockStored(
                    block_hashes=stored,
                    parent_block_hash=None,
                    token_ids=[],
                    block_size=TRACE_BLOCK_SIZE,
                )
            )
        if evicted:
            events.append(BlockRemoved(block_hashes=evicted))
        self.index.store_blocks(worker, stored)
        self.index.remove_blocks(worker, evicted)
        batch = KvEventBatch(worker_id=worker, event_id=self.event_ids[worker], events=events)
        self.event_ids[worker] += 1
        return batch

    def _choose(self, hashes: list[int]) -> int:
        n = len(hashes)
        least = min(range(len(self.inflight)), key=self.inflight.__getitem__)
        costs = {least: n + self.inflight[least]}
        for worker, overlap in self.index.match_scores(hashes).items():
            costs[worker] = n - overlap + self.inflight[worker]
        return min(costs, key=costs.__getitem__)

    def _track_inflight(self, worker: int, num_blocks: int) -> None:
        self.inflight[worker] += num_blocks
        self.recent.append((worker, num_blocks))
        if len(self.recent) > self.window:
            old_worker, old_blocks = self.recent.popleft()
            self.inflight[old_worker] -= old_blocks

    def _touch(self, worker: int, hashes: list[int]) -> tuple[list[int], list[int]]:
        cache = self.caches[worker]
        stored = []
        for h in hashes:
            if h in cache:
                cache.move_to_end(h)
            else:
                cache[h] = None
                stored.append(h)
        evicted = []
        while len(cache) > self.capacity:
            evicted.append(cache.popitem(last=False)[0])
        return stored, evicted


def build_workload(trace: Sequence[list[int]], num_workers: int, capacity: int) -> Workload:
    """Turn trace requests into queries and per-request event batches (see module doc)."""
    placement = _Placement(num_workers, capacity, window=4 * num_workers)
    queries: list[list[int]] = []
    batches: list[KvEventBatch] = []
    ops = 0
    for hash_ids in trace:
        hashes = sequence_hashes(hash_ids)
        batch = placement.place(hashes)
        queries.append(hashes)
        batches.append(batch)
        ops += sum(
            len(e.block_hashes) for e in batch.events if isinstance(e, BlockStored | BlockRemoved)
        )
    return Workload(queries, batches, ops)


def replay_events(workload: Workload, num_workers: int) -> tuple[float, float]:
    """Apply every batch to a fresh indexer; returns (wall seconds, thread CPU seconds)."""
    index = _fresh_index(num_workers)
    apply = index.apply_event_batch
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    for batch in workload.batches:
        apply(batch)
    return time.perf_counter() - wall0, time.thread_time() - cpu0


def replay_queries(workload: Workload, num_workers: int) -> list[int]:
    """Interleave ``find_matches`` (each timed, ns) with the batches, as a live router would."""
    index = _fresh_index(num_workers)
    clock = time.perf_counter_ns
    latencies: list[int] = []
    for query, batch in zip(workload.queries, workload.batches, strict=True):
        t0 = clock()
        index.find_matches(query)
        latencies.append(clock() - t0)
        index.apply_event_batch(batch)
    return latencies


def _fresh_index(num_workers: int) -> KvIndexer:
    index = KvIndexer()
    for worker in range(num_workers):
        index.add_worker(worker)
    return index


def run(trace: Sequence[list[int]], num_workers: int, capacity: int, repeats: int) -> BenchResult:
    """Build the workload for ``num_workers`` and replay it ``repeats`` times (best figures).

    ``block_ops_per_s`` uses the thread's CPU time (one core, unaffected by other processes
    on a shared machine); ``block_ops_per_s_wall`` the wall time.
    """
    workload = build_workload(trace, num_workers, capacity)
    gc.collect()
    gc.freeze()  # the workload's objects are permanent: keep the collector off them
    try:
        wall = cpu = float("inf")
        p99 = p50 = float("inf")
        for _ in range(max(1, repeats)):
            wall_s, cpu_s = replay_events(workload, num_workers)
            wall, cpu = min(wall, wall_s), min(cpu, cpu_s)
            latencies = sorted(replay_queries(workload, num_workers))
            p99 = min(p99, _percentile(latencies, 0.99) / 1e3)
            p50 = min(p50, _percentile(latencies, 0.50) / 1e3)
    finally:
        gc.unfreeze()
    ops = workload.num_block_ops
    return BenchResult(
        workers=num_workers,
        block_ops_per_s=ops / cpu if cpu > 0 else 0.0,
        find_matches_p99_us=p99,
        find_matches_p50_us=p50,
        block_ops_per_s_wall=ops / wall if wall > 0 else 0.0,
        num_block_ops=ops,
        num_queries=len(workload.queries),
    )


def _percentile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="stator bench indexer", description=__doc__.split("\n")[0])
    p.add_argument("--trace", type=Path, default=DEFAULT_TRACE, help="Mooncake-format JSONL")
    p.add_argument("--workers", default="8,256", help="comma-separated worker counts")
    p.add_argument("--blocks-per-worker", type=int, default=4096, help="simulated LRU capacity")
    p.add_argument("--max-requests", type=int, default=None, help="use the first N requests")
    p.add_argument("--repeats", type=int, default=3, help="timed replays (best is reported)")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    args = p.parse_args(list(argv))
    try:
        args.worker_counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        p.error(f"argument --workers: expected comma-separated integers, got {args.workers!r}")
    if not args.worker_counts or min(args.worker_counts) < 1:
        p.error("argument --workers: worker counts must be >= 1")
    if args.blocks_per_worker < 1:
        p.error("argument --blocks-per-worker: must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; prints a table, or a JSON list with ``--json``. Returns 0 (2 on a
    missing trace)."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    if not args.trace.is_file():
        print(f"stator bench indexer: trace not found: {args.trace} (use --trace)", file=sys.stderr)
        return 2
    trace = load_trace(args.trace, args.max_requests)
    results = [run(trace, n, args.blocks_per_worker, args.repeats) for n in args.worker_counts]
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
    else:
        print(
            f"{'workers':>8} {'block ops/s (cpu)':>18} {'(wall)':>12} "
            f"{'find_matches p50 us':>20} {'p99 us':>9}"
        )
        for r in results:
            print(
                f"{r.workers:>8} {r.block_ops_per_s:>18,.0f} {r.block_ops_per_s_wall:>12,.0f} "
                f"{r.find_matches_p50_us:>20.1f} {r.find_matches_p99_us:>9.1f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Mooncake-format traces: load the JSONL, scale it, and turn hash ids into token ids.

Format (one request per line, ``../shared/traces/README.md`` of the project; the Mooncake FAST'25
release): ``{"timestamp": ms, "input_length": tokens, "output_length": tokens, "hash_ids": [...]}``
where each hash id names one 512-token block of the prompt; equal ids at equal positions are a
shared prefix. With ``trace_block_size`` B each hash id stands for B tokens and every
``input_length`` is scaled by B/512, rounding up, so a request keeps its number of blocks and its
sharing pattern. Every hash id gets its own fixed block of B token ids, a pure function of
``(seed, hash id)``; a prompt is its blocks concatenated and cut to ``input_length``, so requests
that share hash ids share exact token prefixes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from stator.errors import ConfigError

MOONCAKE_BLOCK_SIZE = 512
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True, slots=True)
class TraceRequest:
    """One trace line, scaled. ``timestamp_ms``: arrival (ms from the trace start, divided by the
    arrival speedup); ``input_length``/``output_length``: tokens; ``hash_ids``: prompt blocks."""

    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def load_mooncake_trace(
    path: str | Path,
    *,
    trace_block_size: int = MOONCAKE_BLOCK_SIZE,
    max_requests: int | None = None,
    arrival_speedup_ratio: float = 1.0,
) -> list[TraceRequest]:
    """Read a Mooncake JSONL trace, in arrival order (ties keep file order).

    ``trace_block_size``: tokens per hash id (B); ``max_requests``: keep the first K lines;
    ``arrival_speedup_ratio``: divide timestamps by it (2.0 = twice the request rate).

    Raises:
        ConfigError: unreadable file or a malformed line (names ``--trace`` and the line), or a
            bad scaling parameter.
    """
    if trace_block_size < 1:
        raise ConfigError("--trace-block-size", f"must be >= 1, got {trace_block_size}")
    if arrival_speedup_ratio <= 0:
        raise ConfigError("--arrival-speedup-ratio", f"must be > 0, got {arrival_speedup_ratio}")
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise ConfigError("--trace", f"cannot read {path}: {exc}") from exc
    requests: list[TraceRequest] = []
    for number, line in enumerate(lines, start=1):
        if max_requests is not None and len(requests) >= max_requests:
            break
        if line.strip():
            requests.append(_parse_line(line, number, trace_block_size, arrival_speedup_ratio))
    if not requests:
        raise ConfigError("--trace", f"{path} holds no requests")
    requests.sort(key=lambda r: r.timestamp_ms)
    return requests


def _parse_line(line: str, number: int, block_size: int, speedup: float) -> TraceRequest:
    try:
        row = json.loads(line)
        timestamp = float(row.get("timestamp", 0.0))
        input_length = int(row["input_length"])
        output_length = int(row["output_length"])
        hash_ids = tuple(int(h) for h in row["hash_ids"])
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError("--trace", f"line {number}: not a Mooncake request ({exc})") from exc
    if input_length < 1 or output_length < 0 or timestamp < 0 or not hash_ids:
        raise ConfigError("--trace", f"line {number}: lengths, timestamp or hash_ids out of range")
    scaled = math.ceil(input_length * block_size / MOONCAKE_BLOCK_SIZE)
    if scaled > len(hash_ids) * block_size:
        raise ConfigError(
            "--trace",
            f"line {number}: input_length {input_length} needs more than "
            f"{len(hash_ids)} hash ids of {MOONCAKE_BLOCK_SIZE} tokens",
        )
    return TraceRequest(timestamp / speedup, scaled, output_length, hash_ids)


def synthesize_token_ids(
    hash_ids: Sequence[int],
    input_length: int,
    block_size: int,
    *,
    vocab_size: int,
    seed: int = 0,
) -> npt.NDArray[np.uint32]:
    """The prompt of a trace request: block ``i`` is hash id ``hash_ids[i]``'s ``block_size``
    token ids in ``[0, vocab_size)``, cut to ``input_length`` tokens.

    A token is ``splitmix64(seed, hash_id * block_size + position) % vocab_size``, so a hash id's
    block is the same in every request and every run with that seed.

    Raises:
        ValueError: ``input_length`` exceeds ``len(hash_ids) * block_size`` or ``vocab_size`` < 1.
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    num_blocks = -(-input_length // block_size)
    if num_blocks > len(hash_ids):
        raise ValueError(f"{input_length} tokens need {num_blocks} hash ids, got {len(hash_ids)}")
    ids = np.asarray(hash_ids[:num_blocks], dtype=np.uint64)
    positions = np.arange(block_size, dtype=np.uint64)
    keys = (ids[:, None] * np.uint64(block_size) + positions[None, :]).ravel()[:input_length]
    return (_splitmix64(keys, seed) % np.uint64(vocab_size)).astype(np.uint32)


def _splitmix64(keys: npt.NDArray[np.uint64], seed: int) -> npt.NDArray[np.uint64]:
    z = keys + np.uint64(((seed + 1) * _GOLDEN) % (1 << 64))
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))

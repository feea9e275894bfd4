"""KV-aware worker selection: the DESIGN.md cost per worker and the pick among workers.

Cost (Dynamo ``scheduler.rs`` / DESIGN.md "Router"), in blocks::

    logit = w * (active_prefill_tokens + max(0, isl - overlap * B)) / B
            + active_decode_blocks + new_blocks

``w`` = ``--router-kv-overlap-score-weight`` (default 1.0), ``B`` = block size (tokens),
``overlap`` = prompt blocks the worker already caches, ``new_blocks`` = prompt blocks not yet
booked on the worker by its active requests. Temperature 0: the lowest logit wins; ties go to
the worker with the fewest cached blocks, then a random one. Temperature ``T`` > 0: sample with
``p ∝ exp(-(logit / (max - min)) / T)`` (uniform when every logit is equal).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

LOGIT_TIE_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class WorkerCandidate:
    """One worker's inputs to the cost, for one request.

    ``overlap_blocks``: prompt blocks cached there; ``cached_blocks``: all blocks cached there
    (tie-break); ``active_prefill_tokens`` / ``active_decode_blocks``: booked load;
    ``new_blocks``: the request's blocks not already booked there.
    """

    worker_id: int
    overlap_blocks: int
    cached_blocks: int
    active_prefill_tokens: int
    active_decode_blocks: int
    new_blocks: int


@dataclass(frozen=True, slots=True)
class Selection:
    """The chosen worker, its logit and its expected overlap (blocks)."""

    worker_id: int
    logit: float
    overlap_blocks: int


def worker_logit(c: WorkerCandidate, isl: int, block_size: int, overlap_weight: float) -> float:
    """The DESIGN.md cost of sending a request of ``isl`` tokens to ``c`` (blocks; lower wins).

    Raises:
        ValueError: ``block_size`` < 1.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    new_prefill = max(0, isl - c.overlap_blocks * block_size)
    prefill_blocks = (c.active_prefill_tokens + new_prefill) / block_size
    return overlap_weight * prefill_blocks + c.active_decode_blocks + c.new_blocks


def select_worker(
    candidates: Sequence[WorkerCandidate],
    isl: int,
    block_size: int,
    *,
    overlap_weight: float = 1.0,
    temperature: float = 0.0,
    rng: random.Random | None = None,
) -> Selection:
    """Pick a worker for a request of ``isl`` tokens.

    Raises:
        ValueError: no candidates, negative temperature, or ``block_size`` < 1.
    """
    if not candidates:
        raise ValueError("no candidate workers")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    rng = rng if rng is not None else random.Random()
    logits = [worker_logit(c, isl, block_size, overlap_weight) for c in candidates]
    if temperature == 0:
        index = _argmin_with_ties(candidates, logits, rng)
    else:
        index = _softmax_index(logits, temperature, rng)
    chosen = candidates[index]
    return Selection(chosen.worker_id, logits[index], chosen.overlap_blocks)


def _argmin_with_ties(
    candidates: Sequence[WorkerCandidate], logits: list[float], rng: random.Random
) -> int:
    best = min(logits)
    tied = [i for i, logit in enumerate(logits) if logit - best <= LOGIT_TIE_EPS]
    if len(tied) == 1:
        return tied[0]
    fewest = min(candidates[i].cached_blocks for i in tied)
    tied = [i for i in tied if candidates[i].cached_blocks == fewest]
    return tied[0] if len(tied) == 1 else rng.choice(tied)


def softmax_probabilities(logits: Sequence[float], temperature: float) -> list[float]:
    """``p_i ∝ exp(-(logit_i / (max - min)) / T)``; uniform when max == min.

    Computed relative to the minimum logit (same distribution, no overflow).

    Raises:
        ValueError: ``temperature`` <= 0 or no logits.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not logits:
        raise ValueError("no logits")
    lo, hi = min(logits), max(logits)
    if hi - lo <= LOGIT_TIE_EPS:
        return [1.0 / len(logits)] * len(logits)
    span = hi - lo
    weights = [math.exp(-((x - lo) / span) / temperature) for x in logits]
    total = sum(weights)
    return [w / total for w in weights]


def _softmax_index(logits: list[float], temperature: float, rng: random.Random) -> int:
    probs = softmax_probabilities(logits, temperature)
    return rng.choices(range(len(logits)), weights=probs)[0]

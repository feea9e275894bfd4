"""Workloads for users without a trace: a synthetic prefix-sharing generator, and scaling of a
Mooncake-format trace (longer prompts, more users).

Both produce ``TraceRequest``s whose hash ids stand for blocks of the replay's
``--trace-block-size`` tokens, so they go through the same prompt builder as a real trace.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stator.bench.trace import TraceRequest
from stator.errors import ConfigError


@dataclass(frozen=True, slots=True)
class SyntheticSpec:
    """A synthetic workload. ``isl``/``osl`` in tokens; ``prefix_ratio``: share of the prompt
    that is the group's common prefix (system prompt, few-shot examples); requests arrive as a
    Poisson process at ``request_rate`` requests/s."""

    num_requests: int = 1000
    request_rate: float = 10.0
    isl: int = 2048
    osl: int = 128
    num_prefix_groups: int = 8
    prefix_ratio: float = 0.5
    seed: int = 0

    def validate(self) -> None:
        """Raises ``ConfigError`` naming the flag of the first bad value."""
        checks = (
            (self.num_requests >= 1, "--synthetic-num-requests", "must be >= 1"),
            (self.request_rate > 0, "--synthetic-request-rate", "must be > 0"),
            (self.isl >= 1, "--synthetic-isl", "must be >= 1"),
            (self.osl >= 1, "--synthetic-osl", "must be >= 1"),
            (self.num_prefix_groups >= 1, "--synthetic-prefix-groups", "must be >= 1"),
            (0.0 <= self.prefix_ratio <= 1.0, "--synthetic-prefix-ratio", "must be in [0, 1]"),
        )
        for ok, flag, message in checks:
            if not ok:
                raise ConfigError(flag, message)


def synthetic_trace(spec: SyntheticSpec, block_size: int) -> list[TraceRequest]:
    """Requests of ``ceil(isl / block_size)`` blocks; the first ``floor(prefix_ratio * blocks)``
    are shared by every request of its (uniformly drawn) prefix group, the rest are unique."""
    spec.validate()
    rng = np.random.default_rng(spec.seed)
    num_blocks = math.ceil(spec.isl / block_size)
    num_shared = math.floor(spec.prefix_ratio * num_blocks)
    gaps_ms = rng.exponential(1000.0 / spec.request_rate, spec.num_requests)
    arrivals = np.cumsum(gaps_ms) - gaps_ms[0]
    groups = rng.integers(0, spec.num_prefix_groups, spec.num_requests)
    next_unique = spec.num_prefix_groups * num_shared
    out: list[TraceRequest] = []
    for arrival, group in zip(arrivals, groups, strict=True):
        shared = range(int(group) * num_shared, (int(group) + 1) * num_shared)
        unique = range(next_unique, next_unique + num_blocks - num_shared)
        next_unique += num_blocks - num_shared
        out.append(TraceRequest(float(arrival), spec.isl, spec.osl, (*shared, *unique)))
    return out


def scale_trace(
    requests: Sequence[TraceRequest], *, length_factor: int = 1, duplication_factor: int = 1
) -> list[TraceRequest]:
    """Scale a trace up.

    ``length_factor`` L: every hash id becomes L consecutive new ids, so prompts are L times
    longer with the same sharing structure. ``duplication_factor`` D: D copies of the trace with
    disjoint hash ids (D independent user populations) merged by arrival time, so D times the
    request rate with the same per-copy reuse.

    Raises:
        ConfigError: a factor below 1 (naming its flag).
    """
    if length_factor < 1:
        raise ConfigError("--trace-length-factor", f"must be >= 1, got {length_factor}")
    if duplication_factor < 1:
        raise ConfigError("--trace-duplication-factor", f"must be >= 1, got {duplication_factor}")
    span = (max(max(r.hash_ids) for r in requests) + 1) * length_factor if requests else 0
    out = [
        TraceRequest(
            r.timestamp_ms,
            r.input_length * length_factor,
            r.output_length,
            tuple(copy * span + h * length_factor + j for h in r.hash_ids
                  for j in range(length_factor)),
        )
        for copy in range(duplication_factor)
        for r in requests
    ]  # fmt: skip
    out.sort(key=lambda r: r.timestamp_ms)
    return out

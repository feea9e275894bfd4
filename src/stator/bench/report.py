"""Latency statistics and the replay summary, with the keys of Dynamo's replay report.

Definitions (as in Dynamo's ``lib/mocker/src/replay/collector.rs``): TTFT = first token time -
arrival; end-to-end latency = last token time - arrival; ITL statistics are over every gap between
consecutive tokens of a request, pooled across requests (so ``mean_itl_ms`` = sum of gaps / number
of gaps); ``prefix_cache_reused_ratio`` = prompt tokens served from the prefix cache / all prompt
tokens. Percentiles are linear interpolations (numpy's default) of exact values; pooled ITL
samples go through ``LatencySketch``, log-spaced buckets with 0.1% relative error (Dynamo uses a
DDSketch with the same accuracy).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

QUANTILES: tuple[tuple[str, float], ...] = (("median", 50.0), ("p90", 90.0), ("p99", 99.0))
_RELATIVE_ACCURACY = 0.001


@dataclass(slots=True)
class RequestRecord:
    """One request's outcome. Times in ms on one clock; None when it never happened.

    ``cached_tokens``: prompt tokens served from the prefix cache. ``completed``: it ran to the
    end (not cancelled, not failed).
    """

    arrival_ms: float
    input_tokens: int
    output_tokens: int = 0
    cached_tokens: int = 0
    first_token_ms: float | None = None
    last_token_ms: float | None = None
    completed: bool = False

    @property
    def ttft_ms(self) -> float | None:
        """Time to first token (ms)."""
        return None if self.first_token_ms is None else self.first_token_ms - self.arrival_ms

    @property
    def e2e_ms(self) -> float | None:
        """End-to-end latency: arrival to last token (ms)."""
        return None if self.last_token_ms is None else self.last_token_ms - self.arrival_ms


class LatencySketch:
    """A weighted latency distribution in log-spaced buckets: exact count, sum and mean,
    quantiles within 0.1% relative error. Values <= 0 share one bucket at 0.

    ``add`` only appends to a buffer; buffers fold into the buckets in bulk (numpy), so adding
    millions of samples stays cheap and memory stays bounded.
    """

    _ZERO_KEY = -(1 << 30)
    _FOLD_AT = 1 << 16

    def __init__(self) -> None:
        self._gamma_log = math.log1p(2 * _RELATIVE_ACCURACY / (1 - _RELATIVE_ACCURACY))
        self._buckets: dict[int, float] = {}
        self._values = array("d")
        self._weights = array("d")
        self.count = 0.0
        self.total = 0.0

    def add(self, value_ms: float, weight: float = 1.0) -> None:
        """Add ``weight`` samples of ``value_ms``."""
        self._values.append(value_ms)
        self._weights.append(weight)
        self.count += weight
        self.total += value_ms * weight
        if len(self._values) >= self._FOLD_AT:
            self._fold()

    def add_many(self, values_ms: Sequence[float], weights: Sequence[float]) -> None:
        """Add ``weights[i]`` samples of ``values_ms[i]`` for each ``i`` (equal lengths)."""
        self._values.extend(values_ms)
        self._weights.extend(weights)
        self.count += float(np.sum(weights))
        self.total += float(np.dot(values_ms, weights))
        if len(self._values) >= self._FOLD_AT:
            self._fold()

    @property
    def mean(self) -> float:
        """Mean of the samples (ms); NaN when empty."""
        return self.total / self.count if self.count else math.nan

    def quantile(self, percent: float) -> float:
        """The ``percent``-th percentile (0..100); NaN when empty."""
        self._fold()
        if not self.count:
            return math.nan
        rank = percent / 100.0 * self.count
        seen = 0.0
        for key in sorted(self._buckets):
            seen += self._buckets[key]
            if seen >= rank:
                return self._value(key)
        return self._value(max(self._buckets))

    def _fold(self) -> None:
        if not self._values:
            return
        values = np.frombuffer(self._values, dtype=np.float64)
        weights = np.frombuffer(self._weights, dtype=np.float64)
        keys = np.full(len(values), self._ZERO_KEY, dtype=np.int64)
        positive = values > 0
        keys[positive] = np.ceil(np.log(values[positive]) / self._gamma_log).astype(np.int64)
        unique, inverse = np.unique(keys, return_inverse=True)
        sums = np.bincount(inverse, weights=weights)
        for key, weight in zip(unique.tolist(), sums.tolist(), strict=True):
            self._buckets[key] = self._buckets.get(key, 0.0) + weight
        self._values = array("d")
        self._weights = array("d")

    def _value(self, key: int) -> float:
        if key == self._ZERO_KEY:
            return 0.0
        gamma = math.exp(self._gamma_log)
        return 2 * gamma**key / (gamma + 1)


def latency_stats(name: str, values: Sequence[float] | LatencySketch) -> dict[str, float]:
    """``{mean_<name>, median_<name>, p90_<name>, p99_<name>}`` (ms; NaN when empty)."""
    if isinstance(values, LatencySketch):
        out = {f"mean_{name}": values.mean}
        out.update({f"{q}_{name}": values.quantile(p) for q, p in QUANTILES})
        return out
    if len(values) == 0:
        return {f"{k}_{name}": math.nan for k in ("mean", *(q for q, _ in QUANTILES))}
    arr = np.asarray(values, dtype=np.float64)
    out = {f"mean_{name}": float(arr.mean())}
    out.update({f"{q}_{name}": float(np.percentile(arr, p)) for q, p in QUANTILES})
    return out


def summarize(
    records: Iterable[RequestRecord],
    itl: LatencySketch | Sequence[float],
    *,
    duration_ms: float,
    wall_time_ms: float,
) -> dict[str, float | int]:
    """The replay summary. ``itl``: every inter-token gap (ms), pooled over requests.

    Keys: ``num_requests``, ``completed_requests``, ``total_input_tokens``,
    ``total_output_tokens``, ``{mean,median,p90,p99}_ttft_ms``, ``..._itl_ms``,
    ``..._e2e_latency_ms``, ``prefix_cache_reused_ratio``, ``duration_ms`` (simulated or
    measured span), ``wall_time_ms``, ``request_throughput_rps``, ``input_throughput_tok_s``,
    ``output_throughput_tok_s``. Latencies cover completed requests.
    """
    all_records = list(records)
    done = [r for r in all_records if r.completed]
    total_in = sum(r.input_tokens for r in done)
    total_out = sum(r.output_tokens for r in done)
    cached = sum(r.cached_tokens for r in done)
    ttft = [t for t in (r.ttft_ms for r in done) if t is not None]
    e2e = [t for t in (r.e2e_ms for r in done) if t is not None]
    seconds = duration_ms / 1000.0
    summary: dict[str, float | int] = {
        "num_requests": len(all_records),
        "completed_requests": len(done),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
    }
    summary.update(latency_stats("ttft_ms", ttft))
    summary.update(latency_stats("itl_ms", itl))
    summary.update(latency_stats("e2e_latency_ms", e2e))
    summary.update(
        {
            "prefix_cache_reused_ratio": cached / total_in if total_in else 0.0,
            "duration_ms": duration_ms,
            "wall_time_ms": wall_time_ms,
            "request_throughput_rps": len(done) / seconds if seconds > 0 else 0.0,
            "input_throughput_tok_s": total_in / seconds if seconds > 0 else 0.0,
            "output_throughput_tok_s": total_out / seconds if seconds > 0 else 0.0,
        }
    )
    return summary

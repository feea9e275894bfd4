"""The mocker's timing model: how long one engine step takes, in milliseconds.

Formulas and coefficients are NVIDIA Dynamo's polynomial mocker model
(``lib/mocker/src/common/perf_model.rs``, ``PerfModel::Polynomial``), fit to vLLM on one GPU:

- prefill of a batch with ``n`` new prompt tokens:
  ``4.209989e-07 * n**2 + 1.518344e-02 * n + 1.650142e+01`` (0 when ``n == 0``), where ``n`` is
  ``batch_count * (mean_isl - mean_prefix)`` with integer means, as Dynamo's scheduler reduces a
  batch (``predict_prefill_duration`` in ``scheduler/vllm/core.rs``);
- decode step: ``max(1, -25.74 * u**2 + 54.01 * u + 5.74)`` with ``u`` the decode batch's KV
  tokens (sum of its sequence lengths) over the worker's KV capacity in tokens, at most 1 (shared
  prefix blocks make the sum exceed the capacity; Dynamo 1.6.1's replay caps it).

Prefill is divided by ``speedup_ratio``; decode by ``speedup_ratio * decode_speedup_ratio``. A step
that prefills and decodes takes the sum of both (measured against Dynamo 1.6.1's replay).
"""

from __future__ import annotations

from dataclasses import dataclass

PREFILL_A = 4.209989e-07
PREFILL_B = 1.518344e-02
PREFILL_C = 1.650142e01
DECODE_A = -25.74
DECODE_B = 54.01
DECODE_C = 5.74
MIN_DECODE_MS = 1.0


def prefill_poly_ms(num_new_tokens: int) -> float:
    """Unscaled prefill time (ms) of ``num_new_tokens`` new prompt tokens; 0 for none."""
    if num_new_tokens <= 0:
        return 0.0
    n = float(num_new_tokens)
    return PREFILL_A * n * n + PREFILL_B * n + PREFILL_C


def decode_poly_ms(utilization: float) -> float:
    """Unscaled decode step time (ms) at KV utilisation ``utilization`` (fraction, >= 0)."""
    u = utilization
    return max(MIN_DECODE_MS, DECODE_A * u * u + DECODE_B * u + DECODE_C)


def batch_new_tokens(batch_count: int, total_isl: int, total_prefix: int) -> int:
    """Dynamo's reduced prefill size: ``count * (total_isl // count - total_prefix // count)``.

    ``total_isl``: sum over the prefilled requests of the tokens computed through this step;
    ``total_prefix``: sum of the tokens each had cached or computed before it (tokens).
    """
    if batch_count <= 0:
        return 0
    return batch_count * (total_isl // batch_count - total_prefix // batch_count)


@dataclass(frozen=True, slots=True)
class TimingModel:
    """Step times for one worker. ``total_kv_tokens``: KV capacity in tokens; the ratios divide
    times as in ``MockerConfig``."""

    total_kv_tokens: int
    speedup_ratio: float = 1.0
    decode_speedup_ratio: float = 1.0

    def prefill_ms(self, batch_count: int, total_isl: int, total_prefix: int) -> float:
        """Prefill time (ms) of a step that prefilled ``batch_count`` requests."""
        n = batch_new_tokens(batch_count, total_isl, total_prefix)
        return prefill_poly_ms(n) / self.speedup_ratio

    def decode_ms(self, decode_kv_tokens: int) -> float:
        """Decode time (ms) of a step whose decoding requests hold ``decode_kv_tokens`` tokens
        (sum of their sequence lengths). Callers skip it when no request decodes."""
        u = min(1.0, decode_kv_tokens / self.total_kv_tokens)
        return decode_poly_ms(u) / (self.speedup_ratio * self.decode_speedup_ratio)

"""``--compare A.json B.json``: two replay reports side by side, with B/A ratios."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from stator.errors import ConfigError

COMPARED_KEYS = (
    "num_requests", "completed_requests", "mean_ttft_ms", "median_ttft_ms", "p90_ttft_ms",
    "p99_ttft_ms", "mean_itl_ms", "p99_itl_ms", "mean_e2e_latency_ms", "p99_e2e_latency_ms",
    "prefix_cache_reused_ratio", "request_throughput_rps", "output_throughput_tok_s",
    "duration_ms",
)  # fmt: skip


def load_summary(path: str) -> dict[str, Any]:
    """The ``summary`` mapping of a report written by ``stator bench replay``, ``stator replay``
    or Dynamo's replay (all keep it under ``summary``).

    Raises:
        ConfigError: unreadable or not a report (names ``--compare``).
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError("--compare", f"cannot read report {path}: {exc}") from None
    summary = data.get("summary") if isinstance(data, dict) else None
    if not isinstance(summary, dict):
        raise ConfigError("--compare", f"{path} has no 'summary' object")
    return summary


def compare_table(a: dict[str, Any], b: dict[str, Any], names: tuple[str, str]) -> str:
    """A fixed-width table of the compared keys present in either report."""
    rows = [f"{'metric':<28}{names[0]:>16}{names[1]:>16}{'B/A':>10}"]
    for key in COMPARED_KEYS:
        if key in a or key in b:
            va, vb = a.get(key), b.get(key)
            rows.append(f"{key:<28}{_fmt(va):>16}{_fmt(vb):>16}{_ratio(va, vb):>10}")
    return "\n".join(rows)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    return "-" if value is None else str(value)


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, int | float) or not isinstance(b, int | float) or a == 0:
        return "-"
    ratio = b / a
    return "-" if math.isnan(ratio) else f"{ratio:.3f}"

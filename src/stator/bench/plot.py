"""``--plot OUT.png``: TTFT and ITL distributions of a live replay (needs matplotlib, in the
``bench`` extra)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stator.errors import ConfigError


def plot_latencies(ttft_ms: Sequence[float], itl_ms: Sequence[float], out: str, title: str) -> None:
    """Two histograms (TTFT, per-request mean ITL) with mean/p50/p99 marked, saved to ``out``.

    Raises:
        ConfigError: matplotlib is not installed (names ``--plot``).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError("--plot", "needs matplotlib: pip install 'stator[bench]'") from None
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, values, name in ((axes[0], ttft_ms, "TTFT"), (axes[1], itl_ms, "ITL")):
        arr = np.asarray(values, dtype=float)
        if arr.size:
            ax.hist(arr, bins=60, color="tab:blue", alpha=0.8)
            for q, style in ((50, "--"), (99, ":")):
                ax.axvline(np.percentile(arr, q), color="k", linestyle=style, label=f"p{q}")
            ax.axvline(arr.mean(), color="tab:red", label="mean")
            ax.legend()
        ax.set_xlabel(f"{name} (ms)")
        ax.set_ylabel("requests")
        ax.set_title(f"{name}: n={arr.size}")
    fig.suptitle(title)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)

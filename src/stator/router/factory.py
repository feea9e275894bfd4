"""``make_router_core``: one place that turns a router mode (or ``RouterConfig``) into a core.

The live router (frontend) and offline replay both build their ``RouterCore`` here, so the same
policy code runs on the wall clock and on a virtual clock.
"""

from __future__ import annotations

import random

from stator.errors import ConfigError
from stator.router.config import ROUTER_MODES, RouterConfig
from stator.router.sequences import DEFAULT_SEQUENCE_TTL_S
from stator.router.simple import (
    DirectCore,
    LeastLoadedCore,
    LoadTrackingCore,
    PowerOfTwoCore,
    RandomCore,
    RoundRobinCore,
)

_SIMPLE: dict[str, type[LoadTrackingCore]] = {
    "round-robin": RoundRobinCore,
    "random": RandomCore,
    "power-of-two": PowerOfTwoCore,
    "least-loaded": LeastLoadedCore,
    "direct": DirectCore,
}


def make_router_core(
    config_or_mode: RouterConfig | str,
    block_size: int | None = None,
    rng_seed: int | None = None,
    *,
    sequence_ttl_s: float = DEFAULT_SEQUENCE_TTL_S,
) -> LoadTrackingCore:
    """Build the router core for a mode.

    ``config_or_mode``: a ``RouterConfig`` or a mode name (``kv``, ``round-robin``, ``random``,
    ``power-of-two``, ``least-loaded``, ``direct``; other settings then take their defaults).
    ``block_size``: tokens per KV block; falls back to ``config.kv_cache_block_size``.
    ``rng_seed``: seed for ties and random choices (None = nondeterministic).
    ``sequence_ttl_s``: seconds after which a booked request that never finished is dropped.

    Raises:
        ConfigError: unknown mode (names ``--router-mode``) or no block size
            (names ``--kv-cache-block-size``).
    """
    config = _as_config(config_or_mode)
    size = block_size if block_size is not None else config.kv_cache_block_size
    if size is None or size < 1:
        raise ConfigError("--kv-cache-block-size", f"a block size >= 1 is required, got {size}")
    rng = random.Random(rng_seed)
    if config.router_mode == "kv":
        from stator.router.kv_core import KvRouterCore

        return KvRouterCore(size, config=config, rng=rng, sequence_ttl_s=sequence_ttl_s)
    return _SIMPLE[config.router_mode](size, rng=rng, sequence_ttl_s=sequence_ttl_s)


def _as_config(config_or_mode: RouterConfig | str) -> RouterConfig:
    if isinstance(config_or_mode, RouterConfig):
        return config_or_mode
    if config_or_mode not in ROUTER_MODES:
        raise ConfigError("--router-mode", f"must be one of {ROUTER_MODES}, got {config_or_mode!r}")
    return RouterConfig(router_mode=config_or_mode)  # type: ignore[arg-type]

"""``MockerConfig``: the simulated engine's settings, with Dynamo's mocker flag names.

Defaults are Dynamo 1.6.1's mocker defaults (``python -m dynamo.mocker --help``;
``dynamo.mocker.config.normalize_mocker_config()``): vLLM scheduling, ``--block-size`` 64,
``--num-gpu-blocks-override`` 16384, ``--max-num-seqs`` 256, ``--max-num-batched-tokens`` 8192,
prefix caching and chunked prefill on, speedup ratios 1.0, LIFO preemption. ``add_engine_args``
is shared by ``stator replay`` and ``python -m stator.mocker``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Literal

from stator.errors import ConfigError
from stator.flags import add_bool_flag, add_flag, bounded

PreemptionMode = Literal["lifo", "fifo"]
DEFAULT_VOCAB_SIZE = 32000


@dataclass(frozen=True, slots=True)
class MockerConfig:
    """Simulated vLLM engine settings.

    ``block_size``: tokens per KV block. ``num_gpu_blocks``: KV capacity in blocks.
    ``max_num_seqs``: most running requests. ``max_num_batched_tokens``: token budget of one
    engine step (prefill chunks + one token per decoding request). ``speedup_ratio`` divides
    every step's time; ``decode_speedup_ratio`` divides decode time once more.
    ``preemption_mode``: which running request is preempted when blocks run out (``lifo``: the
    newest). ``vocab_size``: output token ids are drawn uniformly from ``[0, vocab_size)``.
    ``max_model_len``: longest sequence (prompt + output, tokens); None = no limit.
    ``default_max_tokens``: output length of a request that sets no ``max_tokens``.

    Raises:
        ConfigError: a value out of range, naming its flag.
    """

    block_size: int = 64
    num_gpu_blocks: int = 16384
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    speedup_ratio: float = 1.0
    decode_speedup_ratio: float = 1.0
    preemption_mode: PreemptionMode = "lifo"
    vocab_size: int = DEFAULT_VOCAB_SIZE
    max_model_len: int | None = None
    default_max_tokens: int = 4096

    def __post_init__(self) -> None:
        _check(self.block_size >= 1, "--block-size", "must be >= 1")
        _check(self.num_gpu_blocks >= 1, "--num-gpu-blocks-override", "must be >= 1")
        _check(self.max_num_seqs >= 1, "--max-num-seqs", "must be >= 1")
        _check(self.max_num_batched_tokens >= 1, "--max-num-batched-tokens", "must be >= 1")
        _check(self.speedup_ratio > 0, "--speedup-ratio", "must be > 0")
        _check(self.decode_speedup_ratio > 0, "--decode-speedup-ratio", "must be > 0")
        _check(self.preemption_mode in ("lifo", "fifo"), "--preemption-mode", "lifo or fifo")
        _check(self.vocab_size >= 1, "--vocab-size", "must be >= 1")
        _check(
            self.max_model_len is None or self.max_model_len >= 1, "--max-model-len", "must be >= 1"
        )
        _check(self.default_max_tokens >= 1, "--default-max-tokens", "must be >= 1")

    @property
    def total_kv_tokens(self) -> int:
        """KV capacity in tokens (``num_gpu_blocks * block_size``)."""
        return self.num_gpu_blocks * self.block_size

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MockerConfig:
        """Build from a namespace parsed with ``add_engine_args``.

        Raises:
            ConfigError: a value out of range.
        """
        return cls(
            block_size=args.block_size,
            num_gpu_blocks=args.num_gpu_blocks_override,
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            enable_prefix_caching=args.enable_prefix_caching,
            enable_chunked_prefill=args.enable_chunked_prefill,
            speedup_ratio=args.speedup_ratio,
            decode_speedup_ratio=args.decode_speedup_ratio,
            preemption_mode=args.preemption_mode,
            max_model_len=args.max_model_len,
        )


def add_engine_args(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """Add the engine flags (Dynamo's mocker names and defaults) to ``parser``."""
    d = MockerConfig()
    add_flag(parser, "--block-size", default=d.block_size, type=bounded(int, lo=1),
             help="tokens per KV block")  # fmt: skip
    add_flag(parser, "--num-gpu-blocks-override", default=d.num_gpu_blocks,
             type=bounded(int, lo=1), help="KV cache capacity in blocks")  # fmt: skip
    add_flag(parser, "--max-num-seqs", default=d.max_num_seqs, type=bounded(int, lo=1),
             help="most requests running at once")  # fmt: skip
    add_flag(parser, "--max-num-batched-tokens", default=d.max_num_batched_tokens,
             type=bounded(int, lo=1), help="token budget of one engine step")  # fmt: skip
    add_bool_flag(parser, "--enable-prefix-caching", default=d.enable_prefix_caching,
                  help="reuse cached KV blocks of shared prefixes")  # fmt: skip
    add_bool_flag(parser, "--enable-chunked-prefill", default=d.enable_chunked_prefill,
                  help="split long prefills across steps under the token budget")  # fmt: skip
    add_flag(parser, "--speedup-ratio", default=d.speedup_ratio, type=bounded(float, lo=1e-9),
             help="divide every step's simulated time by this")  # fmt: skip
    add_flag(parser, "--decode-speedup-ratio", default=d.decode_speedup_ratio,
             type=bounded(float, lo=1e-9),
             help="divide decode time by this (on top of --speedup-ratio)")  # fmt: skip
    add_flag(parser, "--preemption-mode", default=d.preemption_mode, choices=["lifo", "fifo"],
             help="which running request to preempt when KV blocks run out")  # fmt: skip
    add_flag(parser, "--max-model-len", default=None, type=bounded(int, lo=1),
             help="longest sequence in tokens (default: no limit)")  # fmt: skip


def _check(ok: bool, flag: str, message: str) -> None:
    if not ok:
        raise ConfigError(flag, message)

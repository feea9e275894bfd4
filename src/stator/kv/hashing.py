"""Block hashing, identical to NVIDIA Dynamo's (``lib/kv-router`` ``compute_block_hash``).

Tokens are split into full blocks of ``block_size`` tokens (a partial tail is not hashed).
Local block hash: ``xxh3_64(little-endian u32 token bytes, seed=1337)``.
Sequence hash: ``s[0] = local[0]``; ``s[i] = xxh3_64(LE u64 s[i-1] ++ LE u64 local[i], seed=1337)``.
All hashes are unsigned 64-bit ints.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import xxhash

HASH_SEED = 1337
TokenIds = Sequence[int] | npt.NDArray[np.integer[Any]]
"""A prompt: a list of token ids, or a numpy integer array (offline replay keeps prompts so)."""
_PACK_U64_PAIR = struct.Struct("<QQ").pack


def local_block_hashes(token_ids: TokenIds, block_size: int) -> list[int]:
    """Local hash of each full block of ``token_ids`` (``len // block_size`` hashes).

    Raises:
        ValueError: ``block_size`` < 1.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    num_blocks = len(token_ids) // block_size
    if num_blocks == 0:
        return []
    data = np.asarray(token_ids[: num_blocks * block_size], dtype="<u4").tobytes()
    step = 4 * block_size
    xxh = xxhash.xxh3_64_intdigest
    return [xxh(data[i : i + step], seed=HASH_SEED) for i in range(0, len(data), step)]


def sequence_hashes(local_hashes: Sequence[int]) -> list[int]:
    """Chain local block hashes into sequence hashes (each identifies the whole prefix)."""
    if not local_hashes:
        return []
    xxh, pack = xxhash.xxh3_64_intdigest, _PACK_U64_PAIR
    prev = local_hashes[0]
    out = [prev]
    for local in local_hashes[1:]:
        prev = xxh(pack(prev, local), seed=HASH_SEED)
        out.append(prev)
    return out


def block_sequence_hashes(token_ids: TokenIds, block_size: int) -> list[int]:
    """Sequence hashes of the full blocks of ``token_ids`` (router lookup keys)."""
    return sequence_hashes(local_block_hashes(token_ids, block_size))


def extend_sequence_hash(parent: int | None, local_hash: int) -> int:
    """The sequence hash of a block with local hash ``local_hash`` following ``parent``."""
    if parent is None:
        return local_hash
    return xxhash.xxh3_64_intdigest(_PACK_U64_PAIR(parent, local_hash), seed=HASH_SEED)

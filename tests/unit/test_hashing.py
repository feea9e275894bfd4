import struct

import pytest
import xxhash

from stator.kv.hashing import (
    block_sequence_hashes,
    extend_sequence_hash,
    local_block_hashes,
    sequence_hashes,
)


def _local(tokens: list[int]) -> int:
    return xxhash.xxh3_64_intdigest(struct.pack(f"<{len(tokens)}I", *tokens), seed=1337)


def test_local_hashes_match_hand_computed_vectors() -> None:
    tokens = [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert local_block_hashes(tokens, 4) == [_local([1, 2, 3, 4]), _local([5, 6, 7, 8])]


def test_sequence_hash_chain_matches_hand_computed() -> None:
    tokens = list(range(100, 112))
    locs = [_local(tokens[0:4]), _local(tokens[4:8]), _local(tokens[8:12])]
    s0 = locs[0]
    s1 = xxhash.xxh3_64_intdigest(struct.pack("<QQ", s0, locs[1]), seed=1337)
    s2 = xxhash.xxh3_64_intdigest(struct.pack("<QQ", s1, locs[2]), seed=1337)
    assert block_sequence_hashes(tokens, 4) == [s0, s1, s2]
    assert sequence_hashes(locs) == [s0, s1, s2]
    assert extend_sequence_hash(s1, locs[2]) == s2
    assert extend_sequence_hash(None, locs[0]) == s0


def test_partial_tail_is_not_hashed() -> None:
    assert block_sequence_hashes([1, 2, 3], 4) == []
    assert len(block_sequence_hashes(list(range(15)), 4)) == 3


def test_equal_prefixes_share_hashes_and_diverge_after() -> None:
    a = block_sequence_hashes([1] * 8 + [2] * 4, 4)
    b = block_sequence_hashes([1] * 8 + [3] * 4, 4)
    assert a[:2] == b[:2]
    assert a[2] != b[2]


def test_same_block_at_other_position_has_other_sequence_hash() -> None:
    h = block_sequence_hashes([7] * 8, 4)
    assert h[0] != h[1]


def test_large_token_ids_are_u32() -> None:
    assert local_block_hashes([2**32 - 1] * 2, 2) == [_local([2**32 - 1] * 2)]


def test_block_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="block_size"):
        local_block_hashes([1, 2], 0)

"""BlockPool: prefix hits, reference counts, LRU eviction order, capacity, KV events."""

from __future__ import annotations

import pytest

from stator.kv.block_pool import BlockPool, CachedBlock
from stator.protocols.kv_events import AllBlocksCleared, BlockRemoved, BlockStored


def _fill(pool: BlockPool, hashes: list[int], parent: int | None = None) -> list[CachedBlock]:
    """Allocate private blocks for ``hashes`` and cache them as one chain."""
    assert pool.allocate([], len(hashes)) == []
    blocks = []
    for h in hashes:
        blocks.append(pool.cache_block(h, parent, [h] * pool.block_size))
        parent = h
    return blocks


def test_prefix_match_counts_cached_and_active_blocks() -> None:
    pool = BlockPool(8, 2)
    blocks = _fill(pool, [1, 2, 3])
    assert pool.match_prefix([1, 2, 3, 4], 4).num_blocks == 3
    assert pool.match_prefix([1, 9, 3], 3).num_blocks == 1
    assert pool.match_prefix([1, 2, 3], 2).num_blocks == 2
    assert pool.match_prefix([1, 2, 3], 3).num_active == 3
    pool.release(blocks[::-1], 0)
    match = pool.match_prefix([1, 2, 3], 3)
    assert (match.num_blocks, match.num_active) == (3, 0)


def test_shared_block_is_not_evicted_while_referenced() -> None:
    pool = BlockPool(3, 2)
    first = _fill(pool, [1, 2])
    hits = pool.allocate([1], 0)
    assert hits is not None and hits[0].ref_count == 2
    pool.release(first[::-1], 0)  # block 1 still held by the second user
    assert pool.num_active == 1 and pool.num_inactive == 1
    # Two fresh blocks: one free + evict inactive block 2, never block 1.
    assert pool.allocate([], 2) is not None
    assert pool.contains(1) and not pool.contains(2)


def test_lru_evicts_oldest_release_first_and_tail_blocks_first() -> None:
    pool = BlockPool(4, 1)
    a = _fill(pool, [10, 11])
    b = _fill(pool, [20, 21])
    pool.release(a[::-1], 0)  # a released first: 11 then 10 enter the LRU
    pool.release(b[::-1], 0)
    order = []
    for _ in range(4):
        before = {h for h in (10, 11, 20, 21) if pool.contains(h)}
        assert pool.allocate([], 1) is not None
        order.extend(before - {h for h in (10, 11, 20, 21) if pool.contains(h)})
    assert order == [11, 10, 21, 20]


def test_reusing_an_inactive_block_refreshes_its_lru_position() -> None:
    pool = BlockPool(2, 1)
    a = _fill(pool, [1])
    b = _fill(pool, [2])
    pool.release(a, 0)
    pool.release(b, 0)  # LRU: 1, 2
    again = pool.allocate([1], 0)
    assert again is not None
    pool.release(again, 0)  # LRU: 2, 1
    assert pool.allocate([], 1) is not None
    assert pool.contains(1) and not pool.contains(2)


def test_allocate_fails_without_change_when_capacity_is_short() -> None:
    pool = BlockPool(3, 1)
    blocks = _fill(pool, [1, 2])
    pool.release(blocks[::-1], 0)
    # 3 fresh blocks while pinning block 1: only 1 free + 1 evictable (block 2) remain.
    assert pool.allocate([1], 3) is None
    assert (pool.num_active, pool.num_inactive, pool.num_free) == (0, 2, 1)
    assert pool.allocate([1], 2) is not None
    assert pool.contains(1) and not pool.contains(2)


def test_private_blocks_free_immediately_and_count_as_active() -> None:
    pool = BlockPool(4, 1)
    assert pool.allocate([], 3) == []
    assert (pool.num_active, pool.num_free) == (3, 1)
    assert pool.usage == pytest.approx(0.75)
    pool.release([], 3)
    assert (pool.num_active, pool.num_free, pool.num_inactive) == (0, 4, 0)
    with pytest.raises(ValueError):
        pool.release([], 1)


def test_stored_events_merge_a_chain_with_parent_and_token_ids() -> None:
    pool = BlockPool(8, 2)
    _fill(pool, [1, 2], parent=None)
    _fill(pool, [7], parent=5)
    events = pool.take_events()
    assert events == [
        BlockStored(
            block_hashes=[1, 2], parent_block_hash=None, token_ids=[1, 1, 2, 2], block_size=2
        ),
        BlockStored(block_hashes=[7], parent_block_hash=5, token_ids=[7, 7], block_size=2),
    ]
    assert pool.take_events() == []


def test_removed_event_only_when_the_last_copy_goes() -> None:
    pool = BlockPool(2, 1)
    a = _fill(pool, [1])
    b = _fill(pool, [1])  # a second physical copy of the same hash
    assert [type(e) for e in pool.take_events()] == [BlockStored]
    pool.release(a, 0)
    pool.release(b, 0)
    assert pool.allocate([], 1) is not None  # evicts one copy: hash still cached
    assert pool.contains(1) and pool.take_events() == []
    assert pool.allocate([], 1) is not None  # evicts the last copy
    assert not pool.contains(1)
    assert pool.take_events() == [BlockRemoved(block_hashes=[1])]


def test_clear_drops_hashes_and_records_all_cleared() -> None:
    pool = BlockPool(4, 1)
    used = _fill(pool, [1])
    idle = _fill(pool, [2])
    pool.release(idle, 0)
    pool.take_events()
    pool.clear()
    assert pool.take_events() == [AllBlocksCleared()]
    assert not pool.contains(1) and not pool.contains(2)
    assert (pool.num_active, pool.num_inactive) == (1, 0)
    pool.release(used, 0)  # a block in use at clear time is freed, not cached
    assert (pool.num_active, pool.num_inactive, pool.num_free) == (0, 0, 4)


def test_dump_lists_parents_before_children() -> None:
    pool = BlockPool(8, 1)
    _fill(pool, [1, 2, 3])
    _fill(pool, [4], parent=2)
    dump = pool.dump()
    order = [e.block_hashes[0] for e in dump]
    assert sorted(order) == [1, 2, 3, 4]
    assert order.index(1) < order.index(2) < order.index(3)
    assert order.index(2) < order.index(4)
    assert {e.block_hashes[0]: e.parent_block_hash for e in dump} == {1: None, 2: 1, 3: 2, 4: 2}


def test_no_events_recorded_when_disabled() -> None:
    pool = BlockPool(2, 1, record_events=False)
    blocks = _fill(pool, [1])
    pool.release(blocks, 0)
    pool.allocate([], 2)
    assert pool.take_events() == []


def test_cache_block_needs_a_private_block() -> None:
    pool = BlockPool(2, 1)
    with pytest.raises(ValueError):
        pool.cache_block(1, None, [1])


def test_cache_chain_records_runs_of_new_hashes() -> None:
    pool = BlockPool(8, 2)
    _fill(pool, [2], parent=1)
    pool.take_events()
    assert pool.allocate([], 3) == []
    blocks = pool.cache_chain([1, 2, 3], None, [1, 1, 2, 2, 3, 3])
    assert [b.parent_hash for b in blocks] == [None, 1, 2]
    assert pool.take_events() == [
        BlockStored(block_hashes=[1], parent_block_hash=None, token_ids=[1, 1], block_size=2),
        BlockStored(block_hashes=[3], parent_block_hash=2, token_ids=[3, 3], block_size=2),
    ]
    assert (pool.num_active, pool.num_cached_hashes) == (4, 3)
    with pytest.raises(ValueError):
        pool.cache_chain([9], 3, None)

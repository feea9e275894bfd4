from stator.protocols.kv_events import (
    AllBlocksCleared,
    BlockRemoved,
    BlockStored,
    KvCacheDump,
    KvEventBatch,
)
from stator.router.indexer import GROUP_BITS, KvIndexer


def _stored(hashes: list[int], parent: int | None = None) -> BlockStored:
    return BlockStored(block_hashes=hashes, parent_block_hash=parent, token_ids=[], block_size=4)


def _batch(worker: int, event_id: int, *events: object) -> KvEventBatch:
    return KvEventBatch(worker_id=worker, event_id=event_id, events=list(events))  # type: ignore[arg-type]


def test_scores_are_consecutive_matches_from_block_zero() -> None:
    idx = KvIndexer()
    idx.apply_event_batch(_batch(1, 0, _stored([10, 11, 12])))
    idx.apply_event_batch(_batch(2, 0, _stored([10, 11])))
    idx.apply_event_batch(_batch(3, 0, _stored([11, 12])))  # holds later blocks, not block 0
    found = idx.find_matches([10, 11, 12, 13])
    assert found.scores == {1: 3, 2: 2}
    assert found.tree_sizes == {1: 3, 2: 2, 3: 2}


def test_a_hole_stops_the_match() -> None:
    idx = KvIndexer()
    idx.store_blocks(1, [10, 12])
    assert idx.find_matches([10, 11, 12]).scores == {1: 1}
    assert idx.find_matches([]).scores == {}
    assert idx.find_matches([99]).scores == {}


def test_removed_and_cleared_blocks_no_longer_match() -> None:
    idx = KvIndexer()
    idx.apply_event_batch(_batch(1, 0, _stored([10, 11, 12])))
    idx.apply_event_batch(_batch(2, 0, _stored([10, 11, 12])))
    idx.apply_event_batch(_batch(1, 1, BlockRemoved(block_hashes=[12, 999])))
    assert idx.find_matches([10, 11, 12]).scores == {1: 2, 2: 3}
    assert idx.num_blocks(1) == 2
    idx.apply_event_batch(_batch(2, 1, AllBlocksCleared()))
    assert idx.find_matches([10, 11, 12]).scores == {1: 2}
    assert idx.num_blocks(2) == 0
    assert len(idx) == 2


def test_restoring_a_block_is_idempotent() -> None:
    idx = KvIndexer()
    idx.store_blocks(1, [10, 11])
    idx.store_blocks(1, [10, 11])
    assert idx.num_blocks(1) == 2
    idx.remove_blocks(1, [10, 11])
    assert idx.num_blocks(1) == 0
    assert len(idx) == 0


def test_remove_worker_drops_all_its_blocks_and_reuses_its_slot() -> None:
    idx = KvIndexer()
    idx.store_blocks(1, [10, 11])
    idx.store_blocks(2, [10])
    idx.remove_worker(1)
    idx.remove_worker(1)
    assert idx.find_matches([10, 11]).scores == {2: 1}
    assert 1 not in idx.find_matches([10]).tree_sizes
    idx.add_worker(3)  # takes worker 1's freed slot: must start empty
    assert idx.find_matches([10, 11]).scores == {2: 1}
    assert idx.num_blocks(3) == 0


def test_many_workers_across_bitmask_groups() -> None:
    idx = KvIndexer()
    n = 3 * GROUP_BITS + 5
    for w in range(n):
        idx.store_blocks(w, [1, 2, 3][: 1 + w % 3])
    scores = idx.find_matches([1, 2, 3]).scores
    assert scores == {w: 1 + w % 3 for w in range(n)}
    for w in range(0, n, 2):
        idx.remove_worker(w)
    assert idx.find_matches([1, 2, 3]).scores == {w: 1 + w % 3 for w in range(1, n, 2)}


def test_gap_asks_for_a_dump_once_and_dump_replaces_state() -> None:
    idx = KvIndexer()
    assert idx.apply_event_batch(_batch(1, 5, _stored([10]))) is False  # baseline
    assert idx.apply_event_batch(_batch(1, 6, _stored([11], 10))) is False
    assert idx.apply_event_batch(_batch(1, 9, _stored([12], 11))) is True  # 7, 8 lost
    assert idx.awaiting_dump(1)
    assert idx.apply_event_batch(_batch(1, 10, _stored([20]))) is False  # no second request
    assert idx.apply_event_batch(_batch(1, 12, _stored([21]))) is False
    # the dump was taken at event 10: it holds 10, 11, 30 and 20 (the lost events stored 30)
    dump = KvCacheDump(
        worker_id=1, event_id=10, events=[_stored([10, 11]), _stored([30]), _stored([20])]
    )
    idx.apply_dump(dump)
    assert not idx.awaiting_dump(1)
    assert idx.find_matches([10, 11, 12]).scores == {1: 2}  # 12 is not in the dump
    assert idx.find_matches([30]).scores == {1: 1}
    assert idx.find_matches([21]).scores == {1: 1}  # batch 12 re-applied on top of the dump
    assert idx.num_blocks(1) == 5


def test_duplicate_and_old_batches_are_ignored() -> None:
    idx = KvIndexer()
    idx.apply_event_batch(_batch(1, 0, _stored([10])))
    idx.apply_event_batch(_batch(1, 1, BlockRemoved(block_hashes=[10])))
    assert idx.apply_event_batch(_batch(1, 0, _stored([10]))) is False
    assert idx.find_matches([10]).scores == {}


def test_unknown_worker_events_add_the_worker() -> None:
    idx = KvIndexer()
    idx.apply_event_batch(_batch(42, 0, _stored([1])))
    assert idx.worker_ids() == [42]
    idx.remove_blocks(7, [1])  # unknown worker: ignored
    assert idx.find_matches([1]).scores == {42: 1}

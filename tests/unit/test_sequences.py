import pytest

from stator.router.sequences import ActiveSequences


def test_shared_blocks_count_once_and_release_with_last_user() -> None:
    seqs = ActiveSequences(block_size=4)
    seqs.book("r1", 7, [1, 2, 3], isl=12, overlap_blocks=0, now_s=0.0)
    assert seqs.active_decode_blocks(7) == 3
    assert seqs.active_prefill_tokens(7) == 12
    seqs.book("r2", 7, [4], isl=4, overlap_blocks=0, now_s=0.0)
    assert seqs.active_decode_blocks(7) == 4
    seqs.book("r3", 7, [1, 2, 3, 4], isl=16, overlap_blocks=4, now_s=0.0)
    assert seqs.active_decode_blocks(7) == 4
    assert seqs.active_prefill_tokens(7) == 16  # r3 fully cached: 0 new prefill tokens
    seqs.free("r2")
    assert seqs.active_decode_blocks(7) == 4  # block 4 still held by r3
    seqs.free("r3")
    assert seqs.active_decode_blocks(7) == 3
    seqs.free("r1")
    assert (seqs.active_decode_blocks(7), seqs.active_prefill_tokens(7)) == (0, 0)
    assert seqs.num_active_requests(7) == 0


def test_new_blocks_counts_only_blocks_not_booked_on_that_worker() -> None:
    seqs = ActiveSequences(block_size=2)
    seqs.book("a", 1, [10, 11], isl=4, overlap_blocks=0, now_s=0.0)
    assert seqs.new_blocks(1, [10, 11, 12]) == 1
    assert seqs.new_blocks(2, [10, 11, 12]) == 3


def test_prefill_tokens_released_at_first_token_once() -> None:
    seqs = ActiveSequences(block_size=4)
    seqs.book("a", 1, [1, 2], isl=10, overlap_blocks=1, now_s=0.0)
    assert seqs.active_prefill_tokens(1) == 6
    seqs.mark_prefill_done("a")
    seqs.mark_prefill_done("a")
    assert seqs.active_prefill_tokens(1) == 0
    assert seqs.active_decode_blocks(1) == 2
    assert seqs.free("a") is True
    assert seqs.free("a") is False
    assert seqs.active_prefill_tokens(1) == 0


def test_overlap_beyond_isl_clamps_prefill_at_zero() -> None:
    seqs = ActiveSequences(block_size=4)
    assert seqs.prefill_tokens_for(isl=5, overlap_blocks=3) == 0


def test_stale_bookings_expire_after_ttl() -> None:
    seqs = ActiveSequences(block_size=4, ttl_s=10.0)
    seqs.book("old", 1, [1], isl=4, overlap_blocks=0, now_s=0.0)
    seqs.book("new", 1, [2], isl=4, overlap_blocks=0, now_s=5.0)
    assert seqs.expire(9.0) == []
    assert seqs.expire(10.0) == ["old"]
    assert seqs.active_decode_blocks(1) == 1
    seqs.book("newer", 1, [3], isl=4, overlap_blocks=0, now_s=16.0)  # expires "new" lazily
    assert seqs.worker_of("new") is None
    assert seqs.worker_of("newer") == 1


def test_remove_worker_drops_its_bookings() -> None:
    seqs = ActiveSequences(block_size=4)
    seqs.book("a", 1, [1], isl=4, overlap_blocks=0, now_s=0.0)
    seqs.book("b", 2, [1], isl=4, overlap_blocks=0, now_s=0.0)
    assert seqs.remove_worker(1) == ["a"]
    assert seqs.worker_of("a") is None
    assert seqs.active_decode_blocks(2) == 1
    assert len(seqs) == 1


def test_duplicate_booking_and_bad_arguments_raise() -> None:
    seqs = ActiveSequences(block_size=4)
    seqs.book("a", 1, [], isl=0, overlap_blocks=0, now_s=0.0)
    with pytest.raises(ValueError, match="already booked"):
        seqs.book("a", 1, [], isl=0, overlap_blocks=0, now_s=0.0)
    with pytest.raises(ValueError):
        ActiveSequences(block_size=0)
    with pytest.raises(ValueError):
        ActiveSequences(block_size=4, ttl_s=0)

import pytest

from stator.router.approx import ApproxKvIndexer


def test_routed_prefix_matches_until_ttl() -> None:
    idx = ApproxKvIndexer(ttl_s=10.0)
    idx.record_routed(1, [1, 2, 3], now_s=0.0)
    assert idx.find_matches([1, 2, 3, 4], now_s=9.9).scores == {1: 3}
    assert idx.find_matches([1, 2, 3, 4], now_s=10.0).scores == {}
    assert idx.index.num_blocks(1) == 0


def test_reuse_refreshes_only_the_reused_blocks() -> None:
    idx = ApproxKvIndexer(ttl_s=10.0)
    idx.record_routed(1, [1, 2, 3], now_s=0.0)
    idx.record_routed(1, [1, 2], now_s=8.0)
    assert idx.find_matches([1, 2, 3], now_s=12.0).scores == {1: 2}
    assert idx.index.num_blocks(1) == 2
    assert idx.expire(18.0) == 2
    assert idx.index.num_blocks(1) == 0


def test_workers_are_independent_and_removal_forgets() -> None:
    idx = ApproxKvIndexer(ttl_s=5.0)
    idx.record_routed(1, [1, 2], now_s=0.0)
    idx.record_routed(2, [1], now_s=3.0)
    assert idx.find_matches([1, 2], now_s=4.0).scores == {1: 2, 2: 1}
    assert idx.find_matches([1, 2], now_s=6.0).scores == {2: 1}
    idx.remove_worker(2)
    assert idx.find_matches([1, 2], now_s=6.0).scores == {}
    assert idx.expire(100.0) == 0  # queued entries of a removed worker are skipped


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ApproxKvIndexer(ttl_s=0.0)

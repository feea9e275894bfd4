import random

import pytest

from stator.router.selector import (
    WorkerCandidate,
    select_worker,
    softmax_probabilities,
    worker_logit,
)

B = 16


def _cand(
    w: int, *, overlap: int = 0, cached: int = 0, prefill: int = 0, decode: int = 0, new: int = 0
) -> WorkerCandidate:
    return WorkerCandidate(w, overlap, cached, prefill, decode, new)


def test_logit_matches_the_design_formula() -> None:
    c = _cand(1, overlap=2, prefill=40, decode=7, new=3)
    # w * (40 + max(0, 100 - 2*16)) / 16 + 7 + 3 with w = 0.5
    assert worker_logit(c, isl=100, block_size=B, overlap_weight=0.5) == pytest.approx(
        0.5 * (40 + 68) / 16 + 10
    )
    assert worker_logit(_cand(1, overlap=10), isl=20, block_size=B, overlap_weight=1.0) == 0.0


def test_temperature_zero_picks_lowest_logit() -> None:
    cands = [_cand(1, overlap=0), _cand(2, overlap=4), _cand(3, overlap=2)]
    chosen = select_worker(cands, isl=64, block_size=B)
    assert (chosen.worker_id, chosen.overlap_blocks) == (2, 4)


def test_load_can_outweigh_overlap() -> None:
    cands = [_cand(1, overlap=4, decode=100), _cand(2, overlap=0)]
    assert select_worker(cands, isl=64, block_size=B).worker_id == 2
    # with a large overlap weight the prefill saving dominates again
    assert select_worker(cands, isl=64, block_size=B, overlap_weight=50.0).worker_id == 1


def test_ties_go_to_fewest_cached_blocks_then_random() -> None:
    cands = [_cand(1, cached=50), _cand(2, cached=10), _cand(3, cached=30)]
    assert select_worker(cands, isl=32, block_size=B).worker_id == 2
    even = [_cand(1, cached=5), _cand(2, cached=5)]
    rng = random.Random(0)
    picks = {select_worker(even, isl=32, block_size=B, rng=rng).worker_id for _ in range(50)}
    assert picks == {1, 2}


def test_softmax_probabilities_follow_normalised_logits() -> None:
    probs = softmax_probabilities([0.0, 10.0], temperature=1.0)
    assert probs[0] / probs[1] == pytest.approx(2.718281828, rel=1e-6)
    assert softmax_probabilities([3.0, 3.0, 3.0], temperature=0.5) == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError):
        softmax_probabilities([1.0], temperature=0.0)


def test_positive_temperature_samples_lower_logits_more_often() -> None:
    cands = [_cand(1, overlap=4), _cand(2, overlap=0)]
    rng = random.Random(1)
    picks = [
        select_worker(cands, isl=64, block_size=B, temperature=0.5, rng=rng).worker_id
        for _ in range(2000)
    ]
    share = picks.count(1) / len(picks)
    # p(1) = 1 / (1 + exp(-2)) ~ 0.88 for two workers at the logit extremes with T = 0.5
    assert 0.83 < share < 0.93


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError):
        select_worker([], isl=1, block_size=B)
    with pytest.raises(ValueError):
        select_worker([_cand(1)], isl=1, block_size=B, temperature=-1.0)
    with pytest.raises(ValueError):
        worker_logit(_cand(1), isl=1, block_size=0, overlap_weight=1.0)

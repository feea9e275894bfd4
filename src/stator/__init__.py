"""stator: distributed LLM inference serving (OpenAI frontend, KV-aware router, engine workers)."""

__version__ = "0.1.0"

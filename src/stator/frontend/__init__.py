"""The OpenAI-compatible HTTP frontend (``python -m stator.frontend``)."""

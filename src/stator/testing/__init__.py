"""Test helpers: the tiny offline model (:mod:`stator.testing.tiny_model`) and its chat template
(:mod:`stator.testing.chatml`)."""

"""Benchmarks: ``stator bench runtime|frontend|indexer|replay``."""

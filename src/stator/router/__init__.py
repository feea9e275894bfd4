"""Routers: pick a worker per request (kv, round-robin, random, power-of-two, least-loaded,
direct). The core (indexer, load tracking, selection, queue) does no I/O."""

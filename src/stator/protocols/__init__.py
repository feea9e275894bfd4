"""Wire types only: msgspec structs exchanged between stator processes.

Every struct here is versioned through ``PROTOCOL_VERSION``; ``stator schema`` prints their JSON
Schema (``schema.py``).
"""

PROTOCOL_VERSION = "1.0"

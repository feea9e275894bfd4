"""The distributed runtime: addressing, discovery, request plane, event plane.

Three verbs: ``runtime.endpoint("ns.comp.ep")`` → ``.serve(handler)`` and ``.client()``.
Backends are pluggable behind small ABCs (``discovery.base``, ``request_plane.base``,
``event_plane.base``); embedded ones (mem, file, tcp, zmq) need nothing installed.
"""

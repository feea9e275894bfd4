"""Relay of vLLM's ZMQ KV-event stream onto stator's event plane, and the dump it serves.

vLLM's engine core publishes its KV events on a ZMQ PUB socket (``KVEventsConfig`` publisher
``zmq``). The relay connects a SUB socket to it, converts each batch (``kv_events``), and
publishes a ``KvEventBatch`` with this worker's id and its own ``event_id`` (+1 per published
batch, from 1) on ``kv-events`` (worker ↔ router conventions). ``dump()`` answers the
``kv_dump`` endpoint from the same state, valid as of the last published ``event_id``.

The default endpoint is a private ``ipc://`` socket in a fresh temp directory that vLLM *binds*
(vLLM binds wildcard and ipc endpoints and connects to the rest); no TCP port is taken, so
several workers on one machine never clash. The SUB side connects first: ZMQ retries until
vLLM's engine has bound it. (A SUB that binds while vLLM's PUB connects loses messages: PUB
learns the subscription late, libzmq issue #2267.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Awaitable, Callable

import zmq
import zmq.asyncio

from stator.protocols.kv_events import KvCacheDump, KvEventBatch
from stator.vllm.kv_events import KvEventConverter, KvEventDecodeError, decode_vllm_batch

log = logging.getLogger(__name__)

VLLM_TOPIC = "kv-events"
"""Topic vLLM publishes under (our choice, passed in ``KVEventsConfig.topic``)."""

PublishBatch = Callable[[KvEventBatch], Awaitable[None]]


class RelayCore:
    """The relay without sockets: vLLM multipart messages in, stator batches out.

    ``event_id``: id of the last batch produced (0 before the first). Counters:
    ``num_seq_gaps`` (vLLM sequence numbers skipped), ``num_bad_batches`` (malformed
    messages skipped), ``num_events_in`` (vLLM events read).
    """

    def __init__(self, worker_id: int = 0) -> None:
        self.worker_id = worker_id
        self.converter = KvEventConverter()
        self.event_id = 0
        self.num_seq_gaps = 0
        self.num_bad_batches = 0
        self.num_events_in = 0
        self._next_seq: int | None = None

    def handle(self, frames: list[bytes]) -> KvEventBatch | None:
        """Convert one multipart message ``[topic, seq, payload]``; the batch to publish, if
        it holds any event. Malformed messages are logged and skipped."""
        if len(frames) != 3:
            self.num_bad_batches += 1
            log.warning("vLLM KV events: expected 3 frames, got %d", len(frames))
            return None
        self._check_seq(int.from_bytes(frames[1], "big"))
        try:
            vllm_batch = decode_vllm_batch(frames[2])
        except KvEventDecodeError as exc:
            self.num_bad_batches += 1
            log.warning("vLLM KV events: bad batch skipped: %s", exc)
            return None
        self.num_events_in += len(vllm_batch.events)
        events = self.converter.convert(vllm_batch.events)
        if not events:
            return None
        self.event_id += 1
        return KvEventBatch(
            worker_id=self.worker_id,
            event_id=self.event_id,
            events=events,
            timestamp_s=vllm_batch.ts,
            dp_rank=vllm_batch.dp_rank,
        )

    def dump(self) -> KvCacheDump:
        """The tracked cache as ``BlockStored`` events, valid as of ``event_id``."""
        return KvCacheDump(
            worker_id=self.worker_id, event_id=self.event_id, events=self.converter.dump()
        )

    def _check_seq(self, seq: int) -> None:
        if self._next_seq is not None and seq != self._next_seq:
            self.num_seq_gaps += 1
            log.warning("vLLM KV events: sequence gap (expected %d, got %d)", self._next_seq, seq)
        self._next_seq = seq + 1


class KvEventRelay:
    """Reads one vLLM engine's KV events and republishes them as stator batches.

    Make with ``KvEventRelay.open(endpoint)`` before the engine starts; ``start(publish,
    worker_id)`` once the runtime is up; ``close()`` at the end. ``endpoint`` is what vLLM's
    ``KVEventsConfig.endpoint`` must be set to. ``core`` holds the state and counters.
    """

    def __init__(self, endpoint: str, socket: zmq.asyncio.Socket, temp_dir: str | None) -> None:
        self.endpoint = endpoint
        self.core = RelayCore()
        self._socket = socket
        self._temp_dir = temp_dir
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, endpoint: str = "") -> KvEventRelay:
        """Connect a SUB socket to ``endpoint`` (``""``: a fresh private ipc socket)."""
        temp_dir = None
        if not endpoint:
            temp_dir = tempfile.mkdtemp(prefix="stator-vllm-kv-")
            endpoint = f"ipc://{os.path.join(temp_dir, 'events.sock')}"
        sub_endpoint = endpoint.replace("tcp://*:", "tcp://127.0.0.1:")
        socket = zmq.asyncio.Context.instance().socket(zmq.SUB)
        socket.setsockopt(zmq.RCVHWM, 0)  # never drop on our side: a lost batch means a gap
        socket.setsockopt(zmq.SUBSCRIBE, VLLM_TOPIC.encode())
        socket.connect(sub_endpoint)
        return cls(endpoint, socket, temp_dir)

    def start(self, publish: PublishBatch, worker_id: int) -> None:
        """Start relaying: ``publish`` gets each converted batch, stamped ``worker_id``."""
        self.core.worker_id = worker_id
        self._task = asyncio.create_task(self._run(publish), name="vllm kv-event relay")

    def dump(self) -> KvCacheDump:
        """``core.dump()``."""
        return self.core.dump()

    async def close(self) -> None:
        """Stop relaying and close the socket (and the private socket's directory)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._socket.close(linger=0)
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    async def _run(self, publish: PublishBatch) -> None:
        while True:
            frames = await self._socket.recv_multipart()
            batch = self.core.handle(frames)
            if batch is not None:
                try:
                    await publish(batch)
                except Exception:
                    log.exception("publishing KV event batch %d failed", batch.event_id)

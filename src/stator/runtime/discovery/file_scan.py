"""Scanning a ``file`` discovery directory: which keys are live, which leases are stale.

A ``Scanner`` lists ``keys/`` and ``leases/`` and re-reads only key files whose identity
(inode, mtime, size) changed since its last scan, so polling every ~150 ms stays cheap. Keys are
listed *before* leases: a writer creates its lease file before any key bound to it, so a key seen
in the listing whose lease is absent from the later lease listing really has no lease.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field

import msgspec

from stator.runtime.discovery.base import DEFAULT_LEASE_TTL_S, WatchEvent, WatchEventKind
from stator.runtime.discovery.file_layout import (
    KEYS_DIR,
    LEASES_DIR,
    TMP_DIR,
    FileIdent,
    KeyRecord,
    LeaseRecord,
    is_fresh,
    lease_file_name,
    lease_id_from_name,
    list_dir,
    read_file,
    unlink_quiet,
)

TMP_MAX_AGE_S = 60.0
"""Scratch files older than this (s) are leftovers of a writer that died mid-write."""


@dataclass(frozen=True, slots=True)
class LiveEntry:
    """A live key: the identity of its file version and its record."""

    ident: FileIdent
    record: KeyRecord


@dataclass(slots=True)
class ScanResult:
    """One scan: live keys, key files bound to dead leases, and stale lease files."""

    live: dict[str, LiveEntry] = field(default_factory=dict)
    dead_key_files: list[tuple[str, int]] = field(default_factory=list)  # (file name, lease id)
    stale_leases: list[int] = field(default_factory=list)


class Scanner:
    """Reads the state of one discovery directory; caches decoded records by file identity."""

    def __init__(self, root: str) -> None:
        self._keys_dir = os.path.join(root, KEYS_DIR)
        self._leases_dir = os.path.join(root, LEASES_DIR)
        self._tmp_dir = os.path.join(root, TMP_DIR)
        self._records: dict[str, tuple[FileIdent, KeyRecord]] = {}
        self._lease_ttls: dict[int, float] = {}
        self._key_decoder = msgspec.msgpack.Decoder(KeyRecord)
        self._lease_decoder = msgspec.msgpack.Decoder(LeaseRecord)

    def scan(self) -> ScanResult:
        """List the directory and classify every key and lease (blocking file I/O, ~µs/file)."""
        key_files = list_dir(self._keys_dir)
        records = self._read_changed(key_files)
        fresh, stale = self._classify_leases(list_dir(self._leases_dir), time.time())
        result = ScanResult(stale_leases=stale)
        for name, (ident, record) in records.items():
            if record.lease_id in fresh:
                result.live[record.key] = LiveEntry(ident, record)
            else:
                result.dead_key_files.append((name, record.lease_id))
        return result

    def lease_is_live(self, lease_id: int) -> bool:
        """True while the lease file exists and its heartbeat is within its TTL."""
        path = os.path.join(self._leases_dir, lease_file_name(lease_id))
        try:
            mtime = os.stat(path).st_mtime
        except FileNotFoundError:
            return False
        return is_fresh(mtime, self._lease_ttl(lease_id))

    def decode_key_file(self, data: bytes) -> KeyRecord | None:
        """The record in a key file's bytes, or ``None`` if it is not one."""
        try:
            return self._key_decoder.decode(data)
        except msgspec.DecodeError:
            return None

    def sweep(self, result: ScanResult) -> None:
        """Delete stale lease files and key files whose lease is missing or stale.

        Each file is re-checked just before it is removed, so a key rewritten under a live lease
        (or a lease whose owner heartbeated meanwhile) survives.
        """
        for lease_id in result.stale_leases:
            if not self.lease_is_live(lease_id):
                unlink_quiet(os.path.join(self._leases_dir, lease_file_name(lease_id)))
        for name, lease_id in result.dead_key_files:
            path = os.path.join(self._keys_dir, name)
            data = read_file(path)
            record = None if data is None else self.decode_key_file(data)
            bound = record is not None and record.lease_id == lease_id
            if bound and not self.lease_is_live(lease_id):
                unlink_quiet(path)

    def sweep_tmp(self, max_age_s: float = TMP_MAX_AGE_S) -> None:
        """Delete scratch files older than ``max_age_s`` (left by writers killed mid-write)."""
        now = time.time()
        for name, (_ident, mtime) in list_dir(self._tmp_dir).items():
            if now - mtime > max_age_s:
                unlink_quiet(os.path.join(self._tmp_dir, name))

    def _read_changed(
        self, key_files: dict[str, tuple[FileIdent, float]]
    ) -> dict[str, tuple[FileIdent, KeyRecord]]:
        records: dict[str, tuple[FileIdent, KeyRecord]] = {}
        for name, (ident, _mtime) in key_files.items():
            cached = self._records.get(name)
            if cached is not None and cached[0] == ident:
                records[name] = cached
                continue
            data = read_file(os.path.join(self._keys_dir, name))
            record = None if data is None else self.decode_key_file(data)
            if record is not None:
                records[name] = (ident, record)
        self._records = records
        return records

    def _classify_leases(
        self, lease_files: dict[str, tuple[FileIdent, float]], now_s: float
    ) -> tuple[set[int], list[int]]:
        fresh: set[int] = set()
        stale: list[int] = []
        for name, (_ident, mtime) in lease_files.items():
            lease_id = lease_id_from_name(name)
            if lease_id is None:
                continue
            if is_fresh(mtime, self._lease_ttl(lease_id), now_s):
                fresh.add(lease_id)
            else:
                stale.append(lease_id)
        listed = {lease_id_from_name(n) for n in lease_files}
        self._lease_ttls = {k: v for k, v in self._lease_ttls.items() if k in listed}
        return fresh, stale

    def _lease_ttl(self, lease_id: int) -> float:
        ttl = self._lease_ttls.get(lease_id)
        if ttl is None:
            data = read_file(os.path.join(self._leases_dir, lease_file_name(lease_id)))
            ttl = DEFAULT_LEASE_TTL_S
            if data is not None:
                with contextlib.suppress(msgspec.DecodeError):
                    ttl = self._lease_decoder.decode(data).ttl_s
                self._lease_ttls[lease_id] = ttl
        return ttl


def diff_live(old: dict[str, LiveEntry], new: dict[str, LiveEntry]) -> list[WatchEvent]:
    """Watch events turning ``old`` into ``new``: PUT for new or rewritten keys, DELETE for gone.

    Sorted by key within each kind (PUTs first).
    """
    events = [
        WatchEvent(WatchEventKind.PUT, key, entry.record.value)
        for key, entry in sorted(new.items())
        if (prev := old.get(key)) is None or prev.ident != entry.ident
    ]
    events += [WatchEvent(WatchEventKind.DELETE, key, None) for key in sorted(old.keys() - new)]
    return events

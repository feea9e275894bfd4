"""The ``file`` discovery backend's on-disk rules: key names, liveness, sweeping, diffs."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import msgspec
import pytest

from stator.errors import InvalidRequestError
from stator.runtime.discovery.base import WatchEvent, WatchEventKind
from stator.runtime.discovery.file import FileDiscovery
from stator.runtime.discovery.file_layout import (
    KEYS_DIR,
    LEASES_DIR,
    TMP_DIR,
    FileIdent,
    KeyRecord,
    LeaseRecord,
    atomic_write,
    decode_key,
    encode_key,
    lease_file_name,
    make_dirs,
    new_lease_id,
)
from stator.runtime.discovery.file_scan import LiveEntry, Scanner, diff_live

ENC = msgspec.msgpack.Encoder()


@pytest.mark.parametrize(
    "key", ["v1/instances/ns/c/e/1a", "a%2Fb", "../../etc/passwd", ".hidden", "ключ/🙂", "a b"]
)
def test_key_file_names_are_flat_and_round_trip(key: str) -> None:
    name = encode_key(key)
    assert "/" not in name
    assert not name.startswith(".")
    assert decode_key(name) == key


def test_bad_keys_are_rejected() -> None:
    with pytest.raises(InvalidRequestError):
        encode_key("")
    with pytest.raises(InvalidRequestError, match="too long"):
        encode_key("k/" * 200)


def test_lease_ids_are_positive_and_json_safe() -> None:
    ids = {new_lease_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(0 < i < 2**53 for i in ids)


def _write_key(root: Path, key: str, lease_id: int, value: bytes = b"v") -> None:
    data = ENC.encode(KeyRecord(key=key, lease_id=lease_id, value=value))
    atomic_write(str(root), str(root / KEYS_DIR / encode_key(key)), data)


def _write_lease(root: Path, lease_id: int, ttl_s: float, age_s: float = 0.0) -> None:
    path = root / LEASES_DIR / lease_file_name(lease_id)
    atomic_write(str(root), str(path), ENC.encode(LeaseRecord(ttl_s=ttl_s, pid=1)))
    then = time.time() - age_s
    os.utime(path, (then, then))


def test_scan_shows_only_keys_with_fresh_leases(tmp_path: Path) -> None:
    make_dirs(str(tmp_path))
    _write_lease(tmp_path, 1, ttl_s=5.0)
    _write_lease(tmp_path, 2, ttl_s=5.0, age_s=6.0)  # stale
    _write_key(tmp_path, "k/fresh", 1)
    _write_key(tmp_path, "k/stale", 2)
    _write_key(tmp_path, "k/orphan", 3)  # no lease file
    (tmp_path / KEYS_DIR / "garbage").write_bytes(b"\xff\x00not msgpack")
    result = Scanner(str(tmp_path)).scan()
    assert set(result.live) == {"k/fresh"}
    assert sorted(lid for _name, lid in result.dead_key_files) == [2, 3]
    assert result.stale_leases == [2]


def test_sweep_removes_dead_keys_and_stale_leases(tmp_path: Path) -> None:
    make_dirs(str(tmp_path))
    _write_lease(tmp_path, 1, ttl_s=5.0)
    _write_lease(tmp_path, 2, ttl_s=1.0, age_s=2.0)
    _write_key(tmp_path, "k/fresh", 1)
    _write_key(tmp_path, "k/stale", 2)
    scanner = Scanner(str(tmp_path))
    scanner.sweep(scanner.scan())
    assert os.listdir(tmp_path / KEYS_DIR) == [encode_key("k/fresh")]
    assert os.listdir(tmp_path / LEASES_DIR) == [lease_file_name(1)]


def test_sweep_spares_a_key_rebound_to_a_live_lease(tmp_path: Path) -> None:
    make_dirs(str(tmp_path))
    _write_lease(tmp_path, 1, ttl_s=5.0)
    _write_key(tmp_path, "k", 2)  # lease 2 is missing ...
    scanner = Scanner(str(tmp_path))
    result = scanner.scan()
    _write_key(tmp_path, "k", 1)  # ... but the key is rewritten under lease 1 before the sweep
    scanner.sweep(result)
    assert set(scanner.scan().live) == {"k"}


def test_atomic_write_leaves_no_temp_files(tmp_path: Path) -> None:
    make_dirs(str(tmp_path))
    for i in range(5):
        _write_key(tmp_path, "k", 1, value=str(i).encode())
    assert os.listdir(tmp_path / TMP_DIR) == []
    assert len(os.listdir(tmp_path / KEYS_DIR)) == 1


def test_sweep_tmp_removes_only_old_scratch_files(tmp_path: Path) -> None:
    make_dirs(str(tmp_path))
    old, new = tmp_path / TMP_DIR / "old", tmp_path / TMP_DIR / "new"
    old.write_bytes(b"half-written")
    new.write_bytes(b"being written")
    then = time.time() - 120
    os.utime(old, (then, then))
    Scanner(str(tmp_path)).sweep_tmp(max_age_s=60)
    assert os.listdir(tmp_path / TMP_DIR) == ["new"]


def test_diff_live_emits_puts_for_new_and_rewritten_and_deletes_for_gone() -> None:
    def entry(key: str, ino: int, value: bytes) -> LiveEntry:
        return LiveEntry(FileIdent(ino, 0, len(value)), KeyRecord(key, 1, value))

    old = {"a": entry("a", 1, b"a"), "b": entry("b", 2, b"b"), "c": entry("c", 3, b"c")}
    new = {"a": entry("a", 1, b"a"), "b": entry("b", 9, b"B"), "d": entry("d", 4, b"d")}
    assert diff_live(old, new) == [
        WatchEvent(WatchEventKind.PUT, "b", b"B"),
        WatchEvent(WatchEventKind.PUT, "d", b"d"),
        WatchEvent(WatchEventKind.DELETE, "c", None),
    ]
    assert diff_live(new, new) == []


async def test_owner_comes_back_after_being_swept(tmp_path: Path) -> None:
    """A process that stalled past its TTL and was swept re-registers at its next heartbeat."""
    d = FileDiscovery(str(tmp_path), lease_ttl_s=1.0)
    await d.start()
    try:
        await d.put("k", b"v")
        lease = lease_file_name(d.primary_lease.id)
        os.unlink(tmp_path / LEASES_DIR / lease)  # what another process's sweep does
        os.unlink(tmp_path / KEYS_DIR / encode_key("k"))
        assert await d.get("k") is None
        deadline = time.monotonic() + 3.0
        while await d.get("k") is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await d.get("k") == b"v"
    finally:
        await d.close()
    assert os.listdir(tmp_path / KEYS_DIR) == []
    assert os.listdir(tmp_path / LEASES_DIR) == []

"""On-disk layout of the ``file`` discovery backend (pure helpers, no event loop).

One shared directory holds three folders::

    keys/{encoded key}    msgpack KeyRecord {key, lease_id, value}
    leases/{lease_id:x}   msgpack LeaseRecord {ttl_s, pid}; its mtime is the heartbeat
    tmp/                  scratch files, renamed into keys/ or leases/ (atomic writes)

A key is live while its lease file exists and was touched within the lease's ``ttl_s``.
Key names are percent-encoded (``/`` → ``%2F``) so every key is one flat, safe file name.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
import urllib.parse
from dataclasses import dataclass

import msgspec

from stator.errors import InvalidRequestError

KEYS_DIR = "keys"
LEASES_DIR = "leases"
TMP_DIR = "tmp"
# Linux NAME_MAX is 255 bytes; stay below it with room for nothing else.
MAX_FILE_NAME_BYTES = 250
# Lease ids (and so instance ids) stay below 2**53 so JSON readers keep them exact.
MAX_LEASE_ID = 2**53


class KeyRecord(msgspec.Struct, array_like=True):
    """The content of a key file."""

    key: str
    lease_id: int
    value: bytes


class LeaseRecord(msgspec.Struct, array_like=True):
    """The content of a lease file; the file's mtime is its last heartbeat (wall clock, s)."""

    ttl_s: float
    pid: int


@dataclass(frozen=True, slots=True)
class FileIdent:
    """Identity of one version of a file: a rewrite (rename over it) changes the inode."""

    ino: int
    mtime_ns: int
    size: int


def new_lease_id() -> int:
    """A random lease id in ``[1, 2**53)``."""
    return secrets.randbelow(MAX_LEASE_ID - 1) + 1


def encode_key(key: str) -> str:
    """The file name of ``key``: percent-encoding of everything but ``[A-Za-z0-9_.~-]``.

    Raises:
        InvalidRequestError: the key is empty, or its file name would exceed 250 bytes.
    """
    if not key:
        raise InvalidRequestError("discovery key is empty", param="key")
    name = urllib.parse.quote(key, safe="")
    if name.startswith("."):  # never ".", ".." or a hidden file
        name = "%2E" + name[1:]
    if len(name) > MAX_FILE_NAME_BYTES:
        raise InvalidRequestError(
            f"discovery key too long for the file backend ({len(name)} > "
            f"{MAX_FILE_NAME_BYTES} encoded bytes): {key[:60]!r}...",
            param="key",
        )
    return name


def decode_key(name: str) -> str:
    """Inverse of ``encode_key``."""
    return urllib.parse.unquote(name)


def lease_file_name(lease_id: int) -> str:
    """``{lease_id:x}``."""
    return f"{lease_id:x}"


def lease_id_from_name(name: str) -> int | None:
    """The lease id of a lease file name, or ``None`` for a foreign file."""
    try:
        return int(name, 16)
    except ValueError:
        return None


def make_dirs(root: str) -> None:
    """Create ``root`` and its three folders (no error if they exist)."""
    for sub in (KEYS_DIR, LEASES_DIR, TMP_DIR):
        os.makedirs(os.path.join(root, sub), exist_ok=True)


def atomic_write(root: str, path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: a temp file in ``root/tmp`` renamed over it."""
    tmp = os.path.join(root, TMP_DIR, f"{os.getpid()}-{secrets.token_hex(8)}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_file(path: str) -> bytes | None:
    """The content of ``path``, or ``None`` if it does not exist."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def unlink_quiet(path: str) -> None:
    """Remove ``path``; no error if it is already gone."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def file_ident(path: str) -> tuple[FileIdent, float] | None:
    """``(identity, mtime in s)`` of ``path``, or ``None`` if it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return FileIdent(st.st_ino, st.st_mtime_ns, st.st_size), st.st_mtime


def list_dir(path: str) -> dict[str, tuple[FileIdent, float]]:
    """``name → (identity, mtime s)`` of the plain files in ``path`` (vanishing ones skipped)."""
    out: dict[str, tuple[FileIdent, float]] = {}
    with os.scandir(path) as it:
        for entry in it:
            try:
                st = entry.stat()
            except FileNotFoundError:
                continue
            out[entry.name] = (FileIdent(st.st_ino, st.st_mtime_ns, st.st_size), st.st_mtime)
    return out


def is_fresh(heartbeat_s: float, ttl_s: float, now_s: float | None = None) -> bool:
    """True while the last heartbeat (wall-clock seconds) is at most ``ttl_s`` old."""
    return (time.time() if now_s is None else now_s) - heartbeat_s <= ttl_s

"""Evaluation keys uploaded to the HTTP server: one directory per key set, a secret token per
key set stored only as its SHA-256, count and disk limits with least-recently-used eviction.

Layout of ``directory`` (mode 0700)::

    <key_id>/evaluation_keys   the uploaded bytes (0600)
    <key_id>/meta.json         {"token_sha256", "size", "created"} (0600); mtime = last use
    .upload-<random>/          an upload in progress (removed at startup if the server died)

A key set appears only through an atomic ``rename`` of a complete upload directory, so a crash
at any point leaves either no key set or a whole one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

KEYS_FILE = "evaluation_keys"
META_FILE = "meta.json"
UPLOAD_PREFIX = ".upload-"
#: key ids are 128 random bits in hex: anything else is refused before touching the disk
KEY_ID_LENGTH = 32
_HEX = frozenset("0123456789abcdef")
# compared against when the key id is unknown, so both failures cost the same
_UNKNOWN = hashlib.sha256(b"no such key set").hexdigest()

logger = logging.getLogger("fhe_sklearn.server")


class KeyStoreFull(Exception):
    """No room for a key set, even after evicting every unused one."""


def token_digest(token: str) -> str:
    """The stored form of a token: its SHA-256 hex digest (the token itself is never kept)."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def valid_key_id(key_id: str) -> bool:
    """Whether ``key_id`` has the form the store issues (lower-case hex of a fixed length)."""
    return len(key_id) == KEY_ID_LENGTH and set(key_id) <= _HEX


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class KeySet:
    key_id: str
    token_sha256: str
    size: int
    last_used: float
    in_use: int = 0


class KeyStore:
    """The key sets of a server, indexed in memory, persisted under ``directory``.

    Parameters
    ----------
    directory : str or Path
        Created with mode 0700 (an existing directory is narrowed to 0700).
    max_key_sets : int
        Most key sets kept at once.
    quota_bytes : int
        Most bytes of evaluation keys kept at once.

    When a new key set does not fit either limit, the least recently used key sets that no
    request is using are deleted to make room; if that is not enough, the upload is refused
    (:class:`KeyStoreFull`).
    """

    def __init__(self, directory: str | Path, max_key_sets: int = 100, quota_bytes: int = 20 * 2**30) -> None:
        if max_key_sets < 1 or quota_bytes < 1:
            raise ValueError("max_key_sets and quota_bytes must be positive")
        self.directory = Path(directory)
        self.max_key_sets = max_key_sets
        self.quota_bytes = quota_bytes
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self._sets: dict[str, KeySet] = {}
        self._load()

    def _load(self) -> None:
        for entry in self.directory.iterdir():
            if entry.name.startswith(UPLOAD_PREFIX):
                shutil.rmtree(entry, ignore_errors=True)  # an upload the server did not finish
                continue
            if not (entry.is_dir() and valid_key_id(entry.name)):
                continue
            try:
                meta = json.loads((entry / META_FILE).read_text())
                record = KeySet(
                    entry.name,
                    str(meta["token_sha256"]),
                    int(meta["size"]),
                    (entry / META_FILE).stat().st_mtime,
                )
                if (entry / KEYS_FILE).stat().st_size != record.size:
                    raise ValueError("size mismatch")
            except (OSError, ValueError, KeyError, TypeError) as err:
                logger.warning("ignoring unreadable key set directory", extra={"error": type(err).__name__})
                continue
            self._sets[record.key_id] = record

    def __len__(self) -> int:
        return len(self._sets)

    @property
    def total_bytes(self) -> int:
        """Bytes of every stored key set (what the disk quota counts)."""
        return sum(record.size for record in self._sets.values())

    def keys_path(self, key_id: str) -> Path:
        """Where the evaluation keys of ``key_id`` are stored."""
        return self.directory / key_id / KEYS_FILE

    def new_upload(self) -> Path:
        """A fresh private directory to stream an upload into; its keys file path."""
        upload = self.directory / f"{UPLOAD_PREFIX}{secrets.token_hex(8)}"
        upload.mkdir(mode=0o700)
        return upload / KEYS_FILE

    @staticmethod
    def discard_upload(keys_file: Path) -> None:
        """Remove an upload in progress (its private directory) after a failure."""
        shutil.rmtree(keys_file.parent, ignore_errors=True)

    def check_fits(self, size: int) -> None:
        """Refuse early a key set larger than the whole quota."""
        if size > self.quota_bytes:
            quota = self.quota_bytes
            raise KeyStoreFull(f"evaluation keys of {size} bytes exceed the key storage quota of {quota} bytes")

    def commit(self, keys_file: Path) -> tuple[str, str]:
        """Turn a complete upload (``new_upload``'s file, fsynced) into a key set; returns
        ``(key_id, token)``. The token is returned once and only its hash is kept."""
        size = keys_file.stat().st_size
        self.check_fits(size)
        self._make_room(size)
        key_id, token = secrets.token_hex(KEY_ID_LENGTH // 2), secrets.token_urlsafe(32)
        record = KeySet(key_id, token_digest(token), size, time.time())
        meta = {"token_sha256": record.token_sha256, "size": size, "created": record.last_used}
        fd = os.open(keys_file.parent / META_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        os.rename(keys_file.parent, self.directory / key_id)
        _fsync_dir(self.directory)
        self._sets[key_id] = record
        return key_id, token

    def _make_room(self, size: int) -> None:
        unused = sorted((r for r in self._sets.values() if not r.in_use), key=lambda r: r.last_used)
        while len(self._sets) + 1 > self.max_key_sets or self.total_bytes + size > self.quota_bytes:
            if not unused:
                held = f"{len(self._sets)} key sets, {self.total_bytes} bytes"
                raise KeyStoreFull(f"key storage is full ({held}) and every key set is in use")
            self.delete(unused.pop(0).key_id)
            logger.info("evicted the least recently used key set", extra={"key_sets": len(self._sets)})

    def delete(self, key_id: str) -> None:
        """Forget ``key_id`` and remove its files."""
        self._sets.pop(key_id, None)
        shutil.rmtree(self.directory / key_id, ignore_errors=True)

    def authenticate(self, key_id: str, token: str | None) -> KeySet | None:
        """The key set if ``token`` is its token; None otherwise, in about the same time
        whether the key id exists or not."""
        record = self._sets.get(key_id) if valid_key_id(key_id) else None
        expected = record.token_sha256 if record is not None else _UNKNOWN
        given = token_digest(token) if token is not None else ""
        if hmac.compare_digest(given, expected) and record is not None:
            return record
        return None

    def touch(self, record: KeySet) -> None:
        """Mark a key set as just used (persisted as the mtime of its metadata)."""
        record.last_used = time.time()
        try:
            os.utime(self.directory / record.key_id / META_FILE, (record.last_used, record.last_used))
        except OSError:
            pass

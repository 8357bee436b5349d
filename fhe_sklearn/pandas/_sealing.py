"""The client's secrets beside its FHE keys: a key-set id, a tag key and a sealing key.

- tags: ``HMAC-SHA256(tag key, column ‖ key value)`` cut to 16 bytes, attached to the cells of
  key columns, so the server can match rows without seeing a key;
- seals: column encodings (offsets, scales, categories) encrypted with AES-GCM, readable only
  by a holder of the secrets (the data owners who share the key directory).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

SECRETS_FILE = "dataframe_secrets.json"
TAG_BYTES = 16
#: the tag of a NaN key: public, so the server's stand-in keys are NaN where pandas sees NaN
#: (pandas' join order depends on it); the server learns which key cells are NaN
NAN_TAG = bytes(TAG_BYTES)
_AAD = b"fhe_sklearn.pandas.encoding.v1"


class Secrets:
    """Secrets of one key set; ``key_id`` is public (frames carry it), the keys are not."""

    def __init__(self, key_id: str, tag_key: bytes, seal_key: bytes) -> None:
        self.key_id = key_id
        self._tag_key = tag_key
        self._seal_key = seal_key

    @classmethod
    def generate(cls) -> Secrets:
        """New random secrets."""
        return cls(secrets.token_hex(16), secrets.token_bytes(32), secrets.token_bytes(32))

    @classmethod
    def load(cls, directory: Path) -> Secrets:
        """The secrets saved in ``directory``."""
        try:
            data = json.loads((directory / SECRETS_FILE).read_text())
            return cls(data["key_id"], bytes.fromhex(data["tag_key"]), bytes.fromhex(data["seal_key"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"cannot read the data-frame secrets in {directory}: {err}") from None

    def save(self, directory: Path) -> None:
        """Write the secrets into ``directory`` (mode 0600)."""
        record = {"key_id": self.key_id, "tag_key": self._tag_key.hex(), "seal_key": self._seal_key.hex()}
        path = directory / SECRETS_FILE
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)

    def tags(self, column: str, texts: list[str]) -> list[bytes]:
        """The key tags of ``texts`` (canonical key texts) of column ``column``."""
        prefix = b"fhe_sklearn.pandas.tag\0" + column.encode() + b"\0"
        return [
            NAN_TAG if t == "nan" else hmac.new(self._tag_key, prefix + t.encode(), hashlib.sha256).digest()[:TAG_BYTES]
            for t in texts
        ]

    def key_seed(self, purpose: str) -> int:
        """A 128-bit seed for FHE secret keys, derived from the secrets: owners who share the
        secrets derive the same keys even if they generated them apart."""
        digest = hmac.new(self._tag_key, b"fhe_sklearn.pandas.seed\0" + purpose.encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:16], "little")

    def fingerprint(self, column: str, encoding: dict[str, Any]) -> str:
        """A keyed digest of how column ``column`` maps values to codes (its dtype aside): equal
        for two owners' key columns exactly when their codes can be compared."""
        record = {k: v for k, v in encoding.items() if k != "dtype"}
        body = json.dumps(record, sort_keys=True).encode()
        text = b"fhe_sklearn.pandas.fingerprint\0%b\0%b" % (column.encode(), body)
        return hmac.new(self._tag_key, text, hashlib.sha256).hexdigest()

    def seal(self, encoding: dict[str, Any]) -> str:
        """``encoding`` encrypted and authenticated (AES-GCM), as base64 text."""
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = secrets.token_bytes(12)
        text = json.dumps(encoding).encode()
        # padded to a power of two (at least 256 bytes): the size says little of the categories
        text += b" " * (max(256, 1 << (len(text) - 1).bit_length()) - len(text))
        sealed = AESGCM(self._seal_key).encrypt(nonce, text, _AAD)
        return base64.b64encode(nonce + sealed).decode("ascii")

    def unseal(self, sealed: str, column: str) -> dict[str, Any]:
        """The encoding sealed by :meth:`seal`; ValueError under other keys or if modified."""
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        try:
            raw = base64.b64decode(sealed, validate=True)
            return json.loads(AESGCM(self._seal_key).decrypt(raw[:12], raw[12:], _AAD))
        except (InvalidTag, ValueError, TypeError):
            raise ValueError(
                f"the encoding of column {column!r} cannot be opened with these keys "
                "(sealed under another key set, or modified)"
            ) from None

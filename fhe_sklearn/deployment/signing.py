"""Optional signature of a deployment: HMAC-SHA256 (stdlib ``hmac``) of its fingerprint.

The model owner saves with ``FHEModelDev(...).save(signing_key=key)``; a client or server
given ``verify_key=key`` refuses files that are unsigned or signed with another key. The key
is a shared secret (bytes, at least 16; or a str, encoded as UTF-8): whoever can verify can
also sign, so give it only to parties that load deployments, never to the public. HMAC was
chosen over Ed25519 because it needs no third-party library; the fingerprint it signs
covers the circuit, the configuration and everything the client uses.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

ALGORITHM = "hmac-sha256"
MIN_KEY_BYTES = 16


def check_key(key: Any) -> bytes:
    """``key`` as bytes.

    Raises
    ------
    TypeError, ValueError
        If it is not bytes or str, or shorter than 16 bytes.
    """
    if isinstance(key, str):
        key = key.encode("utf-8")
    if not isinstance(key, (bytes, bytearray)):
        raise TypeError(f"a signing or verify key must be bytes or str, got {type(key).__name__}")
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"a signing or verify key must hold at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return bytes(key)


def _mac(key: Any, fingerprint: str) -> str:
    return hmac.new(check_key(key), f"fhe_sklearn.deployment\0{fingerprint}".encode(), hashlib.sha256).hexdigest()


def sign(key: Any, fingerprint: str) -> dict[str, str] | None:
    """The signature record of ``fingerprint`` (None without a key)."""
    if key is None:
        return None
    return {"algorithm": ALGORITHM, "value": _mac(key, fingerprint)}


def verify(key: Any, fingerprint: str, signature: Any) -> bool:
    """Whether ``signature`` (a record from :func:`sign`) signs ``fingerprint`` with ``key``."""
    expected = _mac(key, fingerprint)
    if not isinstance(signature, dict) or signature.get("algorithm") != ALGORITHM:
        return False
    value = signature.get("value")
    return isinstance(value, str) and hmac.compare_digest(value, expected)

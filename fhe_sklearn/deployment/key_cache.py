"""Deserialized evaluation keys, cached per key set (LRU, bounded by bytes).

Deserializing a tree model's evaluation keys (hundreds of MB) costs seconds, more than running
the circuit; a server that gets the same keys with every row must pay it once per key set.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

#: default bound of a server's cache: a few tree-model key sets
DEFAULT_MAX_BYTES = 4 * 2**30


def deserialize_evaluation_keys(serialized: bytes) -> Any:
    """concrete's server keyset from serialized evaluation keys.

    Raises
    ------
    TypeError
        If ``serialized`` is not bytes.
    ValueError
        If the bytes are not evaluation keys.
    """
    from concrete.compiler import ServerKeyset

    if not isinstance(serialized, (bytes, bytearray, memoryview)):
        raise TypeError(f"evaluation keys must be bytes, got {type(serialized).__name__}")
    try:
        return ServerKeyset.deserialize(bytes(serialized))
    except (RuntimeError, ValueError, TypeError):
        raise ValueError(f"malformed evaluation keys ({len(serialized)} bytes)") from None


class EvaluationKeyCache:
    """LRU cache of deserialized evaluation keys, bounded by their serialized size.

    :meth:`get` takes the serialized keys: the very bytes object seen before is found by
    identity (no hashing; the cache keeps a reference to it), equal bytes by their sha256.
    :meth:`get_or_load` caches under any key (e.g. a key id) with a loader. An entry costs
    ``nbytes`` (its serialized size; twice that when the bytes object is kept for identity
    lookups); the least recently used entries are evicted beyond ``max_bytes``. A key set
    larger than ``max_bytes`` is returned without being cached. Thread-safe.

    Parameters
    ----------
    max_bytes : int
        Bound on the total cost of the cached entries.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be a non-negative integer, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, tuple[Any, int, object]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        """Total cost of the cached entries."""
        with self._lock:
            return sum(cost for _, cost, _ in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def _lookup(self, key: Hashable) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[0]
        return None

    def _identity_lookup(self, source: object) -> Any:
        with self._lock:
            for key, (keys, _, kept) in self._entries.items():
                if kept is source:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return keys
        return None

    def _store(self, key: Hashable, keys: Any, cost: int, source: object = None) -> None:
        with self._lock:
            self.misses += 1
            if cost > self.max_bytes:
                return
            self._entries[key] = (keys, cost, source)
            self._entries.move_to_end(key)
            while sum(c for _, c, _ in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)

    def get(self, serialized: bytes) -> Any:
        """The deserialized keys of ``serialized`` (deserialized once per key set).

        Raises
        ------
        TypeError, ValueError
            As :func:`deserialize_evaluation_keys`.
        """
        found = self._identity_lookup(serialized)
        if found is not None:
            return found
        if not isinstance(serialized, (bytes, bytearray, memoryview)):
            raise TypeError(f"evaluation keys must be bytes, got {type(serialized).__name__}")
        digest = ("sha256", hashlib.sha256(serialized).hexdigest())
        found = self._lookup(digest)
        if found is not None:
            return found
        keys = deserialize_evaluation_keys(serialized)
        # immutable bytes can be recognised by identity later; a bytearray could change
        kept = serialized if isinstance(serialized, bytes) else None
        self._store(digest, keys, len(serialized) * (2 if kept is not None else 1), kept)
        return keys

    def get_or_load(self, key: Hashable, load: Callable[[], Any], nbytes: int) -> Any:
        """The keys cached under ``key``, else ``load()``'s result, cached with cost ``nbytes``."""
        found = self._lookup(key)
        if found is not None:
            return found
        keys = load()
        self._store(key, keys, int(nbytes))
        return keys

"""Many serialized ciphertexts in one HTTP body (``POST /predict_batch/{key_id}``).

Version 1 of the framing, all integers big-endian::

    b"FHEB"            4 bytes, magic
    version            1 byte, 1
    count              4 bytes, unsigned: number of items
    count times:
        length         8 bytes, unsigned
        item           `length` bytes: one serialized ciphertext (request) or result (response)

Requests and responses use the same framing; the response holds the results in the order
of the request's ciphertexts.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

MAGIC = b"FHEB"
VERSION = 1
MEDIA_TYPE = "application/vnd.fhe-sklearn.batch"
_HEADER = struct.Struct(">4sBI")
_LENGTH = struct.Struct(">Q")


def pack_batch(items: Sequence[bytes]) -> bytes:
    """One body holding ``items`` (serialized ciphertexts or results), in order."""
    if len(items) >= 2**32:
        raise ValueError(f"a batch holds fewer than 2**32 items, got {len(items)}")
    parts = [_HEADER.pack(MAGIC, VERSION, len(items))]
    for item in items:
        parts += [_LENGTH.pack(len(item)), bytes(item)]
    return b"".join(parts)


def unpack_batch(body: bytes) -> list[bytes]:
    """The items of a body made by :func:`pack_batch`; ``ValueError`` on anything else."""
    if len(body) < _HEADER.size:
        raise ValueError(f"batch body of {len(body)} bytes is shorter than its {_HEADER.size}-byte header")
    magic, version, count = _HEADER.unpack_from(body)
    if magic != MAGIC:
        raise ValueError(f"not a batch body: starts with {magic!r}, expected {MAGIC!r}")
    if version != VERSION:
        raise ValueError(f"batch framing version {version} is not supported (this server reads version {VERSION})")
    view, offset, items = memoryview(body), _HEADER.size, []
    for index in range(count):
        if offset + _LENGTH.size > len(body):
            raise ValueError(f"batch body truncated at item {index} of {count}")
        (length,) = _LENGTH.unpack_from(body, offset)
        offset += _LENGTH.size
        if offset + length > len(body):
            raise ValueError(f"batch body truncated in item {index} of {count} ({length} bytes announced)")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    if offset != len(body):
        raise ValueError(f"{len(body) - offset} unexpected bytes after the {count} items of the batch body")
    return items

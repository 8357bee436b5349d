"""Framing of several serialized values into one bytes object.

A *batch* holds one message per row (``quantize_encrypt_serialize_batch``); a *tuple* holds
the values of one row of a circuit with several inputs or outputs. Layout: an 8-byte magic,
the count (uint32, little-endian), each length (uint64), then the payloads. A single
ciphertext of concrete (a Cap'n Proto message) never starts with either magic.
"""

from __future__ import annotations

import struct

BATCH_MAGIC = b"FHESKLB1"
TUPLE_MAGIC = b"FHESKLT1"
MAX_ITEMS = 1_000_000


def pack(items: list[bytes], magic: bytes) -> bytes:
    """One bytes object holding ``items``."""
    header = magic + struct.pack("<I", len(items)) + struct.pack(f"<{len(items)}Q", *map(len, items))
    return header + b"".join(items)


def is_packed(data: object, magic: bytes) -> bool:
    """Whether ``data`` is bytes framed with ``magic``."""
    return isinstance(data, (bytes, bytearray)) and bytes(data[: len(magic)]) == magic


def unpack(data: bytes, magic: bytes, what: str = "batch") -> list[bytes]:
    """The items of a framed bytes object.

    Raises
    ------
    ValueError
        If the frame is truncated, inconsistent or holds too many items.
    """
    view = memoryview(data)
    start = len(magic) + 4
    if len(view) < start or bytes(view[: len(magic)]) != magic:
        raise ValueError(f"malformed encrypted {what}: bad header")
    (count,) = struct.unpack_from("<I", view, len(magic))
    if count > MAX_ITEMS or len(view) < start + 8 * count:
        raise ValueError(f"malformed encrypted {what}: truncated or {count} items")
    lengths = struct.unpack_from(f"<{count}Q", view, start)
    offset = start + 8 * count
    if offset + sum(lengths) != len(view):
        raise ValueError(f"malformed encrypted {what}: {len(view)} bytes, the header announces {offset + sum(lengths)}")
    items = []
    for length in lengths:
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items

"""Reading a model file's JSON text within bounds: size first, then nesting depth (without
recursion, so a deeply nested file cannot raise RecursionError), then ``json.loads``."""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

#: default largest model file :func:`fhe_sklearn.load` reads (bytes); ``max_bytes`` raises it
MAX_FILE_BYTES = 256 * 2**20
#: deepest nesting of JSON arrays and objects a model file may have (ours have ~12)
MAX_DEPTH = 64

# a JSON string literal (escapes included), unrolled so long strings do not backtrack
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
# +1 for an opening bracket, -1 for a closing one, by byte value
_STEP = np.zeros(256, dtype=np.int8)
_STEP[list(b"[{")] = 1
_STEP[list(b"]}")] = -1


def nesting_depth(text: str) -> int:
    """Deepest nesting of ``[``/``{`` in JSON ``text``, brackets inside strings ignored."""
    codes = np.frombuffer(_STRING.sub('""', text).encode("utf-8"), dtype=np.uint8)
    return int(np.cumsum(_STEP[codes], dtype=np.int64).max(initial=0))


def check_depth(value: Any, limit: int = MAX_DEPTH) -> None:
    """Refuse an already-parsed JSON ``value`` nested deeper than ``limit`` (no recursion)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise ValueError(f"not a fhe_sklearn model file: JSON nested over {limit} deep")
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def parse(text: str | bytes, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """The JSON value of ``text``; ValueError if it is too large, too deep or not JSON."""
    if len(text) > max_bytes:
        raise ValueError(f"model file of {len(text)} bytes is over the {max_bytes}-byte limit (max_bytes= raises it)")
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"not a fhe_sklearn model file (not UTF-8 text: {err})") from err
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise ValueError(f"not a fhe_sklearn model file: JSON nested {depth} deep, the limit is {MAX_DEPTH}")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, or an integer over 4300 digits
        raise ValueError(f"not a fhe_sklearn model file (invalid JSON: {err})") from err

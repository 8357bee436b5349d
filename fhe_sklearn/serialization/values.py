"""JSON form of the values a model file holds, and their checked decoding.

A value is a JSON scalar, a list, or one of these tagged objects::

    {"__dict__": {...}}                              dict with str keys
    {"__items__": [[key, value], ...]}               dict with other keys (e.g. class_weight)
    {"__tuple__": [...]}                             tuple
    {"__ndarray__": [flat values], "dtype": "<f8", "shape": [...]}
                                                     numeric array (bool, int, uint, float)
    {"__strings__": [flat str], "dtype": "<U3" or "|O", "shape": [...]}
                                                     array of labels or feature names
    {"__object__": "ClassName", "fields": {...}}     an allowed library object

Decoding builds only these: no dtype is parsed from the file (only numeric ones of a fixed
list are recognized), every array's shape must match its data, and objects are rebuilt by
a caller-given function (see :mod:`.objects`), or refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

#: largest number of elements of one array (a string array counts characters)
MAX_ARRAY_ELEMENTS = 2**28
MAX_ARRAY_DIMS = 8

NUMERIC_DTYPES = {
    np.dtype(t).str: np.dtype(t)
    for t in (
        np.bool_,
        np.int8,
        np.int16,
        np.int32,
        np.int64,
        np.uint8,
        np.uint16,
        np.uint32,
        np.uint64,
        np.float16,
        np.float32,
        np.float64,
    )
}
#: kinds of the array numpy infers from the file's numbers, accepted for each target kind
_ACCEPTED_KINDS = {"b": "b", "i": "biu", "u": "biu", "f": "biuf"}
_TAGS = ("__dict__", "__items__", "__tuple__", "__ndarray__", "__strings__", "__object__")


def fail(path: str, message: str) -> None:
    """Raise the ValueError of a malformed field of a model file."""
    raise ValueError(f"invalid model file: {path}: {message}")


# -- encoding ------------------------------------------------------------------------------
def encode(value: Any, encode_object: Callable[[Any], dict] | None = None) -> Any:
    """A JSON-ready form of ``value``; library objects go to ``encode_object``."""

    def rec(v: Any) -> Any:
        return encode(v, encode_object)

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.ndarray):
        return _encode_array(value)
    if isinstance(value, list):
        return [rec(v) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [rec(v) for v in value]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: rec(v) for k, v in value.items()}}
        return {"__items__": [[rec(k), rec(v)] for k, v in value.items()]}
    if encode_object is not None:
        return encode_object(value)
    cls = type(value)
    raise TypeError(f"cannot serialize a {cls.__module__}.{cls.__qualname__} to JSON")


def _encode_array(value: np.ndarray) -> dict:
    shape = list(value.shape)
    if value.dtype.str in NUMERIC_DTYPES:
        return {"__ndarray__": value.ravel().tolist(), "dtype": value.dtype.str, "shape": shape}
    items = value.ravel().tolist()
    if value.dtype.kind == "U" or (value.dtype == object and all(isinstance(v, str) for v in items)):
        return {"__strings__": items, "dtype": value.dtype.str, "shape": shape}
    if value.dtype == object and all(isinstance(v, (bool, int, float)) for v in items):
        return _encode_array(np.array(items).reshape(value.shape))
    raise TypeError(f"cannot serialize an array of dtype {value.dtype}: only numbers and strings are saved")


# -- decoding ------------------------------------------------------------------------------
class Decoder:
    """Decode the values of one part of a model file.

    Parameters
    ----------
    rebuild_object : callable, optional
        ``rebuild_object(class_name, fields, path, decoder)`` → the object; without it, an
        object is refused.
    strings : bool
        Whether string arrays (class labels, feature names) may appear.
    """

    def __init__(self, rebuild_object: Callable[..., Any] | None = None, strings: bool = False) -> None:
        self.rebuild_object = rebuild_object
        self.strings = strings

    def __call__(self, node: Any, path: str) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [self(v, f"{path}[{i}]") for i, v in enumerate(node)]
        if not isinstance(node, dict):  # pragma: no cover - json.loads makes nothing else
            fail(path, f"unexpected {type(node).__name__}")
        tags = [t for t in _TAGS if t in node]
        if len(tags) != 1:
            fail(path, f"expected one of {list(_TAGS)}, got keys {sorted(node)[:10]}")
        return getattr(self, "_" + tags[0].strip("_"))(node, path)

    def _dict(self, node: dict, path: str) -> dict:
        items = node["__dict__"]
        if not isinstance(items, dict):
            fail(path, "__dict__ must be a JSON object")
        return {k: self(v, f"{path}.{k}") for k, v in items.items()}

    def _items(self, node: dict, path: str) -> dict:
        items = node["__items__"]
        if not isinstance(items, list) or not all(isinstance(i, list) and len(i) == 2 for i in items):
            fail(path, "__items__ must be a list of [key, value] pairs")
        out = {}
        for i, (key, value) in enumerate(items):
            key = self(key, f"{path}[{i}].key")
            value = self(value, f"{path}[{i}].value")
            try:
                out[key] = value
            except TypeError:
                fail(f"{path}[{i}].key", f"a {type(key).__name__} cannot be a dict key")
        return out

    def _tuple(self, node: dict, path: str) -> tuple:
        items = node["__tuple__"]
        if not isinstance(items, list):
            fail(path, "__tuple__ must be a list")
        return tuple(self(v, f"{path}[{i}]") for i, v in enumerate(items))

    def _ndarray(self, node: dict, path: str) -> np.ndarray:
        flat, shape = _flat_and_shape(node, "__ndarray__", path)
        dtype = NUMERIC_DTYPES.get(node["dtype"]) if isinstance(node.get("dtype"), str) else None
        if dtype is None:
            fail(path, f"dtype {node.get('dtype')!r} is not allowed; numeric dtypes only: {sorted(NUMERIC_DTYPES)}")
        try:  # strings, None, lists or dicts among the values give a non-numeric kind or shape
            inferred = np.array(flat)
        except (ValueError, OverflowError) as err:
            fail(path, f"a {dtype} array holds numbers only ({err})")
        if inferred.ndim != 1 or (flat and inferred.dtype.kind not in "biuf"):
            fail(path, f"a {dtype} array holds numbers only")
        if flat and inferred.dtype.kind not in _ACCEPTED_KINDS[dtype.kind]:
            fail(path, f"values of kind {inferred.dtype} do not fit dtype {dtype}")
        if flat and dtype.kind in "iu":
            info = np.iinfo(dtype)
            if int(inferred.min()) < info.min or int(inferred.max()) > info.max:
                fail(path, f"values out of the range of {dtype}")
        return inferred.astype(dtype).reshape(shape)

    def _strings(self, node: dict, path: str) -> np.ndarray:
        if not self.strings:
            fail(path, "a string array is not allowed here: numeric dtypes only")
        flat, shape = _flat_and_shape(node, "__strings__", path)
        if not all(isinstance(v, str) for v in flat):
            fail(path, "a string array holds strings only")
        dtype = node.get("dtype")
        if dtype == "|O":
            out = np.empty(len(flat), dtype=object)
            out[:] = flat
            return out.reshape(shape)
        if not (isinstance(dtype, str) and dtype.startswith("<U")):
            fail(path, f"string arrays have dtype '<U...' or '|O', got {dtype!r}")
        width = max((len(v) for v in flat), default=1)
        if len(flat) * width > MAX_ARRAY_ELEMENTS:
            fail(path, f"{len(flat)} strings of up to {width} characters exceed the array size limit")
        return np.array(flat, dtype=f"<U{max(width, 1)}").reshape(shape)

    def _object(self, node: dict, path: str) -> Any:
        name = node["__object__"]
        if self.rebuild_object is None:
            fail(path, f"an object ({name!r}) is not allowed here")
        if not isinstance(name, str) or set(node) != {"__object__", "fields"} or not isinstance(node["fields"], dict):
            fail(path, 'an object is {"__object__": class name, "fields": {...}}')
        return self.rebuild_object(name, node["fields"], path, self)


def _flat_and_shape(node: dict, tag: str, path: str) -> tuple[list, tuple[int, ...]]:
    flat, shape = node[tag], node.get("shape")
    if not isinstance(flat, list):
        fail(path, f"{tag} must be a flat list")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_ARRAY_DIMS
        or not all(type(n) is int and 0 <= n <= MAX_ARRAY_ELEMENTS for n in shape)
    ):
        fail(path, f"shape must be a list of at most {MAX_ARRAY_DIMS} sizes in [0, {MAX_ARRAY_ELEMENTS}]")
    if math.prod(shape) != len(flat):
        fail(path, f"shape {shape} does not match the {len(flat)} values given")
    return flat, tuple(shape)

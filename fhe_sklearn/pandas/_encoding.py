"""Column encodings: a pandas column as 16-bit codes, and back.

The server sees a column's name, its kind and pandas dtype; how values map to codes (an
integer column's offset, a float column's range and step, a string column's categories) is
the owner's secret: it travels sealed (AES-GCM under the client's secret, :mod:`._sealing`).

- ``int`` / ``bool``: code = value − low (low: the schema's ``min`` or the column's minimum);
  the values must span at most 65,535.
- ``float``: quantized over [min, max] (schema or observed) on 65,535 steps; NaN is a missing cell.
- ``str`` (object or string dtype) and ``category``: code = index in the categories.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ._circuit import MAX_CODE

KINDS = ("int", "bool", "float", "str", "category")
#: kinds a merge or a group-by may use as its key (floats are not compared for equality;
#: categoricals would need both owners' categories compared: use their str values)
KEY_KINDS = ("int", "bool", "str")


def column_kind(series: pd.Series) -> str:
    """The kind of a pandas column, or ValueError naming what is not supported."""
    dtype = series.dtype
    name = series.name
    if isinstance(dtype, pd.CategoricalDtype):
        return "category"
    if pd.api.types.is_bool_dtype(dtype) and not pd.api.types.is_extension_array_dtype(dtype):
        return "bool"
    if pd.api.types.is_integer_dtype(dtype) and not pd.api.types.is_extension_array_dtype(dtype):
        return "int"
    if pd.api.types.is_float_dtype(dtype) and not pd.api.types.is_extension_array_dtype(dtype):
        return "float"
    if pd.api.types.is_string_dtype(dtype):
        values = series.dropna()
        if not all(isinstance(v, str) for v in values):
            raise ValueError(f"column {name!r} (dtype {dtype}) mixes strings with other values: not supported")
        return "str"
    raise ValueError(
        f"column {name!r} has dtype {dtype}, which encrypted data-frames do not support "
        "(integers, bools, floats, strings and categoricals are)"
    )


def fit_encoding(series: pd.Series, schema: dict | None = None) -> dict[str, Any]:
    """The encoding of one column (checked against the schema entry ``schema`` if given)."""
    kind = column_kind(series)
    name = series.name
    schema = dict(schema or {})
    encoding: dict[str, Any] = {"kind": kind, "dtype": str(series.dtype)}
    allowed = {"int": {"min", "max"}, "bool": set(), "float": {"min", "max"}, "str": {"categories"}}
    allowed["category"] = set()
    unknown = set(schema) - allowed[kind]
    if unknown:
        raise ValueError(f"schema of column {name!r} ({kind}) has unknown entries {sorted(unknown)}")
    if kind in ("int", "float"):
        values = series.dropna().to_numpy(dtype=np.float64 if kind == "float" else np.int64)
        if kind == "float" and not np.isfinite(values).all():
            raise ValueError(f"column {name!r} holds infinite values, which cannot be quantized")
        low = schema.get("min", values.min() if values.size else 0)
        high = schema.get("max", values.max() if values.size else low)
        if values.size and (values.min() < low or values.max() > high):
            raise ValueError(
                f"column {name!r} holds values in [{values.min()}, {values.max()}], "
                f"out of its declared range [{low}, {high}]"
            )
        if kind == "int":
            low, high = int(low), int(high)
            if high - low > MAX_CODE:
                raise ValueError(
                    f"column {name!r} spans {high - low + 1} integers ([{low}, {high}]); "
                    f"an encrypted column holds at most {MAX_CODE + 1}"
                )
            encoding["low"] = low
        else:
            low, high = float(low), float(high)
            encoding["low"] = low
            encoding["step"] = (high - low) / MAX_CODE if high > low else 1.0
    elif kind == "bool":
        encoding["low"] = 0
    elif kind == "str":
        present = pd.unique(series.dropna())
        categories = list(schema.get("categories", sorted(present)))
        missing = set(present) - set(categories)
        if missing:
            raise ValueError(f"column {name!r} holds values not in its schema's categories: {sorted(missing)[:5]}")
        encoding["categories"] = [str(c) for c in categories]
    else:
        cats = series.cat.categories
        if not (cats.dtype.kind in "iub" or pd.api.types.is_string_dtype(cats.dtype)):
            raise ValueError(f"categorical column {name!r} has {cats.dtype} categories (strings or integers only)")
        encoding["categories"] = [c if isinstance(c, str) else int(c) for c in cats]
        encoding["categories_dtype"] = str(cats.dtype)
        encoding["ordered"] = bool(series.cat.ordered)
    if kind in ("str", "category") and len(encoding["categories"]) > MAX_CODE + 1:
        raise ValueError(f"column {name!r} has {len(encoding['categories'])} categories, at most {MAX_CODE + 1}")
    return encoding


def encode(series: pd.Series, encoding: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(codes, present) of a column under its encoding."""
    kind = encoding["kind"]
    present = series.notna().to_numpy()
    if kind in ("int", "bool"):
        codes = series.to_numpy(dtype=np.int64) - encoding["low"]
    elif kind == "float":
        values = series.to_numpy(dtype=np.float64)
        codes = np.rint((np.where(present, values, encoding["low"]) - encoding["low"]) / encoding["step"])
        codes = np.clip(codes, 0, MAX_CODE).astype(np.int64)
    elif kind == "str":
        index = {c: i for i, c in enumerate(encoding["categories"])}
        codes = np.array([index[v] if p else 0 for v, p in zip(series, present)], dtype=np.int64)
    else:
        codes = series.cat.codes.to_numpy().astype(np.int64)
        codes[~present] = 0
    return codes, present


def decode(codes: np.ndarray, present: np.ndarray, encoding: dict[str, Any]) -> pd.Series:
    """The pandas column (original dtype) of decrypted codes."""
    kind, dtype = encoding["kind"], encoding["dtype"]
    if kind in ("int", "bool"):
        values = codes + encoding["low"]
        if present.all():
            return pd.Series(values.astype(dtype))
        return pd.Series(np.where(present, values, np.nan))
    if kind == "float":
        values = encoding["low"] + codes * encoding["step"]
        return pd.Series(np.where(present, values, np.nan).astype(dtype))
    categories = encoding["categories"]
    if kind == "str":
        missing = None if dtype == "object" else np.nan  # pandas keeps None in object columns
        values = [categories[c] if p else missing for c, p in zip(codes, present)]
        return pd.Series(values, dtype=dtype)
    cats = pd.Index(categories, dtype=encoding["categories_dtype"])
    return pd.Series(pd.Categorical.from_codes(np.where(present, codes, -1), cats, ordered=encoding["ordered"]))


def decode_sums(total: int, count: int, encoding: dict[str, Any], func: str) -> Any:
    """The value of an aggregate from the sum of codes and the count of present cells."""
    if func == "count":
        return int(count)
    kind = encoding["kind"]
    if kind in ("str", "category"):
        raise ValueError(f"{func} of a {kind} column is not defined")
    if kind == "float":
        value = encoding["low"] * count + encoding["step"] * total
    else:
        value = int(encoding["low"]) * int(count) + int(total)
    if func == "sum":
        return value
    return value / count if count else math.nan


def tag_text(value: Any, kind: str) -> str:
    """The canonical text of a key value that its tag is computed from (NaN keys match NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return "nan"
    if isinstance(value, str):
        return "s:" + value
    return "i:" + str(int(value))

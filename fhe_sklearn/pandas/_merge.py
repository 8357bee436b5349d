"""Planning merges and group-bys from key tags: pandas itself, run on the tags.

The server runs ``pandas.merge`` / ``factorize`` on frames holding only tags and row numbers,
so duplicate keys, missing keys and NaN keys (which match each other, as in pandas) follow
pandas exactly. Tags have no order, so an outer merge's rows (sorted by key in pandas) are
sorted by the client after decrypting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._sealing import NAN_TAG

HOWS = ("left", "right", "inner", "outer")


def plan_merge(
    left_tags: list[bytes],
    right_tags: list[bytes],
    how: str,
    dtype: str,
    sorted_keys: tuple[bool, bool] = (False, False),
) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of the left and right frame (-1: none) of each row of the merge.

    pandas picks its join algorithm, and so the row order of an inner merge, by the keys'
    dtype, NaN keys and whether both sides are sorted with one side unique. The tags get
    stand-ins of the key column's dtype family, NaN where the key is NaN, numbered by first
    appearance -- descending, so the stand-ins of a side whose owner's keys are not sorted
    (``sorted_keys``) are not sorted either. Where pandas would merge-join sorted keys, an inner
    merge is the left rows in order, each with its matches in right order.
    """
    left_sorted, right_sorted = sorted_keys
    unique = len(set(left_tags)) == len(left_tags) or len(set(right_tags)) == len(right_tags)
    if left_sorted and right_sorted and unique:
        if how == "inner":
            li, ri = plan_merge(left_tags, right_tags, "left", dtype)
            return li[ri >= 0], ri[ri >= 0]
        order = left_tags + right_tags
    else:  # a side known unsorted numbers its keys first (it has two distinct keys or a NaN)
        order = right_tags + left_tags if left_sorted else left_tags + right_tags
    first, _ = pd.factorize(pd.Series([t.hex() for t in order], dtype=object))
    descending = dict(zip(order, (first.max(initial=0) - first).tolist()))
    codes = [descending[t] for t in left_tags + right_tags]
    nan = [t == NAN_TAG for t in left_tags + right_tags]
    if dtype in ("str", "object"):
        keys = pd.Series([None if n else f"k{c:09d}" for c, n in zip(codes, nan)], dtype=dtype)
    else:  # integer keys cannot be NaN
        keys = pd.Series(codes, dtype=np.int64)
    left = pd.DataFrame({"k": keys[: len(left_tags)].to_numpy(), "l": np.arange(len(left_tags))})
    right = pd.DataFrame({"k": keys[len(left_tags) :].to_numpy(), "r": np.arange(len(right_tags))})
    if dtype in ("str", "object"):
        left["k"], right["k"] = left["k"].astype(dtype), right["k"].astype(dtype)
    merged = pd.merge(left, right, how=how, on="k", sort=False)
    return (merged["l"].fillna(-1).to_numpy(dtype=np.int64), merged["r"].fillna(-1).to_numpy(dtype=np.int64))


def plan_groups(tags: list[bytes]) -> list[np.ndarray]:
    """Row numbers of each group, groups in order of first appearance."""
    codes, uniques = pd.factorize(pd.Series([t.hex() for t in tags]))
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return [order[bounds[g] : bounds[g + 1]] for g in range(len(uniques))]

"""Planning merges and group-bys from key tags: pandas itself, run on the tags.

The server runs ``pandas.merge`` / ``factorize`` on frames holding only tags and row numbers,
so duplicate keys, missing keys and NaN keys (which match each other, as in pandas) follow
pandas exactly. Tags have no order, so an outer merge's rows (sorted by key in pandas) are
sorted by the client after decrypting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._secrets import NAN_TAG

HOWS = ("left", "right", "inner", "outer")


def plan_merge(
    left_tags: list[bytes], right_tags: list[bytes], how: str, dtype: str, monotonic: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of the left and right frame (-1: none) of each row of the merge.

    pandas picks its join algorithm (and so an inner merge's row order) by the keys' dtype,
    NaN keys and sortedness: the tags get stand-ins of the key column's dtype family, numbered
    by first appearance, NaN where the key is NaN; when both owners' keys are sorted
    (``monotonic``) and one side's are unique, pandas joins in key order, which for sorted
    inputs is the left rows in order, each with its matches in right order.
    """
    if (
        monotonic
        and how == "inner"
        and (len(set(left_tags)) == len(left_tags) or len(set(right_tags)) == len(right_tags))
    ):
        li, ri = plan_merge(left_tags, right_tags, "left", dtype)
        return li[ri >= 0], ri[ri >= 0]
    tags = left_tags + right_tags
    codes, _ = pd.factorize(pd.Series([t.hex() for t in tags], dtype=object))
    nan = np.array([t == NAN_TAG for t in tags], dtype=bool)
    if dtype in ("str", "object"):
        keys = pd.Series([None if n else f"k{c}" for c, n in zip(codes, nan)], dtype=dtype)
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

"""Planning merges and group-bys from key tags: pandas itself, run on the tags.

The server runs ``pandas.merge`` / ``factorize`` on frames holding only tags and row numbers,
so duplicate keys, missing keys and NaN keys (which match each other, as in pandas) follow
pandas exactly. Tags have no order, so an outer merge's rows (sorted by key in pandas) are
sorted by the client after decrypting.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

HOWS = ("left", "right", "inner", "outer")


def plan_merge(left_tags: list[bytes], right_tags: list[bytes], how: str) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers of the left and right frame (-1: none) of each row of the merge."""
    left = pd.DataFrame({"k": [t.hex() for t in left_tags], "l": np.arange(len(left_tags))})
    right = pd.DataFrame({"k": [t.hex() for t in right_tags], "r": np.arange(len(right_tags))})
    merged = pd.merge(left, right, how=how, on="k", sort=False)
    return (merged["l"].fillna(-1).to_numpy(dtype=np.int64), merged["r"].fillna(-1).to_numpy(dtype=np.int64))


def plan_groups(tags: list[bytes]) -> list[np.ndarray]:
    """Row numbers of each group, groups in order of first appearance."""
    codes, uniques = pd.factorize(pd.Series([t.hex() for t in tags]))
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(uniques) + 1))
    return [order[bounds[g] : bounds[g + 1]] for g in range(len(uniques))]

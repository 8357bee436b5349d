"""Merges of private-key frames (``key_matching="fhe"``): every key comparison in FHE.

The server never learns which rows match, so the merge's layout depends only on the frames'
shapes: a left (inner) merge has one row per left row, a right merge one per right row, an
outer merge one per left row and one per right row. Each row's values from the other frame are
the sum of that frame's cells over its matching rows (one at most: keys are unique in each
frame, as the owners check when they encrypt). Rows of an inner or outer merge that pandas
would not keep carry their encrypted match count (a :class:`RowFilter`): the client drops them
after decrypting, then sorts an outer merge's rows on the key, as pandas does. Every private
merge's result is final (its row filter says so): pandas' dtypes after a merge depend on
whether some row found no match, which only the client learns, when it decrypts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._circuit import CLEAR, clear_cell, read_clear_cell
from ._frame_data import Column, KeyInfo, RowFilter
from ._join_circuit import BLOCK, CELL, CELL_OUTPUT, HITS_OUTPUT, join_block, join_circuit

#: KeyInfo.zeros of a private-key frame: an all-zero cell, a key cell no key equals, a zero count
ZERO, NEVER_KEY, NO_HITS = range(3)


class _Matcher:
    """Runs the join circuit (or, for clear frames, its function on integers).

    The running totals (match count, picked cell) stay in memory from one block's run to the
    next: only a key's final totals are serialized. Cells of the frames (keys, values,
    padding) are deserialized once each, as every left key reads them again.
    """

    def __init__(self, info: KeyInfo) -> None:
        self.info = info
        self.clear = info.circuit == CLEAR
        self._server = self._keys = None
        self._cells: dict[bytes, Any] = {}

    def load(self, blob: bytes, count: bool = False) -> Any:
        """A serialized cell (or match count) as the circuit takes it."""
        if self.clear:
            cell = read_clear_cell(blob, CELL)
            return int(cell[0]) if count else cell  # a clear count is stored as a cell
        if blob not in self._cells:
            from concrete import fhe

            self._cells[blob] = fhe.Value.deserialize(blob)
        return self._cells[blob]

    def dump(self, value: Any, count: bool = False) -> bytes:
        """A total as the frame stores it."""
        if not self.clear:
            return value.serialize()
        return clear_cell(np.r_[value, np.zeros(CELL - 1, dtype=np.int64)] if count else value)

    def run(self, hits: Any, acc: Any, key: bytes, keys: list[bytes], values: list[bytes]) -> tuple[Any, Any]:
        """(hits, acc) after comparing ``key`` with one block of keys and values."""
        args = [hits, acc, *(self.load(b) for b in [key, *keys, *values])]
        if self.clear:
            names = ["hits", "acc", "key"] + [f"k{j}" for j in range(BLOCK)] + [f"v{j}" for j in range(BLOCK)]
            count, picked = join_block(**dict(zip(names, args)))
            return int(count), picked
        if self._server is None:
            from concrete import fhe

            self._server = join_circuit().server
            self._keys = fhe.EvaluationKeys.deserialize(self.info.evaluation_keys)
        out = self._server.run(*args, evaluation_keys=self._keys)
        return out[HITS_OUTPUT], out[CELL_OUTPUT]


def match_rows(
    info: KeyInfo, keys: list[bytes], other_info: KeyInfo, other_keys: list[bytes], other_columns: list[Column]
) -> tuple[list[bytes], list[list[bytes]]]:
    """Per key of ``keys``: its encrypted match count in ``other_keys`` and, per column of
    ``other_columns``, the cell of the matching row (all-zero: NaN where none matches).

    Each (key, block of BLOCK other rows, column) is one circuit run; the first column's runs
    also count the matches (with no column, runs on zero cells count them).
    """
    matcher = _Matcher(info)
    n = len(other_keys)
    pad = (-n) % BLOCK
    key_blocks = [other_keys[s : s + BLOCK] for s in range(0, n, BLOCK)]
    if pad:
        key_blocks[-1] = key_blocks[-1] + [other_info.zeros[NEVER_KEY]] * pad
    columns = [c.cells for c in other_columns] or [[other_info.zeros[ZERO]] * n]
    no_hits, zero = matcher.load(info.zeros[NO_HITS], count=True), matcher.load(info.zeros[ZERO])
    hits, picked = [], [[] for _ in other_columns]
    for key in keys:
        count = no_hits
        for c, cells in enumerate(columns):
            acc = zero
            for b, block in enumerate(key_blocks):
                values = list(cells[b * BLOCK : (b + 1) * BLOCK])
                values += [other_info.zeros[ZERO]] * (BLOCK - len(values))
                block_count, acc = matcher.run(count if c == 0 else no_hits, acc, key, block, values)
                if c == 0:
                    count = block_count
            if other_columns:
                picked[c].append(matcher.dump(acc))
        hits.append(matcher.dump(count, count=True))
    return hits, picked


def check_private_keys(left: Column, right: Column) -> None:
    """Refuse keys whose codes cannot be compared: encoded differently."""
    if left.fingerprint != right.fingerprint:
        raise ValueError(
            f"key column {left.name!r} is encoded differently in the two frames, so its codes cannot be "
            f"compared: both owners must encrypt it with the same schema, e.g. schema={{{left.name!r}: "
            "{'min': ..., 'max': ...}} for integers or {'categories': [...]} for strings"
        )


def private_merge(left: Any, right: Any, how: str, on: str, names: list[str]) -> tuple[list[Column], RowFilter]:
    """The columns (named ``names``, pandas' order) and row filter of a private-key merge."""
    lkey, rkey = left.column(on), right.column(on)
    check_private_keys(lkey, rkey)
    lvalues = [c for c in left._columns if c.name != on]
    rvalues = [c for c in right._columns if c.name != on]
    key_index = list(left.columns).index(on)

    def picked_columns(values: list[Column], cells: list[list[bytes]]) -> list[Column]:
        return [_picked(c, p, hits) for c, p in zip(values, cells)]

    if how == "right":
        hits, picked = match_rows(right.info, rkey.cells, left.info, lkey.cells, lvalues)
        lcols = picked_columns(lvalues, picked)
        lcols.insert(key_index, rkey.take(np.arange(len(rkey.cells))))
        columns = lcols + [c.take(np.arange(len(c.cells))) for c in rvalues]
        row_filter = RowFilter([None] * len(hits), np.ones(len(hits), dtype=np.int64))
    else:
        hits, picked = match_rows(left.info, lkey.cells, right.info, rkey.cells, rvalues)
        columns = [c.take(np.arange(len(c.cells))) for c in left._columns] + picked_columns(rvalues, picked)
        kept = list(hits) if how == "inner" else [None] * len(hits)
        row_filter = RowFilter(kept, np.ones(len(hits), dtype=np.int64))
        if how == "outer":  # then every right row, kept where no left row matched it
            right_hits, _ = match_rows(right.info, rkey.cells, left.info, lkey.cells, [])
            n_left, n_right = len(lkey.cells), len(rkey.cells)
            outer = []
            for column in columns[: len(left._columns)]:
                if column.name == on:
                    tail = rkey.take(np.arange(n_right))
                else:
                    tail = column.take(np.full(n_right, -1))
                outer.append(_concat(column, tail))
            for column, source in zip(columns[len(left._columns) :], rvalues):
                outer.append(_concat(column, source.take(np.arange(n_right))))
            columns = outer
            row_filter = RowFilter([None] * n_left + list(right_hits), np.r_[np.ones(n_left), np.zeros(n_right)])
    for column, name in zip(columns, names):
        column.name = name
    return columns, row_filter


def _picked(column: Column, cells: list[bytes], hits: list[bytes]) -> Column:
    """The other frame's column as picked cells (NaN where no row matched); frames merged are
    never merge results, so the column has one encoding."""
    source = np.zeros(len(cells), dtype=np.int16)
    encodings = [column.encodings[0]]
    # the counts tell the client an unmatched row (a gap: NaN, dtype promoted as pandas does)
    # from a matched row's missing value (None stays None in an object column)
    return Column(column.name, column.kind, column.dtype, encodings, source, list(cells), hits=list(hits))


def _concat(top: Column, bottom: Column) -> Column:
    """``top``'s rows, then ``bottom``'s (encodings of both kept)."""
    offset = len(top.encodings)
    source = np.r_[top.source, np.where(bottom.source >= 0, bottom.source + offset, -1)].astype(np.int16)
    fingerprint = top.fingerprint if top.fingerprint == bottom.fingerprint else None
    hits = None
    if top.hits is not None or bottom.hits is not None:
        hits = (top.hits or [None] * len(top.cells)) + (bottom.hits or [None] * len(bottom.cells))
    return Column(
        top.name,
        top.kind,
        top.dtype,
        top.encodings + bottom.encodings,
        source,
        top.cells + bottom.cells,
        fingerprint=fingerprint,
        hits=hits,
    )

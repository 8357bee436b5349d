"""EncryptedDataFrame: a table of encrypted cells that a server merges and aggregates.

What the server learns (see the README's "Encrypted data-frames"): the shape, column names
and dtypes, the equality pattern of key columns (which rows share a key value, within a frame
and across frames of the same key set) -- hence the join's structure and group sizes --,
which key cells are NaN and whether an owner's key column is sorted. It never sees a key
value, a cell value, an offset, a scale or a category. Frames with private keys
(``key_matching="fhe"``, :mod:`._private_merge`) hide the equality pattern too: only the
shapes, names and dtypes remain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ._aggregate import EncryptedAggregate, aggregate
from ._format import frame_bytes, read_frame_file, save_frame
from ._frame_data import Column, KeyInfo, RowFilter
from ._merge import HOWS, plan_groups, plan_merge
from ._private_merge import private_merge


class EncryptedDataFrame:
    """A pandas DataFrame encrypted by :meth:`ClientEngine.encrypt_from_pandas`.

    Parameters
    ----------
    info : KeyInfo
        Key-set id, circuit digest, evaluation keys and an encrypted zero cell.
    columns : list of Column
        The encrypted columns, all of the same length.
    sort_on : str or None
        Set on an outer merge: the client sorts the decrypted rows on this key, as pandas does.
    row_filter : RowFilter or None
        Set on a private-key merge: which rows the client keeps after decrypting.
    """

    file_kind = "frame"

    def __init__(
        self, info: KeyInfo, columns: list[Column], sort_on: str | None = None, row_filter: RowFilter | None = None
    ) -> None:
        lengths = {len(c.cells) for c in columns}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths {sorted(lengths)}")
        names = [c.name for c in columns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names {names}")
        if row_filter is not None and len(row_filter.cells) != (len(columns[0].cells) if columns else 0):
            raise ValueError("the row filter does not cover the frame's rows")
        self.info = info
        self._columns = columns
        self.sort_on = sort_on
        self.row_filter = row_filter

    # -- pandas-like views --------------------------------------------------------------
    @property
    def columns(self) -> pd.Index:
        """The column names."""
        return pd.Index([c.name for c in self._columns])

    @property
    def dtypes(self) -> pd.Series:
        """The pandas dtype of each column of the clear frame."""
        return pd.Series({c.name: c.dtype for c in self._columns}, dtype=object)

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns)."""
        return (len(self._columns[0].cells) if self._columns else 0, len(self._columns))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def key_columns(self) -> list[str]:
        """Key columns: the ones ``merge(on=...)`` (and, tagged, ``groupby``) accept."""
        return [c.name for c in self._columns if c.is_key]

    @property
    def key_matching(self) -> str:
        """``"tags"`` or ``"fhe"`` (see :meth:`ClientEngine.encrypt_from_pandas`)."""
        return self.info.matching

    @property
    def schema(self) -> pd.DataFrame:
        """One row per column: dtype, kind, whether it is a key column, empty cells."""
        return pd.DataFrame(
            {
                "dtype": [c.dtype for c in self._columns],
                "kind": [c.kind for c in self._columns],
                "key": [c.is_key for c in self._columns],
                "empty_cells": [sum(x is None for x in c.cells) for c in self._columns],
            },
            index=self.columns,
        )

    def head(self, n: int = 5) -> pd.DataFrame:
        """The first ``n`` rows with each cell shown as its ciphertext's size (None: empty)."""
        return pd.DataFrame(
            {c.name: [None if x is None else f"<enc {len(x)} B>" for x in c.cells[:n]] for c in self._columns}
        )

    def __repr__(self) -> str:
        rows, cols = self.shape
        return f"<EncryptedDataFrame: {rows} rows × {cols} columns, keys {self.key_columns}>\n{self.head()}"

    def column(self, name: str) -> Column:
        """The encrypted column ``name`` (KeyError naming the columns if there is none)."""
        for c in self._columns:
            if c.name == name:
                return c
        raise KeyError(f"no column {name!r} in this encrypted frame (columns: {list(self.columns)})")

    def _key(self, name: str, what: str) -> Column:
        if not isinstance(name, str):
            raise TypeError(f"{what} takes one column name, got {name!r}")
        column = self.column(name)
        if not column.is_key:
            raise ValueError(
                f"column {name!r} was not encrypted as a key column, so it cannot be matched: "
                f"encrypt it with encrypt_from_pandas(df, keys=[{name!r}]) (key columns: {self.key_columns})"
            )
        if column.tags is not None and any(t is None for t in column.tags):
            raise ValueError(f"key column {name!r} has cells a join left empty: it cannot be matched again")
        if what == "groupby" and column.tags is None:
            raise ValueError(
                f"column {name!r} is a private key (key_matching='fhe'): the server cannot group rows it "
                "cannot tell apart; encrypt with key_matching='tags' to group by it"
            )
        return column

    # -- server-side operations -----------------------------------------------------------
    def merge(
        self, other: EncryptedDataFrame, how: str = "left", on: str | None = None, suffixes: tuple = ("_x", "_y")
    ) -> EncryptedDataFrame:
        """Merge with ``other`` as ``pandas.merge(self, other, how=how, on=on)``, on ciphertexts.

        Tagged keys: the rows are matched on the key tags and the encrypted cells are moved, not
        decrypted (no FHE computation). Private keys (``key_matching="fhe"``): every pair of
        keys is compared in FHE and each row gets the other frame's matching cells, so the
        server learns nothing about matches. Either way, decrypting gives ``pandas.merge`` of
        the clear frames.

        Raises
        ------
        ValueError
            Unknown ``how``, ``on`` missing or not a key column in either frame, key columns of
            different dtypes, or frames of different key sets.
        """
        if not isinstance(other, EncryptedDataFrame):
            raise TypeError(f"merge takes an EncryptedDataFrame, got {type(other).__name__}")
        if how not in HOWS:
            raise ValueError(f"how must be one of {list(HOWS)}, got {how!r}")
        check_same_keys(self, other)
        if self.sort_on is not None or other.sort_on is not None:
            raise ValueError("an outer merge's rows are ordered when decrypted: decrypt it before merging it again")
        if self.row_filter is not None or other.row_filter is not None:
            raise ValueError(
                "a private-key merge's result is final (its rows and dtypes are settled when decrypted): "
                "decrypt it before merging again"
            )
        if on is None:
            common = [c for c in self.columns if c in set(other.columns)]
            if len(common) != 1:
                raise ValueError(f"give on=: the frames share the columns {common}, not exactly one")
            on = common[0]
        for frame, side in ((self, "left"), (other, "right")):
            if on not in frame.columns:
                raise ValueError(f"the {side} frame has no column {on!r} (its columns: {list(frame.columns)})")
        left_key, right_key = self._key(on, "on"), other._key(on, "on")
        if (left_key.kind, left_key.dtype) != (right_key.kind, right_key.dtype):
            raise ValueError(
                f"schema mismatch: key column {on!r} is {left_key.dtype} on the left and {right_key.dtype} on the right"
            )
        names = pd.merge(
            pd.DataFrame(columns=self.columns), pd.DataFrame(columns=other.columns), on=on, suffixes=suffixes
        ).columns
        if self.info.matching == "fhe":
            columns, row_filter = private_merge(self, other, how, on, list(names))
            return EncryptedDataFrame(self.info, columns, on if how == "outer" else None, row_filter)
        dtype = left_key.dtype if left_key.kind == "str" else "int"
        li, ri = plan_merge(left_key.tags, right_key.tags, how, dtype, (left_key.monotonic, right_key.monotonic))
        columns = [c.take(li) for c in self._columns] + [c.take(ri) for c in other._columns if c.name != on]
        key_index = list(self.columns).index(on)
        if how == "right":
            columns[key_index] = right_key.take(ri)
        if how != "outer":  # (an outer merge is not merged again)
            rows, key = (ri, right_key) if how == "right" else (li, left_key)
            columns[key_index].monotonic = _still_sorted(rows, key)
        elif how == "outer":
            columns[key_index] = _coalesce(left_key.take(li), right_key.take(ri))
        for column, name in zip(columns, names):
            column.name = name
            if (column.source < 0).any():  # gaps: the dtype pandas.merge promotes to
                column.dtype = {"int": "float64", "bool": "object"}.get(column.kind, column.dtype)
        return EncryptedDataFrame(self.info, columns, sort_on=on if how == "outer" else None)

    def groupby(self, by: str) -> EncryptedGroupBy:
        """Group on the key column ``by``; ``.agg(...)`` computes encrypted sums, counts, means."""
        return EncryptedGroupBy(self, self._key(by, "groupby"))

    def agg(self, func: str | dict[str, str], columns: list[str] | None = None) -> EncryptedAggregate:
        """Column aggregates over all rows (``sum``, ``count``, ``mean``); decrypts to a Series."""
        if self.info.matching == "fhe":
            raise ValueError(
                "aggregates run on frames encrypted with key_matching='tags' (their cells are the sum "
                "circuit's); this frame's cells are the private-key join circuit's"
            )
        selected = [self.column(c) for c in columns] if columns is not None else list(self._columns)
        pairs = _pairs(selected, func, self)
        groups = [np.arange(len(self))]
        return EncryptedAggregate(self.info, aggregate(self.info, *zip(*pairs), groups), None)

    def sum(self, columns: list[str] | None = None) -> EncryptedAggregate:
        """Encrypted column sums (NaN skipped, as pandas)."""
        return self.agg("sum", columns)

    def count(self, columns: list[str] | None = None) -> EncryptedAggregate:
        """Encrypted counts of non-NaN cells per column."""
        return self.agg("count", columns)

    def mean(self, columns: list[str] | None = None) -> EncryptedAggregate:
        """Encrypted column means (sum and count; the client divides)."""
        return self.agg("mean", columns)

    # -- files ------------------------------------------------------------------------------
    def save(self, path: str | Path, signing_key: Any = None) -> Path:
        """Write the frame (a zip of JSON and ciphertexts, no pickle); optionally HMAC-signed."""
        return save_frame(self, Path(path).expanduser(), signing_key)

    def to_bytes(self, signing_key: Any = None) -> bytes:
        """The bytes :meth:`save` writes."""
        return frame_bytes(self, signing_key)

    @classmethod
    def load(cls, path: str | Path | bytes, verify_key: Any = None) -> EncryptedDataFrame:
        """Read a frame written by :meth:`save` (a path, or the file's bytes), checking its
        format version, integrity (a modified file is refused) and, with ``verify_key``, signature."""
        contents = read_frame_file(path, verify_key, "frame")
        return cls(contents.info, contents.columns, sort_on=contents.sort_on, row_filter=contents.row_filter)


class EncryptedGroupBy:
    """``frame.groupby(key)``: select columns with ``[...]``, aggregate with ``agg``."""

    def __init__(self, frame: EncryptedDataFrame, key: Column, selection: list[str] | None = None) -> None:
        self.frame, self.key, self.selection = frame, key, selection

    def __getitem__(self, columns: str | list[str]) -> EncryptedGroupBy:
        return EncryptedGroupBy(self.frame, self.key, [columns] if isinstance(columns, str) else list(columns))

    def agg(self, func: str | dict[str, str]) -> EncryptedAggregate:
        """``sum``, ``count`` or ``mean`` of every selected column, or a dict column → func."""
        names = self.selection or [c for c in self.frame.columns if c != self.key.name]
        selected = [self.frame.column(c) for c in names]
        pairs = _pairs(selected, func, self.frame)
        groups = plan_groups(self.key.tags)
        key = self.key.take(np.array([g[0] for g in groups]))
        return EncryptedAggregate(self.frame.info, aggregate(self.frame.info, *zip(*pairs), groups), key)

    def sum(self) -> EncryptedAggregate:
        """``agg("sum")``."""
        return self.agg("sum")

    def count(self) -> EncryptedAggregate:
        """``agg("count")``."""
        return self.agg("count")

    def mean(self) -> EncryptedAggregate:
        """``agg("mean")``."""
        return self.agg("mean")


def _pairs(columns: list[Column], func: str | dict[str, str], frame: EncryptedDataFrame) -> list[tuple]:
    if isinstance(func, dict):
        return [(frame.column(name), f) for name, f in func.items()]
    if not isinstance(func, str):
        raise TypeError(f"agg takes a function name or a dict of column → function name, got {func!r}")
    if not columns:
        raise ValueError("no column to aggregate")
    return [(c, func) for c in columns]


def _still_sorted(rows: np.ndarray, key: Column) -> bool:
    """Whether the keys of ``key``'s rows ``rows`` are sorted, from tags alone: for sorted
    keys, a step back in row number is a step back in key unless the two tags are equal."""
    if not key.monotonic:
        return False
    back = np.flatnonzero(rows[1:] < rows[:-1])
    return all(key.tags[rows[t]] == key.tags[rows[t + 1]] for t in back)


def _coalesce(left: Column, right: Column) -> Column:
    """Left's cells, right's where left is empty (an outer merge's key column)."""
    offset = len(left.encodings)
    take_right = left.source < 0
    cells = [b if t else a for a, b, t in zip(left.cells, right.cells, take_right)]
    tags = [b if t else a for a, b, t in zip(left.tags, right.tags, take_right)]
    source = np.where(take_right, np.where(right.source >= 0, right.source + offset, -1), left.source)
    return Column(left.name, left.kind, left.dtype, left.encodings + right.encodings, source, cells, tags)


def check_same_keys(*frames: EncryptedDataFrame) -> None:
    """Refuse frames of different key sets or circuits (their cells could not be combined)."""
    first = frames[0].info
    for frame in frames[1:]:
        if frame.info.key_id != first.key_id:
            raise ValueError(
                "the frames were encrypted under different keys (key sets "
                f"{first.key_id[:8]}… and {frame.info.key_id[:8]}…): both owners must encrypt with "
                "the same key directory (see ClientEngine.share_keys)"
            )
        if frame.info.matching != first.matching:
            raise ValueError(
                f"one frame's keys are matched by {first.matching}, the other's by {frame.info.matching}: "
                "encrypt both with the same key_matching"
            )
        if frame.info.circuit != first.circuit:
            raise ValueError("the frames were written by fhe_sklearn versions with different circuits")


def load(path: str | Path | bytes, verify_key: Any = None) -> EncryptedDataFrame | EncryptedAggregate:
    """An encrypted frame or aggregate from its file (or the file's bytes), checked as
    :meth:`EncryptedDataFrame.load` does."""
    contents = read_frame_file(path, verify_key)
    if contents.kind == "aggregate":
        return EncryptedAggregate(contents.info, contents.items, contents.key)
    return EncryptedDataFrame(contents.info, contents.columns, sort_on=contents.sort_on, row_filter=contents.row_filter)

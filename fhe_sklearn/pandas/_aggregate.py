"""Aggregates on the server: sums of encrypted cells (no table lookup, exact chunk sums)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from ._circuit import ARITY, CLEAR, clear_cell, read_clear_cell, sum_circuit
from ._format import read_frame_file, save_frame
from ._frame_data import AggregateItem, Column, KeyInfo

FUNCS = ("sum", "count", "mean")


class EncryptedAggregate:
    """The encrypted result of ``groupby(key).agg(...)`` or of a column ``sum`` / ``count``.

    Each group's value is the sum of a few encrypted partial sums of chunks and of presence
    bits; :meth:`ClientEngine.decrypt_to_pandas` adds them and decodes sum, count or mean.
    With a ``key``, it decrypts to a DataFrame indexed by the sorted group keys (NaN keys
    dropped, as ``DataFrame.groupby``); without, to a Series indexed by column names.
    """

    file_kind = "aggregate"

    def __init__(self, info: KeyInfo, items: list[AggregateItem], key: Column | None) -> None:
        self.info = info
        self.items = items
        self.key = key

    @property
    def columns(self) -> list[str]:
        """Names of the aggregated columns."""
        return [item.name for item in self.items]

    def save(self, path: str | Path, signing_key: Any = None) -> Path:
        """Write the aggregate (same zip layout as a frame's, no pickle); optionally signed."""
        return save_frame(self, Path(path).expanduser(), signing_key)

    @classmethod
    def load(cls, path: str | Path | bytes, verify_key: Any = None) -> EncryptedAggregate:
        """Read an aggregate written by :meth:`save`, checked as frames are."""
        contents = read_frame_file(path, verify_key, "aggregate")
        return cls(contents.info, contents.items, contents.key)

    def __repr__(self) -> str:
        n = len(self.key.cells) if self.key is not None else 1
        by = f" by {self.key.name!r}" if self.key is not None else ""
        return f"<EncryptedAggregate{by}: {n} group(s), {self.columns}>"


def check_aggregable(column: Column, func: str) -> None:
    """Refuse an unknown aggregate, a sum or mean of strings, or of a two-encoding column."""
    if func not in FUNCS:
        raise ValueError(f"unknown aggregate {func!r}: use one of {list(FUNCS)}")
    if func != "count" and column.kind in ("str", "category"):
        raise ValueError(f"cannot {func} column {column.name!r} of kind {column.kind}: only count it")
    used = set(column.source[column.source >= 0].tolist())
    if func != "count" and len(used) > 1:
        raise ValueError(f"column {column.name!r} joins cells of two encodings (a merged key column): count it only")


def plan_runs(cells: list[bytes]) -> list[tuple[list[bytes], int]]:
    """``cells`` as runs of at most ARITY distinct ciphertexts, each with a clear weight.

    A merge copies a cell to every row its key matches, so a group may hold one ciphertext
    several times; added twice in one run its noise would double, past what the compiler
    budgets for (independent noises grow as a square root). Cells held ``m`` times are summed
    once, and the client multiplies that partial sum by ``m`` after decrypting.
    """
    by_copies: dict[int, list[bytes]] = {}
    for blob, copies in Counter(cells).items():
        by_copies.setdefault(copies, []).append(blob)
    return [
        (blobs[s : s + ARITY], copies)
        for copies, blobs in sorted(by_copies.items())
        for s in range(0, len(blobs), ARITY)
    ]


def sum_cells(cells: list[bytes], info: KeyInfo) -> list[tuple[bytes, int]]:
    """(serialized partial sum, weight) pairs whose weighted total is the sum of ``cells``;
    a lone cell is its own partial sum."""
    runs = plan_runs(cells)
    if info.circuit == CLEAR:  # the same runs, in the clear
        return [
            (run[0] if len(run) == 1 else clear_cell(sum(read_clear_cell(c) for c in run)), copies)
            for run, copies in runs
        ]
    from concrete import fhe

    server = keys = None
    partials = []
    for run, copies in runs:
        if len(run) == 1:
            partials.append((run[0], copies))
            continue
        if server is None:
            server = sum_circuit().server
            keys = fhe.EvaluationKeys.deserialize(info.evaluation_keys)
        values = [fhe.Value.deserialize(c) for c in run + info.zeros[: ARITY - len(run)]]
        partials.append((server.run(*values, evaluation_keys=keys).serialize(), copies))
    return partials


def aggregate(info: KeyInfo, columns: list[Column], funcs: list[str], groups: list[np.ndarray]) -> list[Any]:
    """One AggregateItem per (column, func); one sum per (column, group) serves all funcs."""
    items = []
    cache: dict[str, list[list[tuple[bytes, int]]]] = {}
    for column, func in zip(columns, funcs):
        check_aggregable(column, func)
        if column.name not in cache:
            cache[column.name] = [
                sum_cells([column.cells[r] for r in g if column.cells[r] is not None], info) for g in groups
            ]
        used = column.source[column.source >= 0]
        encoding = column.encodings[int(used[0])] if used.size else column.encodings[0]
        items.append(
            AggregateItem(column.name, func, column.name, column.kind, encoding, column.dtype, cache[column.name])
        )
    return items

"""The parts of an encrypted frame: columns of serialized cells, and what identifies the keys."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Column:
    """One encrypted column.

    ``cells[i]`` is row i's serialized ciphertext, or None for a row a join left empty (NaN);
    ``source[i]`` indexes ``encodings`` (sealed), the encoding of row i (a merged key column
    holds cells of both frames), -1 where the cell is None. ``tags`` (key columns only) are
    the rows' key tags.
    """

    name: str
    kind: str
    dtype: str
    encodings: list[str]
    source: np.ndarray
    cells: list[bytes | None]
    tags: list[bytes | None] | None = None
    #: key columns: whether the owner's keys are sorted (pandas joins sorted keys its own way)
    monotonic: bool = False
    #: private key columns (``key_matching="fhe"``, no tags): a keyed digest of the encoding,
    #: equal only for columns whose codes can be compared
    fingerprint: str | None = None
    #: columns a private merge picked from the other frame: each row's encrypted match count
    #: (None: a row not picked), so that the client tells a gap from a missing value
    hits: list[bytes | None] | None = None

    @property
    def is_key(self) -> bool:
        """Whether merges (and, with tags, group-bys) may match on the column."""
        return self.tags is not None or self.fingerprint is not None

    def take(self, rows: np.ndarray, name: str | None = None) -> Column:
        """The column's rows ``rows`` (-1: an empty cell)."""
        rows = np.asarray(rows, dtype=np.int64)
        cells = [self.cells[r] if r >= 0 else None for r in rows]
        picked = self.source[np.maximum(rows, 0)] if len(self.source) else np.zeros(len(rows), dtype=np.int16)
        source = np.where(rows >= 0, picked, -1).astype(np.int16)
        tags = None if self.tags is None else [self.tags[r] if r >= 0 else None for r in rows]
        hits = None if self.hits is None else [self.hits[r] if r >= 0 else None for r in rows]
        return Column(
            name or self.name,
            self.kind,
            self.dtype,
            list(self.encodings),
            source,
            cells,
            tags,
            fingerprint=self.fingerprint,
            hits=hits,
        )


@dataclass
class KeyInfo:
    """What every frame carries about the key set it was encrypted under (all public)."""

    key_id: str
    circuit: str
    evaluation_keys: bytes = field(repr=False)
    #: tags: ARITY - 1 distinct encryptions of an all-zero cell, to pad sums; fhe: the padding
    #: of the join circuit's runs (``_private_merge.ZERO``, ``NEVER_KEY``, ``NO_HITS``)
    zeros: list[bytes] = field(repr=False)
    #: how merges match keys: ``"tags"`` (keyed tags) or ``"fhe"`` (compared in FHE)
    matching: str = "tags"


@dataclass
class RowFilter:
    """Rows of a private-key merge that the client keeps: ``cells[i]`` is row i's encrypted
    match count (None: always kept), kept when it decrypts to ``keep[i]``."""

    cells: list[bytes | None]
    keep: np.ndarray


@dataclass
class AggregateItem:
    """One aggregated column: per group, the (serialized partial sum, weight) pairs whose
    weighted total it is."""

    name: str
    func: str
    column: str
    kind: str
    encoding: str
    #: the pandas dtype of the column (an integer column a merge left gaps in is float64)
    dtype: str
    partials: list[list[tuple[bytes, int]]]

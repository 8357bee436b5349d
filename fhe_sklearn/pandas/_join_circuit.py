"""The circuit of private-key merges: one left key compared in FHE with a block of right keys.

Frames encrypted with ``key_matching="fhe"`` carry no key tags: the server learns nothing of
which rows match. Their cells hold the 16-bit code in six 3-bit chunks (and the presence bit),
so that every table lookup reads at most 4 bits: one parameter set, ~20 MB of evaluation keys.
One run compares a left key cell with :data:`BLOCK` right key cells -- a key matches when
all its 7 components do (NaN keys match each other, as in pandas) -- and returns the number
of matches and the sum of the matched right value cells, each added to a running total from
the blocks before (``hits``, ``acc``; refreshed by a lookup so that chaining runs does not grow
their noise). With keys unique in each frame, that is the matched row's cell, or an all-zero
(NaN) cell. The circuit is composable (outputs are valid inputs and decrypt as inputs do), so
the totals chain across blocks.
"""

from __future__ import annotations

import hashlib
import inspect
from functools import lru_cache
from typing import Any

import numpy as np

CHUNK_BITS = 3
N_CHUNKS = 6
#: a private-key cell: presence bit, then N_CHUNKS chunks of the code
CELL = 1 + N_CHUNKS
#: right rows one run compares the left key with
BLOCK = 8
#: the presence component of the padding key cells of a short last block: never a key's
NEVER = 2
#: a match count is held times this (the lookup that finds a match outputs it so)
HITS_SCALE = 2**CHUNK_BITS

_INPUTS = ["hits", "acc", "key"] + [f"k{j}" for j in range(BLOCK)] + [f"v{j}" for j in range(BLOCK)]
#: input positions: a cell may be encrypted for any cell input (one encoding: composable)
HITS_INPUT, CELL_INPUT = 0, 1
#: output positions
HITS_OUTPUT, CELL_OUTPUT = 0, 1


@lru_cache(maxsize=1)
def _tables() -> tuple[Any, ...]:
    """The join's lookup tables (made once: the clear path runs a block per call)."""
    from concrete import fhe

    size = 2**CHUNK_BITS
    return (
        fhe.LookupTable([0] + [2] * (2 * size - 1)),  # differ: d in [-7, 7] (negatives wrap): 2 if d
        fhe.LookupTable([HITS_SCALE] + [0] * (2 * size - 1)),  # matched: 2 x mismatches == 0
        fhe.LookupTable([0] * size + [2 * v for v in range(size)]),  # select: [8 m + v] = 2 v if m
        fhe.LookupTable([x // 2 for x in range(2 * size)]),  # halve
        fhe.LookupTable(list(range(2 * size))),  # same (a refresh)
    )


def join_block(**cells: Any) -> tuple[Any, Any]:
    """(hits, acc) plus the matches of ``key`` against ``k0..k7`` and their values ``v0..v7``.

    Runs traced by concrete and, on numpy integers, as the clear (``fhe="disable"``) path.
    Every lookup reads 4 bits: one precision, one key partition. The tables output their
    results already scaled (a mismatch as 2, a match as 8, a value doubled) so that what each
    lookup reads is a short sum of fresh lookup outputs: little noise, smaller parameters.
    """
    differ, matched, select, halve, same = _tables()
    key, hits, doubled = cells["key"], cells["hits"], cells["acc"] * 2
    for j in range(BLOCK):
        match = matched[np.sum(differ[key - cells[f"k{j}"]])]
        doubled = doubled + select[match + cells[f"v{j}"]]
        hits = hits + match
    return same[hits], halve[doubled]


join_block.__signature__ = inspect.Signature(
    [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in _INPUTS]
)


def _inputset() -> list[tuple]:
    """Rows of at most one match in all blocks (keys are unique): totals stay one cell's range."""
    rng = np.random.default_rng(0)
    top, low = np.full(CELL, 2**CHUNK_BITS - 1), np.zeros(CELL, dtype=np.int64)
    samples = [
        (HITS_SCALE, top, top) + (low,) * BLOCK + (top,) * BLOCK,
        (0, low, low) + (top,) * BLOCK + (top,) * BLOCK,
    ]
    for s in range(3 * BLOCK):
        cells = [rng.integers(0, 2**CHUNK_BITS, CELL) for _ in range(1 + 2 * BLOCK)]
        if s >= BLOCK:
            cells[1 + s % BLOCK] = cells[0].copy()
            samples.append((0, low, *cells))
        else:
            samples.append((HITS_SCALE, top, *cells))
    return samples


@lru_cache(maxsize=1)
def join_circuit() -> Any:
    """The compiled join circuit (once per process, ~1 s)."""
    from concrete import fhe

    compiler = fhe.Compiler(join_block, dict.fromkeys(_INPUTS, "encrypted"))
    configuration = fhe.Configuration(composable=True, compress_input_ciphertexts=True, compress_evaluation_keys=True)
    return compiler.compile(_inputset(), configuration=configuration)


@lru_cache(maxsize=1)
def join_digest() -> str:
    """sha256 of the join circuit's client specs (names it in files, as the sum circuit's)."""
    return hashlib.sha256(join_circuit().client.specs.serialize()).hexdigest()

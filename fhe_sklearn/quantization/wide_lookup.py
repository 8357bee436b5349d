"""Exact table lookups of wide integers, made of narrow lookups (a step decomposition).

A lookup costs by the precision it reads (a 10-bit PBS needs gigabytes of keys), but the
tables of a network's requantization have few steps: a 3-bit ReLU output changes value 7
times over a 10-bit accumulator. With ``x' = x - lo = 2**c h + l``:

    T(x) = A(h) + sum_k [h == a_k] * G_k(l)

where ``A(h)`` is T just before block ``h``, ``a_k`` are the blocks where T steps (the k-th
of each position) and ``G_k`` is T within block ``a_k`` minus ``A(a_k)``. ``h`` is read from
``truncate_bit_pattern(x', c)`` (exact, c cheap PBS; the lookups after it read only the high
bits), ``l = x' - h 2**c`` is leveled, and each term costs three lookups: the flag
``[h == a_k]``, ``G_k(l)`` and the pick of the one by the other (their packed sum). The same
integers as the wide table, bit for bit, for ``c + 1 + 3K`` PBS (K: the most blocks a position
steps in), every intermediate value sized for the worst case. Applied to 9- and 10-bit inputs
(both parts of at most 5 bits); measured on the exact circuit of a 3-bit brevitas MLP on digits
(10-bit accumulators) in the README's Brevitas section.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from concrete import fhe

from .quantizers import integer_bit_width

#: decompose lookups that read at least this many bits (up to 2 * NARROW_BITS)
WIDE_BITS = 9
#: ... and whose positions step in at most this many blocks (each block costs 3 PBS)
MAX_STEPPING_BLOCKS = 16
#: bits of the high and low parts (and of the in-block values, whose pick reads one more)
NARROW_BITS = 5
#: measured ms per PBS by the precision it reads (concrete-python facts); x2.4 per bit past 8
_PBS_MS = {1: 6.0, 2: 6.0, 3: 6.1, 4: 7.2, 5: 8.7, 6: 19.0, 7: 43.8, 8: 102.0}


def pbs_ms(bits: int) -> float:
    """Estimated cost of one PBS reading ``bits`` bits."""
    return _PBS_MS.get(max(bits, 1), _PBS_MS[8] * 2.4 ** (bits - 8))


@dataclass
class _Plan:
    c: int
    table_a: np.ndarray
    table_e: list[np.ndarray]
    table_g: list[np.ndarray]
    g_min: int
    g_bits: int
    cost: float


def _take(table: np.ndarray, index: Any) -> np.ndarray:
    """``table[index[p], p]`` at every position ``p`` (tables of shape (values, *positions))."""
    index = np.asarray(index, dtype=np.int64)
    shape = np.broadcast_shapes(index.shape, table.shape[1:])
    tables = np.broadcast_to(table, table.shape[:1] + shape)
    index = np.clip(np.broadcast_to(index, shape), 0, table.shape[0] - 1)
    return np.take_along_axis(tables, index[None], axis=0)[0]


def _plan(values: np.ndarray, c: int) -> _Plan:
    """The decomposition of ``values`` (the table on x' = 0, 1, ..., per position) at split ``c``."""
    n = values.shape[0]
    blocks = -(-n // 2**c)
    starts = np.minimum(np.arange(blocks) * 2**c - 1, n - 1)
    table_a = values[np.maximum(starts, 0)]  # block 0: values[0]
    steps = np.zeros((blocks, *values.shape[1:]), dtype=bool)
    changed = values[1:] != values[:-1]  # a step at x' = i + 1
    for i in np.flatnonzero(changed.reshape(n - 1, -1).any(axis=1)):
        steps[(i + 1) >> c] |= changed[i]
    rank = np.cumsum(steps, axis=0) * steps  # k (1-based) of each stepping block
    K = int(rank.max(initial=0))
    table_e, table_g = [], []
    low = np.arange(2**c).reshape((-1,) + (1,) * (values.ndim - 1))
    for k in range(1, K + 1):
        is_k = rank == k
        table_e.append(is_k.astype(np.int64))
        a = np.where(is_k.any(axis=0), is_k.argmax(axis=0), 0)  # the k-th stepping block
        rows = np.broadcast_to(np.clip(a[None] * 2**c + low, 0, n - 1), (2**c, *a.shape))
        inside = np.take_along_axis(values, rows, axis=0) - _take(table_a, a)[None]
        table_g.append(np.where(is_k.any(axis=0), inside, 0))
    g_min = int(min((t.min() for t in table_g), default=0))
    g_max = int(max((t.max() for t in table_g), default=0))
    g_bits = integer_bit_width(0, g_max - g_min)
    high = integer_bit_width(0, blocks - 1)
    # to choose the split (the flag and A lookups read the high bits, the others the low ones)
    cost = c * pbs_ms(2) + (1 + K) * pbs_ms(high) + K * pbs_ms(c) + K * pbs_ms(g_bits + 1)
    return _Plan(c, table_a, table_e, table_g, g_min, g_bits, cost)


def wide_lookup(x: Any, table: Callable[[Any], Any], lo: int, hi: int) -> Any | None:
    """``table(x)`` traced as narrower lookups (see the module), or None when one lookup of
    ``x`` is narrow enough or the table steps too often. ``x`` is a concrete tracer holding
    integers in [lo, hi]."""
    width = integer_bit_width(0, hi - lo)
    if width < WIDE_BITS:
        return None
    grid = np.arange(lo, hi + 1, dtype=np.int64).reshape((-1,) + (1,) * len(x.shape))
    values = np.asarray(table(np.broadcast_to(grid, grid.shape[:1] + tuple(x.shape))), dtype=np.int64)
    plans = [
        _plan(values, c)
        for c in range(1, width)
        if c <= NARROW_BITS and integer_bit_width(0, -(-values.shape[0] // 2**c) - 1) <= NARROW_BITS
    ]
    plans = [p for p in plans if p.g_bits <= NARROW_BITS and len(p.table_e) <= MAX_STEPPING_BLOCKS]
    if not plans:
        return None
    plan = min(plans, key=lambda p: p.cost)
    # every intermediate value gets its worst-case width: concrete would otherwise size them
    # on the inputset, and an input beyond it (that the client may send) would wrap
    c = plan.c
    shifted = fhe.hint(x - lo, bit_width=width)
    high = fhe.hint(fhe.truncate_bit_pattern(shifted, lsbs_to_remove=c), bit_width=width)
    low = fhe.hint(shifted - high, bit_width=c)
    bounds = np.array([values.min(), values.max()])
    out = fhe.hint(fhe.univariate(lambda q, t=plan.table_a: _take(t, q >> c))(high), can_store=bounds)
    span = 2**plan.g_bits
    pick = fhe.LookupTable([0] * span + [g + plan.g_min for g in range(span)])
    for table_e, table_g in zip(plan.table_e, plan.table_g):
        # the flag comes out of its lookup already scaled: the pick reads a sum of two fresh
        # lookup outputs, not a multiple of one (less noise, smaller parameters)
        here = fhe.univariate(lambda q, t=table_e * span: _take(t, q >> c))(high)
        inside = fhe.univariate(lambda q, t=table_g, m=plan.g_min: _take(t, q) - m)(low)
        index = fhe.hint(here + inside, bit_width=plan.g_bits + 1)
        term = fhe.hint(pick[index], can_store=np.array([plan.g_min, plan.g_min + span - 1]))
        # a partial sum is T(x) or A(h): within the table's bounds
        out = fhe.hint(out + term, can_store=bounds)
    return out

"""The integers a tree circuit's leaves hold: one quantizer per tree, the offset its tables
subtract, and the binary digits of a score sent back in planes (see :mod:`._tree_lowering`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .quantization import MAX_BIT_WIDTH, MinMaxQuantizationStats, QuantizationOptions, UniformQuantizer
from .quantization.quantizers import integer_bit_width


def binary_digits(values: np.ndarray, planes: int) -> list[np.ndarray]:
    """Signed binary digits of integers: ``values == sum_j 2**j * digits[j]``, each in {-1, 0, 1}."""
    magnitude, sign = np.abs(values), np.sign(values)
    return [sign * ((magnitude >> j) & 1) for j in range(planes)]


def table_offset(leaves: np.ndarray, narrow: bool = False) -> int:
    """What a tree subtracts from its leaf integers: the most common leaf (its tables hold 0
    there, and a pair of such leaves needs no TLU), else the middle (narrowest tables).
    ``narrow``: the most common leaf only where it keeps the tables as narrow as the middle
    (a tree's own output block then holds as few bits as its leaves)."""
    middle = int((leaves.min() + leaves.max() + 1) // 2)
    values, counts = np.unique(leaves, return_counts=True)
    if narrow:  # as signed integers: the other trees' tables share the tensor
        bits = integer_bit_width(min(leaves.min() - middle, -1), leaves.max() - middle)
        keeps = np.array([integer_bit_width(min(leaves.min() - v, -1), leaves.max() - v) <= bits for v in values])
        values, counts = values[keeps], counts[keeps]
    if len(counts) and counts.max() > 1:
        return int(values[np.argmax(counts)])
    return middle


def leaf_quantizers(
    trees: Sequence[Any], n_bits: int, shared: bool = True
) -> tuple[list[UniformQuantizer], list[int], float]:
    """One leaf quantizer per tree (``FlatTree``), each scale an integer multiple of the finest.

    Boosted trees shrink as they go: a scale shared by all trees would leave the late ones a
    level or two. Here every tree keeps ~``n_bits`` levels; the sum multiplies each tree's
    integers by its multiple in the (PBS-free) ``tree_sum`` product. ``shared=False``: trees
    summed apart (a block each) keep their own scales, multiples 1.
    """
    options = QuantizationOptions(n_bits)
    ranges = [(t.value[t.left < 0].min(), t.value[t.left < 0].max()) for t in trees]
    ideal = [
        UniformQuantizer.compute_quantization_parameters(options, MinMaxQuantizationStats(a, b))[0] for a, b in ranges
    ]
    # the finest scale, but not so fine that the trees' multiples overflow a 16-bit sum;
    # with more trees than that budget holds even at multiple 1, tree_sum reports it
    levels, budget = 2**n_bits - 1, 2 ** (MAX_BIT_WIDTH - 1) - 1
    room = budget - len(trees) * levels
    finest = float(min(ideal))
    if not shared:
        own = [MinMaxQuantizationStats(min(a, 0.0) if a == b else a, b) for a, b in ranges]
        return [UniformQuantizer(options, stats) for stats in own], [1] * len(trees), finest
    if room > 0:
        finest = max(finest, float(sum(ideal)) * levels / room)
    quantizers, multipliers = [], []
    for (a, b), scale in zip(ranges, ideal):
        m = max(1, int(np.ceil(float(scale) / finest - 1e-9)))
        stats = MinMaxQuantizationStats(min(a, 0.0) if a == b else a, b)
        zero_point = int(np.rint(-stats.rmin / (m * finest)))
        quantizers.append(UniformQuantizer(options, scale=m * finest, zero_point=zero_point))
        multipliers.append(m)
    return quantizers, multipliers, finest

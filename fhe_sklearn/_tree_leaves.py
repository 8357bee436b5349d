"""The integers a tree circuit's leaves hold: one quantizer per tree, the offset its tables
subtract, and the binary digits of a score sent back in planes (see :mod:`._tree_lowering`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .quantization import MAX_BIT_WIDTH, MinMaxQuantizationStats, QuantizationOptions, UniformQuantizer


def binary_digits(values: np.ndarray, planes: int) -> list[np.ndarray]:
    """Signed binary digits of integers: ``values == sum_j 2**j * digits[j]``, each in {-1, 0, 1}."""
    magnitude, sign = np.abs(values), np.sign(values)
    return [sign * ((magnitude >> j) & 1) for j in range(planes)]


def table_offset(leaves: np.ndarray) -> int:
    """What a tree subtracts from its leaf integers: the most common leaf (its tables hold 0
    there, and a pair of such leaves needs no TLU), else the middle (narrowest tables)."""
    values, counts = np.unique(leaves, return_counts=True)
    if counts.max() > 1:
        return int(values[np.argmax(counts)])
    return int((leaves.min() + leaves.max() + 1) // 2)


def leaf_quantizers(trees: Sequence[Any], n_bits: int) -> tuple[list[UniformQuantizer], list[int], float]:
    """One leaf quantizer per tree (``FlatTree``), each scale an integer multiple of the finest.

    Boosted trees shrink as they go: a scale shared by all trees would leave the late ones a
    level or two. Here every tree keeps ~``n_bits`` levels; the sum multiplies each tree's
    integers by its multiple in the (PBS-free) ``tree_sum`` product.
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

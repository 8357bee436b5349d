"""How many weight bits an accumulator can use when a truncation follows it.

A lookup after a linear layer reads the accumulator truncated to its top
``rounding_threshold_bits`` bits of the worst-case range. One weight bit more doubles that
range, so the truncation drops one bit more (one more PBS with exact truncation, and every
ciphertext feeding the sum must hold a wider integer: bigger keys), while its step in float
stays the same. Past some point, extra weight bits only refine bits that are thrown away.
Measured on the digits MLP 64-32-10 at 6-bit inputs, ``rounding_threshold_bits=5``: 6-bit
weights give a 16-bit accumulator and 0.956 simulate accuracy, 3-bit weights a 13-bit one and
0.964 (float 0.964); at 2 bits the weight error is 3x the truncation's and accuracy falls.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: fewest weight bits tried (1 bit leaves only the sign of one level)
MIN_WEIGHT_BITS = 2


def truncation_variance(scale: np.ndarray, width: int, target_bits: int) -> float:
    """Variance added by truncating a ``width``-bit accumulator of step ``scale`` (per
    output) to ``target_bits`` bits, summed over outputs (uniform error over one kept step)."""
    lsbs = max(0, width - target_bits)
    return float(np.sum(np.broadcast_to(np.asarray(scale, dtype=np.float64) * 2.0**lsbs, np.shape(scale)) ** 2) / 12)


def weight_error_variance(error: np.ndarray) -> float:
    """Variance of the output error the rounded weights cause on the calibration data,
    summed over outputs (axis 1; the mean error is removed: bias correction absorbs it)."""
    error = np.moveaxis(np.asarray(error, dtype=np.float64), 1, -1).reshape(-1, error.shape[1])
    return float(np.sum(np.var(error, axis=0)))


def fewest_weight_bits(n_bits: int, trial: Callable[[int], tuple[float, float]]) -> int:
    """The fewest weight bits in ``[MIN_WEIGHT_BITS, n_bits]`` whose rounding error stays
    within the truncation's: ``trial(b)`` returns (weight error variance, truncation variance)
    with ``b``-bit weights. The error grows as bits are removed, so the search stops at the
    first width that adds more noise than the truncation."""
    chosen = n_bits
    for bits in range(n_bits - 1, MIN_WEIGHT_BITS - 1, -1):
        weight_var, truncation_var = trial(bits)
        if weight_var > truncation_var:
            break
        chosen = bits
    return chosen

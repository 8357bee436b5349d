"""Input grids on the data's own lattice.

Many inputs only take evenly spaced values: pixel intensities (digits: 17 levels), counts,
ratings, binary and one-hot columns. A min-max grid of ``n_bits`` spreads their few values
over ``2**n_bits`` codes, so every accumulator reading them is sized for codes that never
occur. Quantized on the lattice itself, such a feature is exact and its codes stop at the
number of levels it has: the digits MLP's first accumulator falls from 13 to 11 bits, which
removes two exact-truncation PBS per neuron and lets the truncation run on cheaper parameters.

A value the calibration never showed is rounded to the nearest lattice point and clipped to
the lattice's range, as a min-max grid clips to its range.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .quantizers import QuantizationOptions, UniformQuantizer, as_integers

#: relative tolerance of a value's distance to its lattice point
LATTICE_TOLERANCE = 1e-6
#: calibration rows per lattice level, at least, on average: a few rows of a continuous
#: feature (two values, or only even counts) are no evidence of a lattice
MIN_ROWS_PER_LEVEL = 4


class LatticeQuantizer(UniformQuantizer):
    """A uniform grid whose codes stop at ``column_max`` (one per feature, or one for the
    whole tensor) rather than at ``2**n_bits - 1``; a value above is clipped to it.

    Parameters
    ----------
    options : QuantizationOptions
        Unsigned, ``n_bits`` at least the width of ``column_max``.
    scale, zero_point : float or ndarray
        As :class:`UniformQuantizer`.
    column_max : int or ndarray of int
        The highest code of each feature.
    """

    def __init__(self, options: QuantizationOptions, scale: Any, zero_point: Any, column_max: Any) -> None:
        super().__init__(options, scale=scale, zero_point=zero_point)
        self.column_max = as_integers(column_max, "lattice column_max")
        if options.is_signed or np.any(self.column_max < 0) or np.any(self.column_max > options.qmax):
            raise ValueError(f"column_max must lie in [0, {options.qmax}] of an unsigned grid")

    def quant_traceable(self, values: Any) -> Any:
        return np.minimum(super().quant_traceable(values), self.column_max)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "column_max": np.asarray(self.column_max).tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> LatticeQuantizer:
        return cls(QuantizationOptions(**data["options"]), data["scale"], data["zero_point"], data["column_max"])


def lattice_quantizer(x: np.ndarray, base: UniformQuantizer, per_feature: bool) -> LatticeQuantizer | None:
    """The lattice grid of ``x`` (per column of a 2-D ``x``, else one for the tensor), or None
    unless every feature that varies sits on a lattice of fewer than ``2**n_bits - 1`` steps
    whose points are multiples of its step (so each code is exact).

    Each feature's codes are its lattice points spread by an integer factor to about the
    widest lattice's range: the first layer's weights are quantized per output column with
    one scale, which features of very different code ranges would share badly (a feature
    of 3 codes next to ones of 17: its folded weight sets the scale though it moves the sum
    least; measured on digits, 0.4 to 1 point of accuracy), as it would a mix of lattice and
    min-max features, so such a mix keeps ``base`` (an unsigned grid of ``x``, per feature
    or per tensor as ``per_feature`` says). A constant feature gets about the lattices' median
    step (exactly its value's divisor), its value in the middle of the same range.
    """
    options = base.options
    columns = x.reshape(len(x), -1) if per_feature else x.reshape(-1, 1)
    found = {}
    for j in range(columns.shape[1]):
        if np.ptp(columns[:, j]) > 0:
            lattice = _lattice(columns[:, j], options.qmax)
            if lattice is None:
                return None
            found[j] = lattice
    if not found:
        return None
    widest = max(top for _, _, top in found.values())
    scale = np.empty(columns.shape[1])
    zero_point = np.empty(columns.shape[1], dtype=np.int64)
    column_max = np.empty(columns.shape[1], dtype=np.int64)
    for j, (step, origin, top) in found.items():
        spread = widest // top
        if abs(origin * spread) > 2**52:  # the zero point must stay an exact integer
            return None
        scale[j], zero_point[j], column_max[j] = step / spread, -origin * spread, top * spread
    median = float(np.median(scale[list(found)]))
    middle = max(widest, 2) // 2
    for j in np.setdiff1d(np.arange(columns.shape[1]), list(found)):
        # exact: the value is n steps of about the median from 0, its code in the middle
        value = float(columns[0, j])
        n = max(1, int(np.rint(abs(value) / median)))
        scale[j] = abs(value) / n if value else median
        zero_point[j] = middle - int(np.sign(value)) * n
        column_max[j] = 2 * middle
    if not per_feature:
        return LatticeQuantizer(options, scale[0], zero_point[0], column_max[0])
    return LatticeQuantizer(options, scale, zero_point, column_max)


def _lattice(values: np.ndarray, qmax: int) -> tuple[float, int, int] | None:
    """(step, first point / step, highest code) when ``values`` are ``(o + k) * step`` for
    an integer ``o`` and integers ``k`` in ``[0, K]`` with ``0 < K < qmax``, and the
    calibration shows each level ``MIN_ROWS_PER_LEVEL`` times on average, else None."""
    points = np.unique(values)
    if len(points) > qmax:
        return None
    step = float(np.min(np.diff(points)))
    if not np.isfinite(step) or step < np.finfo(np.float64).tiny:
        return None
    relative = (points - points[0]) / step  # < qmax on a lattice: a tight, absolute tolerance
    top = int(np.rint(relative[-1])) if np.isfinite(relative[-1]) else qmax
    if top >= qmax or len(values) < MIN_ROWS_PER_LEVEL * (top + 1):
        return None
    if not np.allclose(relative, np.rint(relative), rtol=0, atol=LATTICE_TOLERANCE * max(1, top)):
        return None
    start = points[0] / step
    if not abs(start) < 2**52 or abs(start - np.rint(start)) > min(1e-3, LATTICE_TOLERANCE * max(1.0, abs(start))):
        return None
    return step, int(np.rint(start)), top


__all__ = ["LatticeQuantizer", "lattice_quantizer"]

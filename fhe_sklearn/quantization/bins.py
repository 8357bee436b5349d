"""Non-uniform input quantization for trees: one bin per interval between split points."""

from __future__ import annotations

from typing import Any

import numpy as np

from .quantizers import QuantizationOptions, _QuantizerIntrospection, check_finite, integer_bit_width


class ThresholdBinQuantizer(_QuantizerIntrospection):
    """Quantize feature ``f`` to the number of its thresholds below ``x`` (``<=`` splits) or
    at or below ``x`` (``<`` splits, ``strict``), so ``x <= t_k`` ⇔ ``q <= k`` exactly.

    It reveals every split point of the model to whoever quantizes (the client). The integer
    grid has scale 1 and zero point 0; ``n_bits`` is the fewest bits that hold every bin.

    Parameters
    ----------
    thresholds : list of ndarray
        Split thresholds of each feature.
    strict : bool
        The model compares ``x < t`` (xgboost, in float32) instead of ``x <= t``.
    max_bits : int
        Refuse a grid wider than this (the ``op_inputs`` budget).

    Attributes
    ----------
    n_bits, is_signed, is_symmetric, scale, zero_point, offset :
        As on :class:`~fhe_sklearn.quantization.UniformQuantizer` (unsigned, scale 1,
        zero point 0, offset 0).
    """

    def __init__(self, thresholds: list[np.ndarray], strict: bool = False, max_bits: int = 16) -> None:
        if not isinstance(strict, (bool, np.bool_)):
            raise ValueError(f"strict must be True or False, got {strict!r}")
        self.strict = bool(strict)
        self.thresholds = [np.unique(self._as_compared(t)) for t in thresholds]
        for feature, t in enumerate(self.thresholds):
            check_finite(t, f"thresholds of feature {feature}")
        widest = max((len(t) for t in self.thresholds), default=0)
        n_bits = integer_bit_width(0, widest)
        if n_bits > max_bits:
            feature = int(np.argmax([len(t) for t in self.thresholds]))
            raise ValueError(
                f"quantization='splits': feature {feature} has {widest} distinct thresholds, "
                f"{widest + 1} bins need {n_bits} bits > op_inputs={max_bits}; "
                "raise op_inputs or use quantization='uniform'"
            )
        self.options = QuantizationOptions(n_bits)
        self.scale = np.ones(len(self.thresholds))
        self.zero_point = np.zeros(len(self.thresholds), dtype=np.int64)

    def _as_compared(self, values: Any) -> np.ndarray:
        # xgboost compares float32(x) < float32(split), and its cuts sit on data values:
        # both sides must round the same way
        values = np.asarray(values, dtype=np.float64)
        return values.astype(np.float32).astype(np.float64) if self.strict else values

    def split_index(self, feature: int, threshold: float) -> int:
        """The k with ``x (<|<=) threshold`` ⇔ ``q <= k``."""
        return int(np.searchsorted(self.thresholds[feature], self._as_compared(threshold)))

    def quant(self, values: Any) -> np.ndarray:
        """Each feature's bin index: the number of its thresholds below the value."""
        check_finite(np.asarray(values, dtype=np.float64), "values to quantize")
        values = self._as_compared(values)
        side = "right" if self.strict else "left"
        columns = [np.searchsorted(t, values[:, f], side=side) for f, t in enumerate(self.thresholds)]
        return np.column_stack(columns).astype(np.int64)

    def dequant(self, qvalues: Any) -> np.ndarray:
        """Bin indices as floats (the grid has no float meaning beyond its order)."""
        return np.asarray(qvalues, dtype=np.float64)

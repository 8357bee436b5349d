"""Narrow an accumulator to a bit budget before a table lookup (``rounding_threshold_bits``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base_op import QuantizedOp, TensorSpec
from .integer_ops import QuantizedTruncate
from .registry import register_op


@register_op
class QuantizedTruncateToBits(QuantizedTruncate):
    """Keep the ``target_bits`` high bits of an integer whose range is wider (exact
    truncation, see :class:`QuantizedTruncate`); a no-op when it already fits.

    The number of bits cleared follows from the calibrated input range. The output's zero
    point moves by half the cleared step, so what the next op reads is the middle of each
    truncated interval rather than its floor (no bias, no extra cost).
    """

    op_type = "TruncateToBits"

    def __init__(self, name: str, target_bits: int, *, inputs: list[str] | None = None) -> None:
        QuantizedOp.__init__(self, name, inputs=inputs)
        if int(target_bits) < 2:
            raise ValueError(f"'{name}': rounding_threshold_bits must be at least 2, got {target_bits}")
        self.target_bits = int(target_bits)
        self.lsbs = 0

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        s = self.input_specs[0]
        self.lsbs = max(0, s.bit_width - self.target_bits)
        if self.lsbs == 0:
            return s
        center = 2 ** (self.lsbs - 1)
        return TensorSpec(s.scale, s.zero_point - center, self.q_impl(s.lo), self.q_impl(s.hi))

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return x  # the float reference is the un-truncated value

    def q_impl(self, x: Any) -> Any:
        return x if self.lsbs == 0 else super().q_impl(x)

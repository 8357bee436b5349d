"""Re-quantize a value onto a grid learned by quantization-aware training (an ONNX
QuantizeLinear → DequantizeLinear pair that no activation absorbs)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .ops import QuantizedUnivariateOp
from .quantizers import UniformQuantizer
from .registry import register_op


@register_op
class QuantizedQuantizeDequantize(QuantizedUnivariateOp):
    """``dequant(quant(x))`` on a fixed grid: one table lookup (fused with a neighbouring
    elementwise chain), whose output integers are exactly the grid's.

    Parameters
    ----------
    quantizer : UniformQuantizer
        The learned grid (scale, zero point, bit range).
    """

    op_type = "QuantizeDequantize"

    def __init__(self, name: str, quantizer: UniformQuantizer, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, n_bits=quantizer.options.n_bits, inputs=inputs)
        self.fixed_output_quantizer = quantizer

    def _f(self, x: Any) -> Any:
        return x  # the output quantizer puts it on the grid

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return self.fixed_output_quantizer.dequant(self.fixed_output_quantizer.quant(x))

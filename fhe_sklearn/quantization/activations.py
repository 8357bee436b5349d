"""More activations as table lookups (one PBS per element, fused with their neighbours):
the elementwise functions of imported networks."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import erf

from .ops import QuantizedUnivariateOp
from .registry import register_op


@register_op
class QuantizedTanh(QuantizedUnivariateOp):
    """tanh as one lookup."""

    op_type = "Tanh"

    def _f(self, x: Any) -> Any:
        return np.tanh(x)


@register_op
class QuantizedGelu(QuantizedUnivariateOp):
    """GELU, exact (erf) form."""

    op_type = "Gelu"

    def _f(self, x: Any) -> Any:
        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


@register_op
class QuantizedSoftplus(QuantizedUnivariateOp):
    """``log(1 + exp(x))`` as one lookup."""

    op_type = "Softplus"

    def _f(self, x: Any) -> Any:
        return np.logaddexp(0.0, x)


class _AlphaActivation(QuantizedUnivariateOp):
    def __init__(self, name: str, n_bits: int = 8, alpha: float = 0.01, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, n_bits, inputs=inputs)
        self.alpha = float(alpha)


@register_op
class QuantizedLeakyRelu(_AlphaActivation):
    """``x`` if ``x >= 0`` else ``alpha * x`` as one lookup."""

    op_type = "LeakyRelu"

    def _f(self, x: Any) -> Any:
        return np.where(x >= 0, x, self.alpha * x)


@register_op
class QuantizedElu(_AlphaActivation):
    """``x`` if ``x >= 0`` else ``alpha * (exp(x) - 1)`` as one lookup."""

    op_type = "Elu"

    def _f(self, x: Any) -> Any:
        return np.where(x >= 0, x, self.alpha * np.expm1(np.minimum(x, 0)))


@register_op
class QuantizedHardSigmoid(QuantizedUnivariateOp):
    """``clip(alpha * x + beta, 0, 1)`` (ONNX HardSigmoid)."""

    op_type = "HardSigmoid"

    def __init__(
        self, name: str, n_bits: int = 8, alpha: float = 0.2, beta: float = 0.5, *, inputs: list[str] | None = None
    ) -> None:
        super().__init__(name, n_bits, inputs=inputs)
        self.alpha, self.beta = float(alpha), float(beta)

    def _f(self, x: Any) -> Any:
        return np.clip(self.alpha * x + self.beta, 0.0, 1.0)

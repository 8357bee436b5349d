"""Elementwise multiplication (ONNX ``Mul``): by a clear constant, or of two encrypted tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
from concrete import fhe

from .base_op import QuantizedOp, TensorSpec, hint_range
from .quantizers import MAX_BIT_WIDTH, check_n_bits, integer_bit_width
from .registry import register_op


def _interval_product(a: tuple[Any, Any], b: tuple[Any, Any]) -> tuple[Any, Any]:
    corners = [x * y for x in (np.asarray(a[0], object), np.asarray(a[1], object)) for y in b]
    return np.minimum.reduce(corners), np.maximum.reduce(corners)


@register_op
class QuantizedMul(QuantizedOp):
    """Elementwise product with a clear constant or between two encrypted inputs.

    By a clear non-zero constant (scalar or broadcastable per element): the constant's
    magnitude moves into the scale and its sign flips the integers (a leveled product by
    ±1), so it costs nothing.

    Of two encrypted inputs ``a`` and ``b`` (centred on their zero points): with
    ``s = a + b`` and ``d = a - b``, ``a * b = (s² - d²) / 4``, two table lookups per
    element, each reading one bit more than the wider input. The tables compute
    ``round(v² / 4k)``: with ``k = 1`` the product is exact (``s`` and ``d`` have the same
    parity, so the two roundings cancel); with ``k > 1`` they also re-quantize it, at most
    one output step off. We write the two lookups ourselves rather than let concrete
    multiply because only then can the re-quantization ride in the tables: concrete's
    ``x * y`` is the same two lookups (measured: 16 PBS, complexity 2.71e10 for 8 products
    of 6-bit integers, both ways) but returns the 12-bit exact product, which the next
    lookup must read or truncate first; tables giving ``n_bits`` = 6 bits cost 1.87e10
    (-31%) and keep the circuit at 7 bits instead of 12.

    Parameters
    ----------
    constant : array-like, optional
        The clear factor; None for a product of two encrypted inputs.
    n_bits : int, optional
        Two encrypted inputs: the product is re-quantized to about ``n_bits`` bits of
        magnitude (``k`` chosen so the worst case spans ``2**n_bits - 1`` steps each side);
        None keeps it exact.
    """

    op_type = "Mul"

    def __init__(
        self, name: str, constant: Any = None, n_bits: int | None = None, *, inputs: list[str] | None = None
    ) -> None:
        super().__init__(name, inputs=inputs)
        self.constant = None if constant is None else np.asarray(constant, dtype=np.float64)
        self.n_bits = None if n_bits is None else check_n_bits(n_bits, f"n_bits of the output of '{name}'")
        # by a constant: elementwise, so it fuses into a neighbouring lookup for free
        self.is_elementwise = self.constant is not None
        expected = 1 if self.constant is not None else 2
        if len(self.inputs) != expected:
            raise ValueError(f"Mul '{name}' needs {expected} encrypted input(s), got {self.inputs}")
        if self.constant is not None and (not np.all(np.isfinite(self.constant)) or np.any(self.constant == 0)):
            raise ValueError(f"Mul '{name}': the constant must be finite and non-zero (a zero factor is a constant)")

    def float_forward(self, *xs: np.ndarray) -> np.ndarray:
        return xs[0] * (self.constant if self.constant is not None else xs[1])

    def _calibrate(self, float_output: np.ndarray, *xs: np.ndarray) -> TensorSpec:
        if self.constant is None:
            return self._calibrate_product()
        s = self.input_specs[0]
        # a constant with the batch axis (ONNX broadcasting) applies to every sample alike
        constant = self.constant[0] if self.constant.ndim == xs[0].ndim else self.constant
        self.sign = np.sign(constant).astype(np.int64)
        if np.all(self.sign == 1):
            self.sign = np.int64(1)
            return TensorSpec(s.scale * constant, s.zero_point, s.lo, s.hi)
        lo, hi = s.lo * self.sign, s.hi * self.sign
        return TensorSpec(s.scale * np.abs(constant), s.zero_point * self.sign, np.minimum(lo, hi), np.maximum(lo, hi))

    def _calibrate_product(self) -> TensorSpec:
        a, b = self.input_specs
        self.centered = [(s.lo - s.zero_point, s.hi - s.zero_point) for s in (a, b)]
        (a_lo, a_hi), (b_lo, b_hi) = self.centered
        self.sum_range = (a_lo + b_lo, a_hi + b_hi)
        self.difference_range = (a_lo - b_hi, a_hi - b_lo)
        width = max(integer_bit_width(*self.sum_range), integer_bit_width(*self.difference_range))
        if width > MAX_BIT_WIDTH:
            raise ValueError(
                f"Mul '{self.name}': the product of inputs of {a.bit_width} and {b.bit_width} bits needs "
                f"{width}-bit table lookups, over the {MAX_BIT_WIDTH}-bit FHE limit: re-quantize the inputs "
                "first (an activation, or a lower rounding_threshold_bits) or lower their n_bits"
            )
        p_lo, p_hi = _interval_product(*self.centered)
        reach = float(max(np.max(np.abs(p_lo)), np.max(np.abs(p_hi))))
        levels = 2**self.n_bits - 1 if self.n_bits is not None else np.inf
        self.divisor = max(1.0, reach / levels)
        if self.divisor == 1.0:
            lo, hi = p_lo, p_hi
        else:  # each of the two roundings moves the result by at most half a step
            lo, hi = np.floor(p_lo / self.divisor) - 1, np.ceil(p_hi / self.divisor) + 1
        scale = np.asarray(a.scale) * np.asarray(b.scale) * self.divisor
        return TensorSpec(scale, 0, np.asarray(lo, np.int64), np.asarray(hi, np.int64))

    def _square_table(self, v: Any) -> Any:
        """``round(v² / 4k)``; the same numpy code builds the FHE table and runs in the clear."""
        return np.rint(v.astype(np.float64) ** 2 / (4.0 * self.divisor)).astype(np.int64)

    def univariate_fn(self, q: Any) -> Any:
        return q if np.ndim(self.sign) == 0 and self.sign == 1 else q * self.sign

    def q_impl(self, *qs: Any) -> Any:
        if self.constant is not None:
            return self.univariate_fn(qs[0])
        a, b = (hint_range(q - s.zero_point, *r) for q, s, r in zip(qs, self.input_specs, self.centered))
        total, difference = hint_range(a + b, *self.sum_range), hint_range(a - b, *self.difference_range)
        if isinstance(total, fhe.tracing.Tracer):
            square = fhe.univariate(self._square_table)
            return square(total) - square(difference)
        return self._square_table(total) - self._square_table(difference)

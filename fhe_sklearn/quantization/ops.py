"""Quantized operators: leveled ones (Gemm, Add, Reshape) and table lookups (activations,
comparisons)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base_op import QuantizedOp, TensorSpec, hint_range
from .quantizers import (
    MAX_BIT_WIDTH,
    MAX_LEVELED_BIT_WIDTH,
    MinMaxQuantizationStats,
    QuantizationOptions,
    UniformQuantizer,
    check_n_bits,
    integer_bit_width,
)
from .registry import register_op
from .weight_bits import fewest_weight_bits, truncation_variance, weight_error_variance


def _interval_matmul(lo: np.ndarray, hi: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact integer bounds of x @ weights for every x with lo <= x <= hi (per row of weights)."""
    lo = np.broadcast_to(lo, weights.shape[:1]).astype(object)[:, None]
    hi = np.broadcast_to(hi, weights.shape[:1]).astype(object)[:, None]
    w = weights.astype(object)
    # python ints: no silent int64 overflow while checking for overflow
    a, b = lo * w, hi * w
    return np.minimum(a, b).sum(axis=0), np.maximum(a, b).sum(axis=0)


def known_weight_grid(weight: np.ndarray, weight_scale: Any, name: str) -> np.ndarray:
    """``weight_scale`` checked: positive, finite, and ``weight`` integers times it (the
    learned grid of a quantization-aware model), broadcast over the output axis -1."""
    scale = np.asarray(weight_scale, dtype=np.float64)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        raise ValueError(f"'{name}': weight_scale must be positive and finite")
    try:
        integers = weight / scale
    except ValueError:
        raise ValueError(f"'{name}': weight_scale of shape {scale.shape} does not fit weights {weight.shape}") from None
    if np.max(np.abs(integers - np.rint(integers)), initial=0.0) > 1e-3:
        raise ValueError(f"'{name}': the weights are not integers times weight_scale (not on that grid)")
    return scale


@register_op
class QuantizedGemm(QuantizedOp):
    """Encrypted × clear matrix product plus bias: ``y = x @ weight + bias``.

    The input's per-feature scales are folded into the weights before they are quantized
    (symmetric, one scale per output column). The circuit only accumulates the input codes,
    centred on the middle of their integer range: ``(x_q - c) @ w_q``. Everything constant
    (the bias and the input zero points times the float weights) becomes the output's zero
    point, applied in the clear when the result is de-quantized. So an input far from zero
    (a year, a timestamp) costs the accumulator no more than a centred one.

    Parameters
    ----------
    weight : ndarray of shape (n_in, n_out)
    bias : ndarray of shape (n_out,), optional
    n_bits : int
        Bit-width of the quantized weights.
    max_accumulator_bits : int, optional
        If set, coarsen a column's weight scale as needed so the worst-case accumulator fits
        this many bits (accumulator-aware quantization: 0 extra PBS, no overflow possible).
        Up to 16 bits for an accumulator a table lookup reads; up to 32
        (``MAX_LEVELED_BIT_WIDTH``) for one that only leaves the circuit (e.g. a linear
        layer's output, de-quantized by the client). If None, an accumulator over 16 bits
        is an error.
    weight_scale : float or ndarray of shape (n_out,), optional
        The weights' own grid, learned by quantization-aware training: ``weight`` holds
        integers times this scale (per output column), and those integers become the
        circuit's exactly (``n_bits`` and ``max_accumulator_bits`` do not apply) when the
        input has one scale; with per-feature input scales, folding them leaves the grid, so
        the weights are quantized as without it.
    """

    op_type = "Gemm"
    n_bits_role = "op_weights"

    def __init__(
        self,
        name: str,
        weight: np.ndarray,
        bias: np.ndarray | None = None,
        n_bits: int = 8,
        *,
        inputs: list[str] | None = None,
        max_accumulator_bits: int | None = None,
        weight_scale: Any = None,
    ) -> None:
        super().__init__(name, inputs=inputs)
        self.weight = np.atleast_2d(np.asarray(weight, dtype=np.float64))
        n_out = self.weight.shape[1]
        self.bias = np.zeros(n_out) if bias is None else np.asarray(bias, dtype=np.float64).reshape(n_out)
        self.n_bits = check_n_bits(n_bits, f"n_bits of the weights of '{name}'")
        if max_accumulator_bits is not None and not (
            isinstance(max_accumulator_bits, (int, np.integer))
            and not isinstance(max_accumulator_bits, bool)
            and 1 <= max_accumulator_bits <= MAX_LEVELED_BIT_WIDTH
        ):
            raise ValueError(
                f"max_accumulator_bits must be an integer in [1, {MAX_LEVELED_BIT_WIDTH}], got {max_accumulator_bits!r}"
            )
        self.max_accumulator_bits = None if max_accumulator_bits is None else int(max_accumulator_bits)
        self.weight_scale = None if weight_scale is None else known_weight_grid(self.weight, weight_scale, name)
        #: set by an importer when a lookup reads this accumulator truncated to that many bits:
        #: the weights then get the fewest bits (up to ``n_bits``) that add no more error than
        #: the truncation (:mod:`.weight_bits`); ``weight_bits`` is the width chosen
        self.truncated_to: int | None = None
        self.weight_bits = self.n_bits

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return x @ self.weight + self.bias

    def check_bit_width(self) -> None:
        # a wide accumulator is leveled arithmetic only: a lookup reading it checks its own input
        if self.output_spec.bit_width > max(MAX_BIT_WIDTH, self.max_accumulator_bits or 0):
            super().check_bit_width()

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        spec = self.input_specs[0]
        n_in = self.weight.shape[0]
        if x.shape[-1] != n_in:
            raise ValueError(f"'{self.name}': {x.shape[-1]} input features, weights expect {n_in}")
        if self.weight_scale is not None and np.unique(spec.scale).size == 1:
            return self._calibrate_on_known_grid(float_output, x)
        # per-feature input scales (no learned input grid) fold into the weights, which
        # leaves the learned grid: the weights are then quantized like any others
        folded = np.broadcast_to(spec.scale, (n_in,))[:, None] * self.weight
        q_lo, q_hi = np.broadcast_to(spec.lo, (n_in,)), np.broadcast_to(spec.hi, (n_in,))
        # centring on the middle of the integer range (not on the zero point) keeps the
        # accumulator small whatever the float offset of the feature
        center = (q_lo + q_hi) // 2
        d_lo, d_hi = q_lo - center, q_hi - center
        # y = (x_q - c) @ folded + offset, with offset = bias + (c - z) @ folded in float
        offset = self.bias + (center - np.broadcast_to(spec.zero_point, (n_in,))) @ folded
        codes = np.clip(np.rint(x.reshape(-1, n_in) / spec.scale) + spec.zero_point, q_lo, q_hi)
        bits = self.n_bits
        if self.truncated_to is not None:

            def trial(b: int) -> tuple[float, float]:
                scale = self._weight_scale(folded, d_lo, d_hi, offset, b)
                wq = np.rint(folded / scale).astype(np.int64)
                width = integer_bit_width(*_interval_matmul(d_lo, d_hi, wq))
                error = (codes - center) @ (wq * scale - folded)
                return weight_error_variance(error), truncation_variance(scale, width, self.truncated_to)

            bits = fewest_weight_bits(self.n_bits, trial)
        self.weight_bits = bits
        scale = self._weight_scale(folded, d_lo, d_hi, offset, bits)
        self.weight_q = np.rint(folded / scale).astype(np.int64)
        # bias correction: the rounded weights shift the mean score by (mean code - c) @ error,
        # since typical inputs sit far from the middle of their range; remove that shift
        estimate = ((codes - center) @ self.weight_q) * scale + offset
        offset = offset + np.mean(float_output.reshape(-1, self.weight.shape[1]) - estimate, axis=0)
        self.input_offset = center
        self.centered_range = (d_lo, d_hi)
        self.product_range = _interval_matmul(d_lo, d_hi, self.weight_q)
        lo, hi = self.product_range
        return TensorSpec(scale, -np.rint(offset / scale).astype(np.int64), lo, hi)

    def _weight_scale(self, folded: np.ndarray, d_lo: Any, d_hi: Any, offset: np.ndarray, bits: int) -> np.ndarray:
        """Per-column scale of ``bits``-bit symmetric weights (coarsened to fit
        ``max_accumulator_bits`` if set)."""
        levels = 2 ** (bits - 1) - 1 if bits > 1 else 1
        max_abs = np.abs(folded).max(axis=0)
        # an output without weights is its offset alone: a grid fine enough to hold it
        scale = np.where(max_abs > 0, max_abs / levels, np.where(offset != 0, np.abs(offset) / 2.0**30, 1.0))
        # the zero point -offset / scale must stay an exact int64 (only a model whose
        # weights are negligible next to its intercept gets a coarser scale from this)
        scale = np.maximum(scale, np.abs(offset) / 2.0**52)
        if self.max_accumulator_bits is not None:
            scale = self._fit_accumulator(folded, d_lo, d_hi, scale)
        return scale

    def _calibrate_on_known_grid(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        """The learned integer weights as they are: output scale = input scale × weight
        scale, the bias and zero points in the output's zero point (no bias correction:
        the integer program is the trained one)."""
        spec = self.input_specs[0]
        n_in = self.weight.shape[0]
        input_scale = float(np.unique(spec.scale)[0])
        q_lo, q_hi = np.broadcast_to(spec.lo, (n_in,)), np.broadcast_to(spec.hi, (n_in,))
        center = (q_lo + q_hi) // 2
        self.weight_q = np.rint(self.weight / self.weight_scale).astype(np.int64)
        scale = input_scale * np.broadcast_to(self.weight_scale, self.bias.shape)
        offset = self.bias + (center - np.broadcast_to(spec.zero_point, (n_in,))) @ (self.weight * input_scale)
        self.input_offset = center
        self.centered_range = (q_lo - center, q_hi - center)
        self.product_range = _interval_matmul(*self.centered_range, self.weight_q)
        return TensorSpec(scale, -np.rint(offset / scale).astype(np.int64), *self.product_range)

    def _fit_accumulator(self, folded, d_lo, d_hi, scale) -> np.ndarray:
        limit = 2 ** (self.max_accumulator_bits - 1) - 1
        reach = np.maximum(np.abs(d_lo), np.abs(d_hi)).astype(np.float64)
        # each rounded weight may grow by 1/2 a step: keep that slack out of the budget
        room = limit - 0.5 * reach.sum()
        if room <= 0:
            raise ValueError(
                f"QuantizedGemm '{self.name}': {len(reach)} inputs of up to "
                f"{int(reach.max()).bit_length() + 1} bits cannot fit a {self.max_accumulator_bits}-bit "
                f"accumulator even with 1-bit weights: lower the n_bits of the inputs ({self.overflow_hint})"
            )
        needed = (np.abs(folded) * reach[:, None]).sum(axis=0)
        scale = np.maximum(scale, needed / room)
        for _ in range(64):
            wq = np.rint(folded / scale).astype(np.int64)
            lo, hi = _interval_matmul(d_lo, d_hi, wq)
            too_big = (np.asarray(hi, dtype=object) > limit) | (np.asarray(lo, dtype=object) < -limit - 1)
            if not too_big.any():
                return scale
            scale = np.where(too_big.astype(bool), scale * 1.01, scale)
        raise RuntimeError(f"QuantizedGemm '{self.name}': could not fit the accumulator")  # pragma: no cover

    def q_impl(self, x: Any) -> Any:
        if np.any(self.input_offset != 0):
            x = hint_range(x - self.input_offset, *self.centered_range)
        return hint_range(x @ self.weight_q, *self.product_range)


@register_op
class QuantizedMatMul(QuantizedGemm):
    """Encrypted × clear matrix product without bias."""

    op_type = "MatMul"

    def __init__(self, name: str, weight: np.ndarray, n_bits: int = 8, **kwargs: Any) -> None:
        super().__init__(name, weight, None, n_bits, **kwargs)


class QuantizedUnivariateOp(QuantizedOp):
    """Elementwise float function of one encrypted input, evaluated as ONE table lookup:
    dequantize, apply ``_f``, re-quantize the result to ``n_bits`` (calibrated)."""

    is_univariate = True
    n_bits_role = "op_inputs"
    #: a grid learned elsewhere (quantization-aware training): used instead of calibrating
    fixed_output_quantizer: UniformQuantizer | None = None

    def __init__(self, name: str, n_bits: int = 8, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, inputs=inputs)
        self.n_bits = check_n_bits(n_bits, f"n_bits of the output of '{name}'")

    def _f(self, x: Any) -> Any:
        raise NotImplementedError

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return self._f(x)

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        if self.fixed_output_quantizer is not None:
            self.output_quantizer = self.fixed_output_quantizer
        else:
            options = QuantizationOptions(self.n_bits)
            stats = MinMaxQuantizationStats().compute_quantization_stats(float_output)
            self.output_quantizer = UniformQuantizer(options, stats)
        return self._spec_from_table(self.output_quantizer.scale, self.output_quantizer.zero_point)

    def _spec_from_table(self, scale: Any, zero_point: Any) -> TensorSpec:
        """Exact output bounds: evaluate the table on every integer the input can hold."""
        spec = self.input_specs[0]
        lo, hi = int(np.min(spec.lo)), int(np.max(spec.hi))
        if hi - lo >= 2**MAX_BIT_WIDTH:
            raise ValueError(
                f"'{self.name}': table lookup input of {spec.bit_width} bits exceeds {MAX_BIT_WIDTH}: "
                "round the accumulator first (rounding_threshold_bits) or lower n_bits"
            )
        grid = np.arange(lo, hi + 1, dtype=np.int64).reshape((-1,) + (1,) * spec.scale.ndim)
        table = self.univariate_fn(
            np.broadcast_to(grid, grid.shape[:1] + np.broadcast_shapes(spec.scale.shape, spec.zero_point.shape))
        )
        return TensorSpec(scale, zero_point, table.min(), table.max())

    def univariate_fn(self, q: Any) -> Any:
        spec = self.input_specs[0]
        y = self._f((q - spec.zero_point) * spec.scale)
        return self.output_quantizer.quant_traceable(y)


@register_op
class QuantizedRelu(QuantizedUnivariateOp):
    """ReLU, ``max(x, 0)``, as one TLU."""

    op_type = "Relu"

    def _f(self, x: Any) -> Any:
        return np.maximum(x, 0)


@register_op
class QuantizedSigmoid(QuantizedUnivariateOp):
    """Sigmoid, ``1 / (1 + exp(-x))``, as one TLU."""

    op_type = "Sigmoid"

    def _f(self, x: Any) -> Any:
        return 1.0 / (1.0 + np.exp(-x))


@register_op
class QuantizedAbs(QuantizedUnivariateOp):
    """Absolute value as one TLU."""

    op_type = "Abs"

    def _f(self, x: Any) -> Any:
        return np.abs(x)


@register_op
class QuantizedIdentity(QuantizedUnivariateOp):
    """Re-quantization to ``n_bits`` (one TLU); with ``n_bits=None``, a free pass-through."""

    op_type = "Identity"

    def __init__(self, name: str, n_bits: int | None = None, *, inputs: list[str] | None = None) -> None:
        QuantizedOp.__init__(self, name, inputs=inputs)
        self.n_bits = None if n_bits is None else check_n_bits(n_bits)
        self.is_univariate = n_bits is not None
        self.is_elementwise = n_bits is None

    def _f(self, x: Any) -> Any:
        return x

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        if self.n_bits is None:
            return self.input_specs[0]
        return super()._calibrate(float_output, x)

    def univariate_fn(self, q: Any) -> Any:
        return q if self.n_bits is None else super().univariate_fn(q)


class _QuantizedComparison(QuantizedUnivariateOp):
    """``x <op> threshold`` against clear constant(s): a 0/1 encrypted result, one TLU."""

    n_bits_role = None

    def __init__(self, name: str, threshold: Any, *, inputs: list[str] | None = None) -> None:
        QuantizedOp.__init__(self, name, inputs=inputs)
        self.threshold = np.asarray(threshold, dtype=np.float64)

    def _compare(self, x: Any) -> Any:
        raise NotImplementedError

    def _f(self, x: Any) -> Any:
        return self._compare(x).astype(np.float64)

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        return self._spec_from_table(1.0, 0)

    def univariate_fn(self, q: Any) -> Any:
        spec = self.input_specs[0]
        return self._compare((q - spec.zero_point) * spec.scale).astype(np.int64)


@register_op
class QuantizedLess(_QuantizedComparison):
    """``x < threshold`` as one TLU."""

    op_type = "Less"

    def _compare(self, x: Any) -> Any:
        return x < self.threshold


@register_op
class QuantizedLessOrEqual(_QuantizedComparison):
    """``x <= threshold`` as one TLU."""

    op_type = "LessOrEqual"

    def _compare(self, x: Any) -> Any:
        return x <= self.threshold


@register_op
class QuantizedGreater(_QuantizedComparison):
    """``x > threshold`` as one TLU."""

    op_type = "Greater"

    def _compare(self, x: Any) -> Any:
        return x > self.threshold


@register_op
class QuantizedGreaterOrEqual(_QuantizedComparison):
    """``x >= threshold`` as one TLU."""

    op_type = "GreaterOrEqual"

    def _compare(self, x: Any) -> Any:
        return x >= self.threshold


@register_op
class QuantizedEqual(_QuantizedComparison):
    """``x == threshold`` as one TLU."""

    op_type = "Equal"

    def _compare(self, x: Any) -> Any:
        return x == self.threshold


@register_op
class QuantizedAdd(QuantizedOp):
    """Sum of an encrypted input and a clear constant, or of two encrypted inputs.

    A constant is quantized on the input's grid (no PBS). Two encrypted inputs on the same
    grid are added as integers (no PBS). On different grids, the narrower input (fewer bits)
    is re-scaled onto the wider one's grid by one table lookup per element: the lookup then
    reads the narrow integers (e.g. a 6-bit activation) rather than a wide accumulator, so a
    residual ``x + f(x)`` whose ``f`` ends with a linear layer costs a small lookup, and the
    accumulator keeps all its precision.
    """

    op_type = "Add"
    #: sign of the second operand
    _sign = 1
    #: which of two encrypted inputs keeps its grid (set by calibration)
    kept = 0

    def __init__(self, name: str, constant: Any = None, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, inputs=inputs)
        self.constant = None if constant is None else np.asarray(constant, dtype=np.float64)
        # adding a constant is elementwise: it fuses into a neighbouring lookup for free
        self.is_elementwise = self.constant is not None
        expected = 1 if self.constant is not None else 2
        if len(self.inputs) != expected:
            raise ValueError(f"{type(self).__name__} '{name}' needs {expected} encrypted input(s), got {self.inputs}")

    def float_forward(self, *xs: np.ndarray) -> np.ndarray:
        return xs[0] + self._sign * (self.constant if self.constant is not None else xs[1])

    def _calibrate(self, float_output: np.ndarray, *xs: np.ndarray) -> TensorSpec:
        a = self.input_specs[0]
        if self.constant is not None:
            self.constant_q = np.rint(self.constant / a.scale).astype(np.int64)
            return TensorSpec(a.scale, a.zero_point, a.lo + self.constant_q, a.hi + self.constant_q)
        b = self.input_specs[1]
        # the wider input keeps its grid; ties: the first input's
        self.kept = 1 if b.bit_width > a.bit_width else 0
        kept, moved = self.input_specs[self.kept], self.input_specs[1 - self.kept]
        self.ratio = np.broadcast_to(moved.scale / kept.scale, np.broadcast_shapes(a.scale.shape, b.scale.shape))
        self.rescale = not np.all(self.ratio == 1.0)
        (a_lo, a_hi), (b_lo, b_hi) = self._term_range(0), self._term_range(1)
        if self._sign < 0:
            b_lo, b_hi = -b_hi, -b_lo
        return TensorSpec(kept.scale, 0, a_lo + b_lo, a_hi + b_hi)

    def _term(self, index: int, q: Any) -> Any:
        """Input ``index``'s integers, centred on its zero point, on the output grid."""
        spec = self.input_specs[index]
        if index == self.kept or not self.rescale:
            return q - spec.zero_point
        return np.rint((q - spec.zero_point) * self.ratio).astype(np.int64)

    def _term_range(self, index: int) -> tuple[Any, Any]:
        spec = self.input_specs[index]
        return self._term(index, spec.lo), self._term(index, spec.hi)

    def univariate_fn(self, q: Any) -> Any:
        return q + self.constant_q

    def q_impl(self, *qs: Any) -> Any:
        if self.constant is not None:
            return self.univariate_fn(qs[0])
        left, right = (hint_range(self._term(i, qs[i]), *self._term_range(i)) for i in (0, 1))
        return left + right if self._sign > 0 else left - right


@register_op
class QuantizedSub(QuantizedAdd):
    """Difference of two encrypted inputs (a constant is subtracted by
    :class:`QuantizedAdd` with the constant negated); grids are matched as in
    :class:`QuantizedAdd`."""

    op_type = "Sub"
    _sign = -1

    def __init__(self, name: str, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, inputs=inputs)


@register_op
class QuantizedConcat(QuantizedOp):
    """Concatenation of encrypted tensors along ``axis`` (ONNX ``Concat``; axis 0 is the
    batch axis). Each part keeps its own grid: the output's scale and zero point are
    per element, so no value is re-quantized and it costs no PBS. Ops that need one grid
    for the whole tensor (Conv, pooling) refuse such an input with a clear error.
    """

    op_type = "Concat"

    def __init__(self, name: str, axis: int, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, inputs=inputs)
        self.axis = int(axis)
        if len(self.inputs) < 1:
            raise ValueError(f"Concat '{name}' needs at least one input")

    def _sample_axis(self, ndim: int) -> int:
        axis = self.axis + ndim if self.axis < 0 else self.axis
        if not 1 <= axis < ndim:
            raise ValueError(f"Concat '{self.name}': axis {self.axis} is not a feature axis of a {ndim}-d tensor")
        return axis

    def float_forward(self, *xs: np.ndarray) -> np.ndarray:
        return np.concatenate(xs, axis=self._sample_axis(xs[0].ndim))

    def _calibrate(self, float_output: np.ndarray, *xs: np.ndarray) -> TensorSpec:
        axis = self._sample_axis(xs[0].ndim) - 1

        def joined(field: str) -> np.ndarray:
            parts = [np.broadcast_to(getattr(s, field), x.shape[1:]) for s, x in zip(self.input_specs, xs)]
            return np.concatenate(parts, axis=axis)

        return TensorSpec(joined("scale"), joined("zero_point"), joined("lo"), joined("hi"))

    def q_impl(self, *qs: Any) -> Any:
        return np.concatenate(qs, axis=self._sample_axis(qs[0].ndim))


@register_op
class QuantizedReshape(QuantizedOp):
    """Reshape of one sample (the batch axis is kept); no PBS."""

    op_type = "Reshape"

    def __init__(self, name: str, shape: tuple[int, ...], *, inputs: list[str] | None = None) -> None:
        super().__init__(name, inputs=inputs)
        self.shape = tuple(shape)

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return x.reshape((x.shape[0], *self.shape))

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        s = self.input_specs[0]
        sample = x.shape[1:]

        def reshape(v: np.ndarray) -> np.ndarray:
            return v if v.ndim == 0 else np.broadcast_to(v, sample).reshape(self.shape)

        return TensorSpec(reshape(s.scale), reshape(s.zero_point), reshape(s.lo), reshape(s.hi))

    def q_impl(self, x: Any) -> Any:
        return x.reshape((x.shape[0], *self.shape))

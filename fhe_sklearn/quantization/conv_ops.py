"""Quantized ops of convolutional networks: Conv, AveragePool, MaxPool and Transpose. Inputs
are per-tensor quantized images ``(C, H, W)`` (or ``(C, L)``), one sample at a time in FHE."""

from __future__ import annotations

from typing import Any

import numpy as np
from concrete import fhe

from .base_op import QuantizedOp, TensorSpec, hint_range
from .ops import known_weight_grid
from .quantizers import check_n_bits, integer_bit_width
from .registry import register_op
from .weight_bits import fewest_weight_bits, truncation_variance, weight_error_variance


def _one_value(value: Any, what: str, name: str) -> Any:
    values = np.unique(np.asarray(value))
    if len(values) != 1:
        raise ValueError(f"'{name}' needs a per-tensor quantized input ({what} varies across the tensor)")
    return values[0]


def _spatial(value: Any, n_dims: int, default: int) -> tuple[int, ...]:
    if value is None:
        return (default,) * n_dims
    return tuple(int(v) for v in np.broadcast_to(np.asarray(value), (n_dims,)))


def _channel_spec(values: Any, sample_shape: tuple[int, ...]) -> np.ndarray:
    """Per-channel values, shaped to broadcast over one sample (C, *spatial)."""
    values = np.asarray(values)
    return values.reshape((-1,) + (1,) * (len(sample_shape) - 1)) if values.ndim else values


@register_op
class QuantizedConv(QuantizedOp):
    """Encrypted × clear N-d convolution (ONNX ``Conv``) plus bias.

    The input is per-tensor quantized; weights are symmetric per output channel, their scale
    chosen (like :class:`~fhe_sklearn.quantization.ops.QuantizedGemm`) so the worst-case
    accumulator fits ``max_accumulator_bits``. The circuit computes
    ``conv(x_q - z_x, w_q) + b_q`` exactly; the output has one scale per channel.

    Parameters
    ----------
    weight : ndarray of shape (C_out, C_in / group, *kernel)
    bias : ndarray of shape (C_out,), optional
    n_bits : int
        Bits of the weights.
    strides, pads, dilations : sequence of int, optional
        As in ONNX (``pads`` holds the begin pads of every axis, then the end pads).
    group : int
    max_accumulator_bits : int, optional
        Coarsen the weight grid so the accumulator fits; None: over 16 bits is an error.
    weight_scale : float or ndarray of shape (C_out,), optional
        The weights' learned grid (quantization-aware training): ``weight`` holds integers
        times it, per output channel, and those integers are the circuit's exactly
        (``n_bits`` and ``max_accumulator_bits`` do not apply).
    """

    op_type = "Conv"
    n_bits_role = "op_weights"

    def __init__(
        self,
        name: str,
        weight: Any,
        bias: Any = None,
        n_bits: int = 8,
        strides: Any = None,
        pads: Any = None,
        dilations: Any = None,
        group: int = 1,
        *,
        inputs: list[str] | None = None,
        max_accumulator_bits: int | None = None,
        weight_scale: Any = None,
    ) -> None:
        super().__init__(name, inputs=inputs)
        self.weight = np.asarray(weight, dtype=np.float64)
        if self.weight.ndim < 3:
            raise ValueError(f"Conv '{name}': weight must be (C_out, C_in/group, *kernel), got {self.weight.shape}")
        n_dims = self.weight.ndim - 2
        self.bias = np.zeros(len(self.weight)) if bias is None else np.asarray(bias, dtype=np.float64)
        self.n_bits = check_n_bits(n_bits, f"n_bits of the weights of '{name}'")
        self.strides = _spatial(strides, n_dims, 1)
        self.dilations = _spatial(dilations, n_dims, 1)
        self.pads = tuple(int(p) for p in pads) if pads is not None else (0,) * (2 * n_dims)
        self.group = int(group)
        self.max_accumulator_bits = max_accumulator_bits
        self.weight_scale = None
        if weight_scale is not None:
            grid = np.asarray(weight_scale, dtype=np.float64)
            if grid.ndim:  # one scale per output channel: axis 0 of the weights
                grid = grid.reshape((-1,) + (1,) * (self.weight.ndim - 1))
            grid = known_weight_grid(self.weight, grid, name)
            self.weight_scale = np.broadcast_to(grid.reshape(-1), (len(self.weight),)).copy()
        #: as :attr:`QuantizedGemm.truncated_to <fhe_sklearn.quantization.ops.QuantizedGemm>`
        self.truncated_to: int | None = None
        self.weight_bits = self.n_bits

    def _conv(self, x: Any, weight: Any) -> Any:
        return fhe.conv(x, weight, pads=self.pads, strides=self.strides, dilations=self.dilations, group=self.group)

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        out = self._conv(x, self.weight)
        return out + _channel_spec(self.bias, out.shape[1:])

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        spec = self.input_specs[0]
        scale = float(_one_value(spec.scale, "scale", self.name))
        zero = int(_one_value(spec.zero_point, "zero point", self.name))
        d_lo, d_hi = int(np.min(spec.lo)) - zero, int(np.max(spec.hi)) - zero
        folded = self.weight * scale
        bits = self.n_bits
        if self.truncated_to is not None and self.weight_scale is None:
            codes = np.clip(np.rint(x / scale) + zero, zero + d_lo, zero + d_hi) - zero

            def trial(b: int) -> tuple[float, float]:
                w_scale = self._weight_scale(folded, scale, d_lo, d_hi, b)
                shape = (-1,) + (1,) * (folded.ndim - 1)
                wq = np.rint(folded / w_scale.reshape(shape))
                bias_q = np.rint(self.bias / w_scale)
                flat = wq.reshape(len(wq), -1)
                low = np.minimum(flat * d_lo, flat * d_hi).sum(axis=1) + bias_q
                high = np.maximum(flat * d_lo, flat * d_hi).sum(axis=1) + bias_q
                error = self._conv(codes, wq * w_scale.reshape(shape) - folded)
                width = integer_bit_width(np.minimum(low, 0), np.maximum(high, 0))
                return weight_error_variance(error), truncation_variance(w_scale, width, self.truncated_to)

            bits = fewest_weight_bits(self.n_bits, trial)
        self.weight_bits = bits
        w_scale = self._weight_scale(folded, scale, d_lo, d_hi, bits)
        self.weight_q = np.rint(folded / w_scale.reshape((-1,) + (1,) * (folded.ndim - 1))).astype(np.int64)
        self.bias_q = np.rint(self.bias / w_scale).astype(np.int64)
        self.input_offset = zero
        self.centered_range = (d_lo, d_hi)
        flat = self.weight_q.reshape(len(self.weight_q), -1)
        # padding adds zeros (the real 0): a window may see 0 in place of any input
        low = np.minimum(np.minimum(flat * d_lo, flat * d_hi), 0 if any(self.pads) else np.inf).sum(axis=1)
        high = np.maximum(np.maximum(flat * d_lo, flat * d_hi), 0 if any(self.pads) else -np.inf).sum(axis=1)
        sample = float_output.shape[1:]
        self.product_range = (_channel_spec(low.astype(np.int64), sample), _channel_spec(high.astype(np.int64), sample))
        self.channel_bias = _channel_spec(self.bias_q, sample)
        lo, hi = self.product_range
        return TensorSpec(_channel_spec(w_scale, sample), 0, lo + self.channel_bias, hi + self.channel_bias)

    def _weight_scale(self, folded: np.ndarray, scale: float, d_lo: int, d_hi: int, bits: int) -> np.ndarray:
        """Per-channel scale of ``bits``-bit symmetric weights: the learned grid if any, else
        coarsened as needed so the worst-case accumulator fits ``max_accumulator_bits``."""
        if self.weight_scale is not None:  # the learned integers, as they are
            return self.weight_scale * scale
        per_channel = folded.reshape(len(folded), -1)
        levels = 2 ** (bits - 1) - 1 if bits > 1 else 1
        max_abs = np.abs(per_channel).max(axis=1)
        w_scale = np.where(max_abs > 0, max_abs / levels, 1.0)
        if self.max_accumulator_bits is not None:
            limit = 2 ** (self.max_accumulator_bits - 1) - 1
            reach = max(abs(d_lo), abs(d_hi))
            # each rounded weight may grow by half a step, the bias by half a step too
            room = limit - 0.5 * reach * per_channel.shape[1] - 0.5
            if room <= 0:
                raise ValueError(
                    f"Conv '{self.name}': {per_channel.shape[1]} products of {reach.bit_length() + 1}-bit inputs "
                    f"cannot fit a {self.max_accumulator_bits}-bit accumulator: lower the n_bits of the inputs "
                    f"({self.overflow_hint})"
                )
            needed = np.abs(per_channel).sum(axis=1) * reach + np.abs(self.bias)
            w_scale = np.maximum(w_scale, needed / room)
        return w_scale

    def q_impl(self, x: Any) -> Any:
        if self.input_offset != 0:
            x = hint_range(x - self.input_offset, *self.centered_range)
        return hint_range(self._conv(x, self.weight_q), *self.product_range) + self.channel_bias


@register_op
class QuantizedAveragePool(QuantizedOp):
    """Average pooling as an integer window sum (a grouped convolution with a kernel of ones,
    no PBS); the division moves into the output scale."""

    op_type = "AveragePool"

    def __init__(
        self, name: str, kernel_shape: Any, strides: Any = None, pads: Any = None, *, inputs: list[str] | None = None
    ) -> None:
        super().__init__(name, inputs=inputs)
        self.kernel_shape = tuple(int(k) for k in kernel_shape)
        n_dims = len(self.kernel_shape)
        self.strides = _spatial(strides, n_dims, 1)
        self.pads = tuple(int(p) for p in pads) if pads is not None else (0,) * (2 * n_dims)

    def _sum(self, x: Any, n_channels: int) -> Any:
        ones = np.ones((n_channels, 1, *self.kernel_shape), dtype=np.int64)
        return fhe.conv(x, ones, pads=self.pads, strides=self.strides, group=n_channels)

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return self._sum(x, x.shape[1]) / np.prod(self.kernel_shape)

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        spec = self.input_specs[0]
        scale = float(_one_value(spec.scale, "scale", self.name))
        self.input_offset = int(_one_value(spec.zero_point, "zero point", self.name))
        self.n_channels = x.shape[1]
        size = int(np.prod(self.kernel_shape))
        d_lo, d_hi = int(np.min(spec.lo)) - self.input_offset, int(np.max(spec.hi)) - self.input_offset
        if any(self.pads):
            d_lo, d_hi = min(d_lo, 0), max(d_hi, 0)
        self.centered_range = (int(np.min(spec.lo)) - self.input_offset, int(np.max(spec.hi)) - self.input_offset)
        return TensorSpec(scale / size, 0, size * d_lo, size * d_hi)

    def q_impl(self, x: Any) -> Any:
        if self.input_offset != 0:
            x = hint_range(x - self.input_offset, *self.centered_range)
        return self._sum(x, self.n_channels)


@register_op
class QuantizedMaxPool(QuantizedOp):
    """Max pooling on encrypted integers (concrete's ``fhe.maxpool``: comparisons, PBS)."""

    op_type = "MaxPool"

    def __init__(self, name: str, kernel_shape: Any, strides: Any = None, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, inputs=inputs)
        self.kernel_shape = tuple(int(k) for k in kernel_shape)
        self.strides = _spatial(strides, len(self.kernel_shape), 1)

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return fhe.maxpool(x, kernel_shape=self.kernel_shape, strides=self.strides)

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        spec = self.input_specs[0]
        scale = _one_value(spec.scale, "scale", self.name)
        if scale <= 0:  # the largest integer must be the largest value
            raise ValueError(f"MaxPool '{self.name}' needs a positive input scale (a negative factor precedes it)")
        zero = _one_value(spec.zero_point, "zero point", self.name)
        return TensorSpec(scale, zero, np.min(spec.lo), np.max(spec.hi))

    def q_impl(self, x: Any) -> Any:
        return fhe.maxpool(x, kernel_shape=self.kernel_shape, strides=self.strides)


@register_op
class QuantizedTranspose(QuantizedOp):
    """Permute the axes of one sample (the batch axis stays first); no PBS."""

    op_type = "Transpose"

    def __init__(self, name: str, perm: Any, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, inputs=inputs)
        self.perm = tuple(int(p) for p in perm)
        if not self.perm or self.perm[0] != 0:
            raise ValueError(f"Transpose '{name}' must keep the batch axis first, got perm={self.perm}")

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return np.transpose(x, self.perm)

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        s = self.input_specs[0]
        sample = x.shape[1:]
        axes = [p - 1 for p in self.perm[1:]]

        def move(v: np.ndarray) -> np.ndarray:
            return v if v.ndim == 0 else np.transpose(np.broadcast_to(v, sample), axes)

        return TensorSpec(move(s.scale), move(s.zero_point), move(s.lo), move(s.hi))

    def q_impl(self, x: Any) -> Any:
        return np.transpose(x, self.perm)

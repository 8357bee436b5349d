"""Integer-exact ops for models that are integer programs already (trees): feature gather,
matrix product with integer weights, and per-position lookup tables."""

from __future__ import annotations

from typing import Any

import numpy as np
from concrete import fhe

from .base_op import QuantizedOp, TensorSpec, hint_range
from .ops import _interval_matmul
from .registry import register_op


def _per_feature(value: np.ndarray, n_features: int) -> np.ndarray:
    return np.broadcast_to(value, (n_features,)) if value.ndim == 0 else value


@register_op
class QuantizedGather(QuantizedOp):
    """Select columns ``indices`` of one sample (no PBS); per-feature specs follow them."""

    op_type = "Gather"

    def __init__(self, name: str, indices: Any, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, inputs=inputs)
        self.indices = np.asarray(indices, dtype=np.int64)

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return x[:, self.indices]

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        s = self.input_specs[0]
        n = x.shape[-1]
        return TensorSpec(*(_per_feature(getattr(s, k), n)[self.indices] for k in ("scale", "zero_point", "lo", "hi")))

    def q_impl(self, x: Any) -> Any:
        return x[:, self.indices]


@register_op
class QuantizedIntegerMatMul(QuantizedOp):
    """``(x - z) @ weight + bias`` with integer weight and bias, exact (no re-quantization).

    By default the input must share one scale across its columns and the output keeps it,
    zero point 0. A model whose integer weights already carry the input scales (QAT networks)
    gives ``output_scale`` (one per output column, any input scales) and ``output_zero_point``
    instead. ``bounds`` may narrow the interval-arithmetic range of ``(x - z) @ weight`` with
    what the caller knows (e.g. that only one input of a group is non-zero); it cannot widen it.
    ``output_blocks`` > 1: the output columns are that many parts the client adds up after
    de-quantizing (see :class:`TensorSpec`).
    """

    op_type = "IntegerMatMul"

    def __init__(
        self,
        name: str,
        weight: Any,
        bias: Any = None,
        bounds: Any = None,
        output_scale: Any = None,
        output_zero_point: Any = 0,
        output_blocks: int = 1,
        *,
        inputs: list[str] | None = None,
    ) -> None:
        super().__init__(name, inputs=inputs)
        self.bounds = bounds
        self.output_blocks = int(output_blocks)
        self.weight = np.asarray(weight, dtype=np.int64)
        self.bias = np.zeros(self.weight.shape[1], dtype=np.int64) if bias is None else np.asarray(bias, np.int64)
        self.output_scale = None if output_scale is None else np.asarray(output_scale, dtype=np.float64)
        self.output_zero_point = np.asarray(output_zero_point, dtype=np.int64)

    def _scale(self) -> Any:
        if self.output_scale is not None:
            return self.output_scale
        scales = np.unique(self.input_specs[0].scale)
        if len(scales) != 1:
            raise ValueError(f"QuantizedIntegerMatMul '{self.name}' needs one input scale, got {len(scales)}")
        return float(scales[0])

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        integers = np.rint(x / self.input_specs[0].scale) @ self.weight + self.bias
        return (integers - self.output_zero_point) * self._scale()

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        s = self.input_specs[0]
        self.input_offset = s.zero_point
        n = self.weight.shape[0]
        self.centered_range = (_per_feature(s.lo - s.zero_point, n), _per_feature(s.hi - s.zero_point, n))
        lo, hi = _interval_matmul(*self.centered_range, self.weight)
        if self.bounds is not None:
            lo, hi = np.maximum(lo, self.bounds[0]), np.minimum(hi, self.bounds[1])
        self.product_range = (lo, hi)
        return TensorSpec(self._scale(), self.output_zero_point, lo + self.bias, hi + self.bias, self.output_blocks)

    def q_impl(self, x: Any) -> Any:
        if np.any(self.input_offset != 0):
            x = hint_range(x - self.input_offset, *self.centered_range)
        return hint_range(x @ self.weight, *self.product_range) + self.bias


@register_op
class QuantizedTableLookup(QuantizedOp):
    """Position ``i`` of the input indexes its own table: ``out[i] = tables[i, x[i] - offset]``.

    One PBS per position; the output is read with ``output_scale`` (zero point 0).
    ``lookup_bits`` widens the input the lookup reads (at least its own width), so it shares
    the PBS precision of the circuit's other lookups.
    """

    op_type = "TableLookup"

    is_univariate = True

    def __init__(
        self,
        name: str,
        tables: Any,
        offset: int = 0,
        output_scale: float = 1.0,
        lookup_bits: int | None = None,
        *,
        inputs: list[str] | None = None,
    ) -> None:
        super().__init__(name, inputs=inputs)
        self.tables = np.asarray(tables, dtype=np.int64)
        self.offset = int(offset)
        self.output_scale = float(output_scale)
        self.lookup_bits = None if lookup_bits is None else int(lookup_bits)

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        s = self.input_specs[0]
        if np.min(s.lo) < self.offset or np.max(s.hi) >= self.offset + self.tables.shape[1]:
            raise ValueError(
                f"QuantizedTableLookup '{self.name}': inputs in [{np.min(s.lo)}, {np.max(s.hi)}] fall outside "
                f"its tables [{self.offset}, {self.offset + self.tables.shape[1] - 1}]"
            )
        return TensorSpec(self.output_scale, 0, self.tables.min(axis=1), self.tables.max(axis=1))

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        s = self.input_specs[0]
        q = np.rint(x / s.scale + s.zero_point).astype(np.int64)
        return self.output_scale * self.univariate_fn(q)

    def univariate_fn(self, q: Any) -> Any:
        index = np.clip(q - self.offset, 0, self.tables.shape[1] - 1)
        tables = np.broadcast_to(self.tables, index.shape[:-1] + self.tables.shape)
        return np.take_along_axis(tables, index[..., None], axis=-1)[..., 0]


@register_op
class QuantizedTruncate(QuantizedOp):
    """Clear the ``lsbs`` low bits of an integer (``fhe.truncate_bit_pattern``, exact).

    The next lookup then reads only the high bits: a table on an 8-bit accumulator truncated
    by 3 bits costs a 5-bit PBS plus a few cheap low-precision ones, instead of an 8-bit PBS.
    numpy computes the same integers (two's complement floor to a multiple of ``2**lsbs``),
    so ``fhe="disable"`` matches the circuit bit for bit.
    """

    op_type = "TruncateBitPattern"

    def __init__(self, name: str, lsbs: int, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, inputs=inputs)
        if lsbs < 1:
            raise ValueError(f"QuantizedTruncate '{name}' needs lsbs >= 1, got {lsbs}")
        self.lsbs = int(lsbs)

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        s = self.input_specs[0]
        q = np.rint(x / s.scale + s.zero_point).astype(np.int64)
        return (self.q_impl(q) - s.zero_point) * s.scale

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        s = self.input_specs[0]
        return TensorSpec(s.scale, s.zero_point, self.q_impl(s.lo), self.q_impl(s.hi))

    def q_impl(self, x: Any) -> Any:
        if isinstance(x, np.ndarray):
            return (x >> self.lsbs) << self.lsbs
        return fhe.truncate_bit_pattern(x, self.lsbs)

"""The graph op running a user's custom op (Concrete ML's custom-op API, see
:mod:`.custom_op_api`).

- A class without its own ``q_impl`` is element-wise: its numpy implementation (the class's
  ``impl``, else ONNX's reference implementation of the op) becomes ONE table lookup,
  de-quantize → ``impl`` → re-quantize to ``n_bits``, fused with its neighbours like the
  built-in activations.
- A Gemm class with ``q_impl`` runs on the built-in Gemm's quantization
  (:class:`QuantizedCustomGemm`): its integer product is the built-in's.
- Any other class with ``q_impl`` gets its inputs as QuantizedArrays (integers that are concrete
  tracers inside the circuit), may compute with integers (leveled) and floats (concrete fuses
  each float chain into one lookup) and returns a QuantizedArray or float values; the result
  is re-quantized to the calibrated per-tensor ``n_bits`` output grid.

The float outputs that calibrate every grid come from the numpy implementation, as in
Concrete ML. The widths of the integers *inside* a ``q_impl`` are those concrete measures on
the compile inputset (a built-in op declares worst-case ones instead).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base_op import QuantizedOp, TensorSpec, hint_range
from .custom_op_api import traced_array
from .ops import QuantizedGemm, QuantizedUnivariateOp
from .quantizers import (
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,
)
from .registry import register_op


def defines_q_impl(cls: type) -> bool:
    """Whether a custom op class writes its own ``q_impl`` (else it is element-wise)."""
    return cls.q_impl is not QuantizedOp.q_impl


def _grid_of(spec: TensorSpec) -> UniformQuantizer:
    """The quantizer describing a tensor spec's integers (its range as the options' grid)."""
    bits = spec.bit_width
    options = QuantizationOptions(bits, is_signed=bool(np.min(spec.lo) < 0))
    return UniformQuantizer(options, scale=spec.scale, zero_point=spec.zero_point)


def _per_tensor(values: np.ndarray, n_bits: int) -> UniformQuantizer:
    stats = MinMaxQuantizationStats().compute_quantization_stats(values)
    return UniformQuantizer(QuantizationOptions(n_bits), stats)


def _quantized_constant(value: np.ndarray, n_bits: int) -> QuantizedArray:
    if np.issubdtype(value.dtype, np.integer):  # shapes, indices: exact
        return QuantizedArray(16, value, value_is_float=False, scale=1.0, zero_point=0)
    return QuantizedArray(n_bits, value.astype(np.float64), is_signed=True, is_symmetric=True)


def _user_op(impl_class: type, name: str, inputs: list[str], attrs: dict, positions: list[int]) -> Any:
    """The user's class as the ``self`` its ``q_impl`` sees (it has no ``__init__`` to call)."""
    user = impl_class.__new__(impl_class)
    QuantizedOp.__init__(user, name, inputs=inputs)
    user.attrs = attrs
    user.op_instance_name = name
    user._encrypted_positions = positions
    return user


@register_op
class QuantizedCustomOp(QuantizedUnivariateOp):
    """One ONNX node run by a user's ``QuantizedOp`` subclass (``impl_class``).

    Parameters
    ----------
    name : str
    impl_class : type
        The user's class (it names the ONNX op in ``_impl_for_op_named``).
    onnx_node : onnx.NodeProto
        The node (for ONNX's reference implementation, when the class has no ``impl``).
    positions : list of int
        ONNX input position of each encrypted input, in ``inputs`` order.
    constants : dict of int to ndarray
        The node's constant inputs by position.
    attrs : dict
        The node's attributes.
    n_bits : int
        Bits of the output grid (and of the per-tensor grid of each encrypted input).
    weight_bits : int
        Bits of the quantized constants.
    """

    op_type = "CustomOnnx"

    def __init__(
        self,
        name: str,
        impl_class: type,
        onnx_node: Any,
        positions: list[int],
        constants: dict[int, np.ndarray],
        attrs: dict[str, Any],
        n_bits: int = 8,
        weight_bits: int = 8,
        *,
        inputs: list[str] | None = None,
    ) -> None:
        super().__init__(name, n_bits, inputs=inputs)
        self.impl_class = impl_class
        self.node = onnx_node
        self.positions = list(positions)
        self.constants = {int(k): np.asarray(v) for k, v in constants.items()}
        self.attrs = dict(attrs)
        self.weight_bits = weight_bits
        self.is_univariate = not defines_q_impl(impl_class)
        if self.is_univariate and len(self.inputs) != 1:
            raise ValueError(
                f"{impl_class.__name__} ({impl_class._impl_for_op_named} '{name}') reads {len(self.inputs)} "
                "encrypted tensors: only an op of one encrypted input can be a table lookup; write its q_impl"
            )
        self.user = _user_op(impl_class, name, self.inputs, self.attrs, self.positions)
        self.user.constant_inputs = {k: _quantized_constant(v, weight_bits) for k, v in self.constants.items()}

    # -- the float reference ---------------------------------------------------------------
    def _impl(self, *encrypted: Any) -> Any:
        arguments: list[Any] = [None] * (len(self.positions) + len(self.constants))
        for position, value in zip(self.positions, encrypted):
            arguments[position] = value
        for position, value in self.constants.items():
            arguments[position] = value
        impl = getattr(self.impl_class, "impl", None)
        if impl is not None:
            return impl(*arguments, **self.attrs)
        from onnx.reference import ReferenceEvaluator

        feeds = {name: np.asarray(a) for name, a in zip(self.node.input, arguments) if name}
        return ReferenceEvaluator(self.node).run(None, feeds)[0]

    def _f(self, x: Any) -> Any:
        return np.asarray(self._impl(x), dtype=np.float64)

    def float_forward(self, *xs: np.ndarray) -> np.ndarray:
        return np.asarray(self._impl(*xs), dtype=np.float64)

    # -- calibration -----------------------------------------------------------------------
    def _calibrate(self, float_output: np.ndarray, *xs: np.ndarray) -> TensorSpec:
        self.user.n_bits = self.n_bits
        if self.is_univariate:
            x = xs[0]
            if float_output.shape != x.shape or not np.allclose(
                self.float_forward(x.reshape(-1, 1)).ravel(), float_output.ravel(), equal_nan=True
            ):
                raise ValueError(
                    f"{self.impl_class.__name__} ('{self.name}') has no q_impl, so it must be element-wise "
                    f"(one table lookup), but {self.impl_class._impl_for_op_named} is not: write its q_impl"
                )
            spec = super()._calibrate(float_output, x)
        else:
            self.output_quantizer = _per_tensor(float_output, self.n_bits)
            options = self.output_quantizer.options
            spec = TensorSpec(self.output_quantizer.scale, self.output_quantizer.zero_point, options.qmin, options.qmax)
        self.user._input_quantizers = [_per_tensor(x, self.n_bits) for x in xs]
        self.user._output_quantizer = self.output_quantizer
        self.user.output_quant_stats = self.output_quantizer.stats
        self.user.output_quant_params = UniformQuantizationParameters(
            self.output_quantizer.scale, self.output_quantizer.zero_point, self.output_quantizer.offset
        )
        return spec

    # -- integers --------------------------------------------------------------------------
    def q_impl(self, *qs: Any) -> Any:
        if self.is_univariate:
            return self.univariate_fn(qs[0])
        arrays = [traced_array(q, _grid_of(spec)) for q, spec in zip(qs, self.input_specs)]
        result = self.user.q_impl(*arrays, **self.attrs)
        target = self.output_quantizer
        if isinstance(result, QuantizedArray):
            grid = result.quantizer
            if (
                np.array_equal(np.asarray(grid.scale), np.asarray(target.scale))
                and np.array_equal(np.asarray(grid.zero_point), np.asarray(target.zero_point))
                and grid.options.qmin >= target.options.qmin
                and grid.options.qmax <= target.options.qmax
            ):
                return result.qvalues
            result = result.values
        return target.quant_traceable(result)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.impl_class.__name__}, name={self.name!r}, inputs={self.inputs})"


class QuantizedCustomGemm(QuantizedGemm):
    """A Gemm node run by a user's ``q_impl`` on the built-in Gemm's own quantization.

    Calibration is the built-in's (per-column weights with the input's scales folded in,
    centred codes, bias correction, accumulator-aware widths), so a ``q_impl`` that computes
    the guide's integer product returns the built-in's integers exactly. Its ``self`` sees
    those quantities as the node's inputs: ``q_input`` the input codes on a grid of scale 1
    centred on ``input_offset``; ``constant_inputs[1]`` the integer weights, shape
    ``(n_in, n_out)``, one scale per output column and zero point 0; ``constant_inputs[2]``
    the effective bias (``values`` = the output's offset); ``attrs`` with ``alpha``, ``beta``
    and ``transB`` already applied. It returns
    ``self.make_output_quant_parameters(product, m_matmul, -q_bias.values / m_matmul)``, the
    accumulator on its grid (no lookup); anything else is refused.

    Parameters
    ----------
    name : str
    impl_class : type
        The user's class (``_impl_for_op_named = "Gemm"``, with ``q_impl``).
    node_attrs : dict
        The node's attributes.
    **params
        As :class:`~fhe_sklearn.quantization.ops.QuantizedGemm`.
    """

    def __init__(
        self, name: str, impl_class: type, node_attrs: dict[str, Any], *, inputs: list[str], **params: Any
    ) -> None:
        super().__init__(name, inputs=inputs, **params)
        self.impl_class = impl_class
        applied = {**node_attrs, "alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
        self.user = _user_op(impl_class, name, self.inputs, applied, [0])

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        spec = super()._calibrate(float_output, x)
        n_in = self.weight.shape[0]
        center = np.broadcast_to(self.input_offset, (n_in,)).astype(np.int64)
        user = self.user
        user.n_bits = self.n_bits
        # the input's scales are folded into the weights: its codes have scale 1 here
        user._input_quantizers = [UniformQuantizer(_grid_of(self.input_specs[0]).options, scale=1.0, zero_point=center)]
        weights = UniformQuantizer(
            QuantizationOptions(self.weight_bits, is_signed=True, is_symmetric=True), scale=spec.scale, zero_point=0
        )
        offset = UniformQuantizer(QuantizationOptions(16, is_signed=True), scale=spec.scale, zero_point=0)
        user.constant_inputs = {1: traced_array(self.weight_q, weights), 2: traced_array(-spec.zero_point, offset)}
        user.output_quant_params = UniformQuantizationParameters(spec.scale, spec.zero_point, 0)
        self.output_spec = spec
        # a q_impl that does not return the accumulator is refused at import, not at predict
        self.q_impl(center[None, :])
        return spec

    def q_impl(self, x: Any) -> Any:
        result = self.user.q_impl(traced_array(x, self.user._input_quantizers[0]), **self.user.attrs)
        spec = self.output_spec
        grid = getattr(result, "quantizer", None)
        if not (
            getattr(result, "integer_result", False)
            and np.array_equal(np.broadcast_to(grid.scale, np.shape(spec.scale)), spec.scale)
            and np.array_equal(np.broadcast_to(grid.zero_point, np.shape(spec.zero_point)), spec.zero_point)
        ):
            raise ValueError(
                f"{self.impl_class.__name__} (Gemm '{self.name}'): q_impl must return the integer product on the "
                "accumulator's grid, self.make_output_quant_parameters(product, m_matmul, -q_bias.values / m_matmul) "
                "with m_matmul = q_input.quantizer.scale * q_weights.quantizer.scale; re-quantizing it to another "
                "grid would need a lookup on the wide accumulator"
            )
        return hint_range(result.qvalues, *self.product_range)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.impl_class.__name__}, name={self.name!r}, inputs={self.inputs})"


__all__ = ["QuantizedCustomGemm", "QuantizedCustomOp", "defines_q_impl"]

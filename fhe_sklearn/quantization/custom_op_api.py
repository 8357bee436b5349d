"""What a custom op written after Concrete ML's quantization guide reads from ``self``.

A user subclasses :class:`~fhe_sklearn.quantization.QuantizedOp`, names the ONNX op it
implements in ``_impl_for_op_named`` and, unless the op is element-wise, writes
``q_impl(self, *q_inputs, **attrs)``. Inside it, ``self`` offers the attributes and helpers
below (same names as Concrete ML's); the graph op that runs it is
:class:`~fhe_sklearn.quantization.custom_ops.QuantizedCustomOp`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .quantizers import QuantizationOptions, QuantizedArray, UniformQuantizer


def traced_array(qvalues: Any, quantizer: UniformQuantizer) -> QuantizedArray:
    """A QuantizedArray around integers that may be concrete tracers (no statistics, no copy)."""
    array = QuantizedArray.__new__(QuantizedArray)
    array.quantizer = quantizer
    array.qvalues = qvalues
    array.values = (qvalues - quantizer.zero_point) * quantizer.scale
    return array


class ConcreteMLOpAPI:
    """Attributes and helpers of a custom op's ``self`` (set by the ONNX import).

    Attributes
    ----------
    n_bits : int
        Bits of the op's output (``op_inputs``, or ``model_outputs`` for a graph output).
    attrs : dict
        The ONNX node's attributes (also passed to ``q_impl`` as keywords).
    constant_inputs : dict of int to QuantizedArray
        The node's constant inputs by ONNX input position, quantized to ``op_weights`` bits
        (symmetric, signed; integer constants such as shapes exactly).
    output_quant_params, output_quant_stats :
        The output grid calibrated on the float outputs (per tensor, ``n_bits``).
    """

    n_bits: int
    attrs: dict[str, Any]
    constant_inputs: dict[int, QuantizedArray]
    output_quant_params: Any = None
    output_quant_stats: Any = None
    op_instance_name: str = ""
    #: ONNX position of each encrypted input, and the per-tensor grid it is re-quantized to
    _encrypted_positions: list[int]
    _input_quantizers: list[UniformQuantizer]
    _output_quantizer: UniformQuantizer | None = None

    def make_output_quant_parameters(self, q_values: Any, scale: Any, zero_point: Any) -> QuantizedArray:
        """The op's integer results as a QuantizedArray on the grid ``scale``, ``zero_point``
        (Concrete ML's helper of the same name): how a Gemm's ``q_impl`` returns its
        accumulator, with no lookup."""
        zero_point = np.rint(np.asarray(zero_point, dtype=np.float64)).astype(np.int64)
        grid = UniformQuantizer(QuantizationOptions(16, is_signed=True), scale=scale, zero_point=zero_point)
        array = traced_array(q_values, grid)
        array.integer_result = True  # the integers themselves, not floats re-quantized
        return array

    def _get_output_quant_opts(self) -> QuantizationOptions:
        """The options of the output grid (unsigned ``n_bits``)."""
        return QuantizationOptions(self.n_bits)

    @property
    def _int_input_names(self) -> list[str]:
        return list(getattr(self, "inputs", []))

    def _prepare_inputs_with_constants(
        self, *inputs: Any, calibrate: bool = False, quantize_actual_values: bool = False
    ) -> list[Any]:
        """Every input of the ONNX node in its order: the encrypted ones (``inputs``) and the
        constants.

        With ``quantize_actual_values``, each is a QuantizedArray: an encrypted input on a
        per-tensor ``n_bits`` grid (re-quantized by one table lookup per element when it
        arrives on another grid), a constant on its ``op_weights``-bit grid. Otherwise (or with
        ``calibrate``), the float values.
        """
        if len(inputs) != len(self._encrypted_positions):
            raise ValueError(
                f"{type(self).__name__}: q_impl got {len(inputs)} encrypted input(s), "
                f"the node has {len(self._encrypted_positions)}"
            )
        n_inputs = len(self._encrypted_positions) + len(self.constant_inputs)
        prepared: list[Any] = [None] * n_inputs
        for position, constant in self.constant_inputs.items():
            prepared[position] = constant if quantize_actual_values and not calibrate else constant.values
        for index, (position, array) in enumerate(zip(self._encrypted_positions, inputs)):
            if calibrate or not quantize_actual_values:
                prepared[position] = array.values if isinstance(array, QuantizedArray) else array
            else:
                prepared[position] = self._requantized(array, self._input_quantizers[index])
        return prepared

    @staticmethod
    def _requantized(array: QuantizedArray, target: UniformQuantizer) -> QuantizedArray:
        """``array`` on the ``target`` grid: as it is when it is on that grid already."""
        source = array.quantizer
        same = (
            np.array_equal(np.asarray(source.scale), np.asarray(target.scale))
            and np.array_equal(np.asarray(source.zero_point), np.asarray(target.zero_point))
            and source.options.qmin >= target.options.qmin
            and source.options.qmax <= target.options.qmax
        )
        if same:
            return array
        # floats and a rounding: concrete fuses them into one lookup per element
        return traced_array(target.quant_traceable(array.values), target)

"""QuantizeLinear → [Clip] → DequantizeLinear of quantization-aware exports, on encrypted data.

A pair's grid becomes a quantizer: the model input's, the output quantizer of the activation
before it, or else a re-quantizing lookup (:class:`QuantizedQuantizeDequantize`). On weights the
pairs are constant-folded by the importer, which keeps their grid (:func:`dequantize_grid`).
Converters take the importer's state ``ctx`` (``onnx.importer._Import``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..quantization.ops import QuantizedUnivariateOp
from ..quantization.quantizers import MAX_BIT_WIDTH, QuantizationOptions, UniformQuantizer
from ._nodes import attributes, where


@dataclass
class Grid:
    """A QuantizeLinear on encrypted data, waiting for its DequantizeLinear."""

    tensor: str
    scale: float
    zero_point: int
    qmin: int
    qmax: int

    def quantizer(self, node: Any) -> UniformQuantizer:
        """The grid as the circuit's unsigned quantizer (``node`` names it in errors)."""
        span = self.qmax - self.qmin + 1
        n_bits = span.bit_length() - 1
        if span != 2**n_bits or not 1 <= n_bits <= MAX_BIT_WIDTH:
            raise ValueError(f"{where(node)}: a quantization range [{self.qmin}, {self.qmax}] must span 2**n values")
        # shifted to [0, 2**n - 1]: the same floats, unsigned integers
        return UniformQuantizer(QuantizationOptions(n_bits), scale=self.scale, zero_point=self.zero_point - self.qmin)


def quantize_linear(ctx: Any, node: Any, attrs: dict) -> None:
    """Record the grid of a QuantizeLinear on encrypted data (its DequantizeLinear uses it)."""
    x, scale, *zero = node.input
    scale = ctx.constant(scale, node, "the QuantizeLinear scale")
    zero = ctx.constant(zero[0], node, "the zero point") if zero and zero[0] else np.zeros((), np.uint8)
    if scale.size != 1 or zero.size != 1:
        raise ValueError(f"{where(node)}: per-axis quantization of encrypted data is not supported (per tensor only)")
    if not np.issubdtype(zero.dtype, np.integer):
        raise ValueError(f"{where(node)}: the zero point must be an integer tensor, got {zero.dtype}")
    ctx.value(x, node)
    info = np.iinfo(zero.dtype)
    ctx.grids[node.output[0]] = Grid(x, float(scale.reshape(())), int(zero.reshape(())), int(info.min), int(info.max))


def clip(ctx: Any, node: Any, attrs: dict) -> None:
    """Narrow a recorded grid to a Clip's integer bounds."""
    grid = ctx.grids.get(node.input[0])
    if grid is None:
        raise ValueError(f"{where(node)}: Clip is supported on quantized integers only (QuantizeLinear → Clip)")
    bounds = [ctx.constant(t, node, "the Clip bounds") if t else None for t in (*node.input[1:3], "", "")[:2]]
    low, high = (int(np.asarray(b).reshape(())) if b is not None else None for b in bounds)
    ctx.grids[node.output[0]] = Grid(
        grid.tensor,
        grid.scale,
        grid.zero_point,
        grid.qmin if low is None else max(grid.qmin, low),
        grid.qmax if high is None else min(grid.qmax, high),
    )


def dequantize_linear(ctx: Any, node: Any, attrs: dict) -> str:
    """The recorded grid as a quantizer of the value it reads."""
    grid = ctx.grids.get(node.input[0])
    if grid is None:
        raise ValueError(f"{where(node)}: DequantizeLinear must read a QuantizeLinear of the same tensor")
    scale = ctx.constant(node.input[1], node, "the DequantizeLinear scale")
    zero = ctx.constants.get(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(())
    if not np.allclose(scale, grid.scale) or int(np.asarray(zero).reshape(())) != grid.zero_point:
        raise ValueError(f"{where(node)}: scale and zero point differ from its QuantizeLinear's")
    quantizer = grid.quantizer(node)
    source = ctx.values[grid.tensor]
    builder = ctx.builder
    if source in builder._inputs and not any(source in op.inputs for op in builder._ops):
        builder._inputs[source] = quantizer  # the model's input quantizer
        return source
    producer = next((op for op in builder._ops if op.name == source), None)
    if (
        isinstance(producer, QuantizedUnivariateOp)
        and producer.fixed_output_quantizer is None
        and ctx.consumers.get(grid.tensor) == 1
    ):
        producer.fixed_output_quantizer = quantizer  # the activation's output grid
        return source
    return ctx.add(node, "QuantizeDequantize", ctx.lookup_input(node, source), quantizer=quantizer)


def dequantize_grid(ctx: Any, node: Any) -> np.ndarray:
    """The step of a folded DequantizeLinear's output, broadcast to its shape."""
    value = ctx.constants[node.output[0]]
    scale = np.abs(np.asarray(ctx.constants[node.input[1]], dtype=np.float64))
    if scale.size > 1:  # per axis
        axis = attributes(node).get("axis", 1) % value.ndim
        scale = scale.reshape([-1 if i == axis else 1 for i in range(value.ndim)])
    return np.broadcast_to(scale, value.shape)

"""Post-training quantization: a float description of a model + calibration data →
a calibrated :class:`QuantizedModule`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .module import QuantizedModule
from .ops import (
    QuantizedAbs,
    QuantizedAdd,
    QuantizedEqual,
    QuantizedGemm,
    QuantizedGreater,
    QuantizedGreaterOrEqual,
    QuantizedIdentity,
    QuantizedLess,
    QuantizedLessOrEqual,
    QuantizedMatMul,
    QuantizedRelu,
    QuantizedReshape,
    QuantizedSigmoid,
)
from .quantizers import MinMaxQuantizationStats, QuantizationOptions, UniformQuantizer, check_n_bits

_WEIGHTED = {"gemm": QuantizedGemm, "matmul": QuantizedMatMul}
_ACTIVATIONS = {"relu": QuantizedRelu, "sigmoid": QuantizedSigmoid, "abs": QuantizedAbs, "identity": QuantizedIdentity}
_COMPARISONS = {
    "less": QuantizedLess,
    "less_equal": QuantizedLessOrEqual,
    "greater": QuantizedGreater,
    "greater_equal": QuantizedGreaterOrEqual,
    "equal": QuantizedEqual,
}
LAYER_TYPES = sorted([*_WEIGHTED, *_ACTIVATIONS, *_COMPARISONS, "add", "reshape"])


def resolve_n_bits(n_bits: Any, keys: Sequence[str] = ("op_inputs", "op_weights")) -> dict[str, int]:
    """Turn ``n_bits`` (an int, or a dict with exactly ``keys``) into a validated dict."""
    if isinstance(n_bits, Mapping):
        unknown = set(n_bits) - set(keys)
        missing = set(keys) - set(n_bits)
        if unknown or missing:
            raise ValueError(
                f"n_bits dict must have exactly the keys {list(keys)}; "
                f"unknown: {sorted(unknown)}, missing: {sorted(missing)}"
            )
        return {k: check_n_bits(n_bits[k], f"n_bits[{k!r}]") for k in keys}
    value = check_n_bits(n_bits)
    return {k: value for k in keys}


def input_quantizer(x: np.ndarray, n_bits: int) -> UniformQuantizer:
    """Unsigned per-feature quantizer calibrated on the columns of ``x``."""
    stats = MinMaxQuantizationStats().compute_quantization_stats(np.asarray(x, dtype=np.float64), axis=0)
    return UniformQuantizer(QuantizationOptions(n_bits), stats)


class PostTrainingQuantizer:
    """Build a QuantizedModule from a sequential float model description.

    Parameters
    ----------
    n_bits : int or dict
        An int for everything, or ``{"op_inputs": a, "op_weights": b}``: ``a`` bits for the
        model input and every activation output, ``b`` for Gemm/MatMul weights.
    max_accumulator_bits : int, optional
        Forwarded to every Gemm (accumulator-aware weight scales); None: no adaptation.

    Examples
    --------
    >>> import numpy as np
    >>> layers = [{"type": "gemm", "weight": np.ones((2, 3)), "bias": np.zeros(3)}, {"type": "relu"}]
    >>> module = PostTrainingQuantizer(n_bits=4).quantize_module(layers, np.random.rand(10, 2))
    >>> module.forward(np.array([[0.5, 0.5]])).shape
    (1, 3)
    """

    def __init__(self, n_bits: Any = 8, max_accumulator_bits: int | None = None) -> None:
        self.n_bits = n_bits
        self.max_accumulator_bits = max_accumulator_bits

    def build_op(self, index: int, layer: Mapping[str, Any], inputs: list[str]) -> Any:
        bits = resolve_n_bits(self.n_bits)
        params = dict(layer)
        kind = params.pop("type", None)
        name = params.pop("name", f"{kind}_{index}")
        if kind in _WEIGHTED:
            return _WEIGHTED[kind](
                name=name,
                inputs=inputs,
                n_bits=bits["op_weights"],
                max_accumulator_bits=self.max_accumulator_bits,
                **params,
            )
        if kind in _ACTIVATIONS:
            return _ACTIVATIONS[kind](name=name, inputs=inputs, n_bits=params.pop("n_bits", bits["op_inputs"]))
        if kind in _COMPARISONS:
            return _COMPARISONS[kind](name=name, inputs=inputs, threshold=params["threshold"])
        if kind == "add":
            return QuantizedAdd(name=name, inputs=inputs, constant=params["constant"])
        if kind == "reshape":
            return QuantizedReshape(name=name, inputs=inputs, shape=params["shape"])
        raise ValueError(f"layer {index}: unknown type {kind!r}; known types: {LAYER_TYPES}")

    def quantize_module(self, layers: Sequence[Mapping[str, Any]], calibration_data: Any) -> QuantizedModule:
        """Quantize ``layers`` (dicts with a ``"type"`` and its parameters), applied in order."""
        x = np.asarray(calibration_data, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"calibration data must be 2-D (n_samples, n_features), got shape {x.shape}")
        bits = resolve_n_bits(self.n_bits)
        ops, previous = [], "input"
        for index, layer in enumerate(layers):
            op = self.build_op(index, layer, [previous])
            ops.append(op)
            previous = op.name
        module = QuantizedModule(input_quantizer(x, bits["op_inputs"]), ops)
        module.calibrate(x)
        return module

"""Post-training quantization: a float description of a model + calibration data →
a calibrated :class:`QuantizedModule`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .graph import GraphBuilder
from .module import QuantizedModule
from .quantizers import MinMaxQuantizationStats, QuantizationOptions, UniformQuantizer, check_n_bits
from .registry import OP_REGISTRY

#: snake_case layer names whose registered op type is not just the name in CamelCase
_LAYER_ALIASES = {"less_equal": "LessOrEqual", "greater_equal": "GreaterOrEqual"}


def layer_op_type(kind: Any) -> str | None:
    """The registered op type of a layer ``"type"`` (``"gemm"`` → ``"Gemm"``), or None."""
    if not isinstance(kind, str):
        return None
    if kind in _LAYER_ALIASES:
        return _LAYER_ALIASES[kind]
    by_lower = {t.lower(): t for t in OP_REGISTRY}
    return by_lower.get(kind.replace("_", "").lower())


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

    def quantize_module(self, layers: Sequence[Mapping[str, Any]], calibration_data: Any) -> QuantizedModule:
        """Quantize ``layers`` (dicts with a ``"type"`` and its parameters), applied in order."""
        x = np.asarray(calibration_data, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"calibration data must be 2-D (n_samples, n_features), got shape {x.shape}")
        bits = resolve_n_bits(self.n_bits)
        builder = GraphBuilder()
        builder.input(input_quantizer(x, bits["op_inputs"]))
        for index, layer in enumerate(layers):
            params = dict(layer)
            kind = params.pop("type", None)
            op_type = layer_op_type(kind)
            if op_type is None:
                known = sorted({t.lower() for t in OP_REGISTRY} | set(_LAYER_ALIASES))
                raise ValueError(f"layer {index}: unknown type {kind!r}; known types: {known}")
            role = OP_REGISTRY[op_type].n_bits_role
            if role is not None:
                params.setdefault("n_bits", bits[role])
            if role == "op_weights":
                params.setdefault("max_accumulator_bits", self.max_accumulator_bits)
            builder.add(op_type, name=params.pop("name", f"{kind}_{index}"), **params)
        return builder.build(x)

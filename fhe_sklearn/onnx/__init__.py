"""Bring your own network: compile an ONNX graph to FHE (post-training quantization).

``compile_onnx_model(onnx_model, X_calib, n_bits=8, rounding_threshold_bits=6, ...)`` imports
the graph (:mod:`fhe_sklearn.onnx.importer`) into the same QuantizedModule the estimators
use, calibrates it on ``X_calib`` and compiles it.
"""

from __future__ import annotations

from typing import Any

from concrete import fhe

from ..quantization import QuantizedModule
from .importer import CLEAR_SIDE_OUTPUTS, N_BITS_KEYS, ONNX_CONVERTERS, onnx_to_module


def compile_onnx_model(
    onnx_model: Any,
    X_calib: Any,
    n_bits: Any = 8,
    rounding_threshold_bits: int | None = 6,
    p_error: float | None = None,
    global_p_error: float | None = None,
    configuration: fhe.Configuration | None = None,
    verbose: bool = False,
    output_accumulator_bits: int = 16,
) -> QuantizedModule:
    """Import, quantize and compile an ONNX model.

    Parameters
    ----------
    onnx_model : onnx.ModelProto, bytes or str
        The model, its serialized bytes, or a file path.
    X_calib : array-like, or tuple of array-likes for several graph inputs
        Representative inputs (with the batch axis): they calibrate every quantizer and trace
        the circuit.
    n_bits : int or dict
        An int for everything, or a dict with ``op_inputs`` (activations) and optionally
        ``model_inputs``, ``op_weights`` and ``model_outputs`` (default: ``op_inputs``).
    rounding_threshold_bits : int or None, default=6
        Every accumulator read by a table lookup is first truncated (exactly, in the circuit
        and in ``fhe="disable"`` alike) to this many bits, so no lookup reads a wide integer;
        None keeps full accumulators (each lookup then reads up to 16 bits: slow). With it,
        the weights of a Gemm/MatMul/Conv take the fewest bits up to ``op_weights`` whose
        rounding error on ``X_calib`` stays within that truncation's (extra bits would only
        widen the accumulator; :mod:`fhe_sklearn.quantization.weight_bits`), and an output
        accumulator within 16 bits as read at ``model_outputs`` bits (at least one more than the
        lookups); the width
        chosen is each op's ``weight_bits``.
    p_error, global_p_error, configuration, verbose
        As :meth:`QuantizedModule.compile`.
    output_accumulator_bits : int, default=16
        Bound of the accumulator of a Gemm/MatMul whose result is an output of the graph
        (up to 32): no lookup reads it, the client de-quantizes it, so it may be wider than
        16 bits and keep the weights' precision (a 768-input layer at 8/8 bits needs ~25).

    Returns
    -------
    QuantizedModule
        Compiled (``fhe_circuit``); ``forward(x, fhe="disable"|"simulate"|"execute")`` returns
        the de-quantized outputs. A final Softmax/LogSoftmax/ArgMax of the graph is not in the
        circuit: ``module.post_processing`` names it, for the client to apply.
    """
    module = onnx_to_module(
        onnx_model,
        X_calib,
        n_bits=n_bits,
        rounding_threshold_bits=rounding_threshold_bits,
        output_accumulator_bits=output_accumulator_bits,
    )
    module.compile(
        X_calib, configuration=configuration, p_error=p_error, global_p_error=global_p_error, verbose=verbose
    )
    return module


__all__ = ["CLEAR_SIDE_OUTPUTS", "N_BITS_KEYS", "ONNX_CONVERTERS", "compile_onnx_model", "onnx_to_module"]

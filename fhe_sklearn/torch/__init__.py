"""Compile a torch ``nn.Module`` to FHE: exported to ONNX by torch, then imported by
:func:`fhe_sklearn.onnx.compile_onnx_model` (one import path).

:class:`HybridFHEModel` (:mod:`.hybrid`) runs chosen sub-modules of a network in FHE, the
rest in the clear, locally or with a server.

:func:`compile_qat_model` takes a network trained with ``torch.ao.quantization.FakeQuantize``
modules: they export as QuantizeLinear → Clip → DequantizeLinear, whose learned grids become
the circuit's quantizers.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..onnx import compile_onnx_model
from ..quantization import QuantizedModule

#: ONNX opset of the export (Gelu is native from 20)
OPSET = 20


def export_onnx(model: Any, X_calib: Any) -> Any:
    """``model`` as an ``onnx.ModelProto`` (torch's TorchScript-based exporter, eval mode)."""
    import onnx
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"compile_torch_model takes a torch.nn.Module, got {type(model).__name__}")
    sample = _sample(X_calib)
    buffer = io.BytesIO()
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's deprecation notices
            torch.onnx.export(model, sample, buffer, dynamo=False, opset_version=OPSET, do_constant_folding=True)
    finally:
        model.train(was_training)
    return onnx.load_model_from_string(buffer.getvalue())


def _sample(X_calib: Any) -> tuple:
    """The first row of each input, as the float32 tensors a trace takes."""
    import torch

    arrays = X_calib if isinstance(X_calib, (tuple, list)) else (X_calib,)
    return tuple(torch.as_tensor(np.asarray(a[:1], dtype=np.float32)) for a in arrays)


def compile_torch_model(model: Any, X_calib: Any, **kwargs: Any) -> QuantizedModule:
    """Export ``model`` to ONNX and compile it; parameters as
    :func:`~fhe_sklearn.onnx.compile_onnx_model` (``n_bits``, ``rounding_threshold_bits``,
    ``p_error``, ``global_p_error``, ``configuration``, ``verbose``)."""
    return compile_onnx_model(export_onnx(model, X_calib), X_calib, **kwargs)


def compile_qat_model(model: Any, X_calib: Any, n_bits: Any = 8, **kwargs: Any) -> QuantizedModule:
    """Compile a quantization-aware network with the scales it learned.

    Every ``torch.ao.quantization.FakeQuantize`` of ``model`` (per tensor on activations and
    inputs, per tensor or per channel on weights; any ``quant_min..quant_max`` range of
    ``2**n`` values, e.g. 4 bits) is exported as QuantizeLinear → Clip → DequantizeLinear.
    On the input it sets the input quantizer; after an activation, that activation's output
    grid; on the weights of a Linear or Conv, the circuit's integer weights are exactly the
    learned ones (same integers, same scales: ``weight_scale`` of the Gemm/Conv op), not
    re-quantized. Observers are frozen during the export, so calibration does not move the
    learned scales.

    Parameters
    ----------
    model : torch.nn.Module
        The trained network.
    X_calib : array-like
        Representative inputs: they trace the circuit and calibrate the ops the training did
        not quantize (e.g. accumulators).
    n_bits : int or dict, default=8
        For the values without a learned grid (e.g. an activation without FakeQuantize
        after it, or weights that were not fake-quantized).
    **kwargs
        As :func:`~fhe_sklearn.onnx.compile_onnx_model` (``rounding_threshold_bits``, ...).

    Returns
    -------
    QuantizedModule
    """
    with _qdq_export(model, X_calib):
        onnx_model = export_onnx(model, X_calib)
    return compile_onnx_model(onnx_model, X_calib, n_bits=n_bits, **kwargs)


@contextlib.contextmanager
def _qdq_export(model: Any, X_calib: Any) -> Iterator[None]:
    """Freeze the observers and export any fake-quantization range (torch's own exporter
    only takes 8-bit ranges) as QuantizeLinear → Clip → DequantizeLinear; fake-quantized
    parameters are exported already on their grid (see :func:`_on_grid_parameters`)."""
    import torch
    from torch.ao.quantization import FakeQuantize
    from torch.onnx import symbolic_helper

    def qdq(g: Any, x: Any, scale: Any, zero_point: Any, quant_min: int, quant_max: int, axis: int | None) -> Any:
        signed = quant_min < 0
        if not (-128 <= quant_min and quant_max <= (127 if signed else 255)):
            raise ValueError(f"fake quantization range [{quant_min}, {quant_max}] does not fit 8-bit integers")
        itype = torch.onnx.TensorProtoDataType.INT8 if signed else torch.onnx.TensorProtoDataType.UINT8
        zero_point = g.op("Cast", zero_point, to_i=itype)
        scale = g.op("Cast", scale, to_i=torch.onnx.TensorProtoDataType.FLOAT)
        extra = {} if axis is None else {"axis_i": axis}
        q = g.op("QuantizeLinear", x, scale, zero_point, **extra)
        low, high = (torch.tensor(v, dtype=torch.int8 if signed else torch.uint8) for v in (quant_min, quant_max))
        q = g.op("Clip", q, g.op("Constant", value_t=low), g.op("Constant", value_t=high))
        return g.op("DequantizeLinear", q, scale, zero_point, **extra)

    @symbolic_helper.parse_args("v", "v", "v", "i", "i")
    def per_tensor(g: Any, x: Any, scale: Any, zero_point: Any, quant_min: int, quant_max: int) -> Any:
        return qdq(g, x, scale, zero_point, quant_min, quant_max, None)

    @symbolic_helper.parse_args("v", "v", "v", "i", "i", "i")
    def per_channel(g: Any, x: Any, scale: Any, zero_point: Any, axis: int, quant_min: int, quant_max: int) -> Any:
        return qdq(g, x, scale, zero_point, quant_min, quant_max, axis)

    quantizers = [m for m in model.modules() if isinstance(m, FakeQuantize)]
    if not quantizers:
        raise ValueError("compile_qat_model: the model has no torch.ao FakeQuantize module; use compile_torch_model")
    observing = [m.observer_enabled.clone() for m in quantizers]
    for m in quantizers:
        m.disable_observer()
    torch.onnx.register_custom_op_symbolic("aten::fake_quantize_per_tensor_affine", per_tensor, OPSET)
    torch.onnx.register_custom_op_symbolic("aten::fake_quantize_per_channel_affine", per_channel, OPSET)
    try:
        with _on_grid_parameters(model, quantizers, X_calib):
            yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::fake_quantize_per_tensor_affine", OPSET)
        torch.onnx.unregister_custom_op_symbolic("aten::fake_quantize_per_channel_affine", OPSET)
        for m, state in zip(quantizers, observing):
            m.observer_enabled.copy_(state)


@contextlib.contextmanager
def _on_grid_parameters(model: Any, quantizers: list, X_calib: Any) -> Iterator[None]:
    """Replace, for the export, each parameter a FakeQuantize reads by its fake-quantized
    value (found by running the model once): torch rounds ``w * (1 / scale)`` while ONNX's
    QuantizeLinear rounds ``w / scale``, which disagree on a weight half-way between two
    levels; a weight already on the grid quantizes to the same integer both ways, so the
    circuit's integer weights are exactly those the model was trained with."""
    import torch

    parameters = {id(p): p for p in model.parameters()}
    read: list[tuple[Any, Any]] = []

    def record(module: Any, args: tuple) -> None:
        if args and id(args[0]) in parameters:
            read.append((module, parameters[id(args[0])]))

    handles = [m.register_forward_pre_hook(record) for m in quantizers]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*_sample(X_calib))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    saved = [p.detach().clone() for _, p in read]
    with torch.no_grad():
        for module, parameter in read:
            parameter.copy_(module(parameter))
    try:
        yield
    finally:
        with torch.no_grad():
            for (_, parameter), value in zip(read, saved):
                parameter.copy_(value)


def compile_brevitas_qat_model(model: Any, X_calib: Any, *args: Any, **kwargs: Any) -> QuantizedModule:
    """Compile a network of ``brevitas.nn`` layers with its learned integers (see
    :func:`fhe_sklearn.torch.brevitas.compile_brevitas_qat_model`; needs the ``brevitas`` extra)."""
    from .brevitas import compile_brevitas_qat_model as compile_brevitas

    return compile_brevitas(model, X_calib, *args, **kwargs)


def __getattr__(name: str) -> Any:
    # the hybrid model imports torch: only when asked for
    if name in ("HybridFHEModel", "HYBRID_MODES"):
        from . import hybrid

        return getattr(hybrid, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "HYBRID_MODES",
    "HybridFHEModel",
    "compile_brevitas_qat_model",
    "compile_qat_model",
    "compile_torch_model",
    "export_onnx",
]

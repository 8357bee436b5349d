"""Brevitas quantization-aware networks in FHE (optional extra: ``pip install
'fhe-sklearn[brevitas]'``).

Brevitas exports a network built from ``brevitas.nn`` layers (``QuantIdentity``,
``QuantLinear``, ``QuantConv2d``, ``QuantReLU``...) as standard ONNX QuantizeLinear → Clip →
DequantizeLinear ("QCDQ"), its weights as the learned integers → Clip → DequantizeLinear. The
ONNX import turns the activations' grids into the circuit's quantizers and keeps the integer
weights (per tensor or per output channel) exactly, as :func:`compile_qat_model` does for
torch.ao fake quantizers.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

from ..onnx import compile_onnx_model
from ..onnx.importer import onnx_to_module
from ..quantization import QuantizedModule

#: ONNX opset of brevitas' export
BREVITAS_OPSET = 17


def export_brevitas_onnx(model: Any, X_calib: Any, output_onnx_file: str | Path | None = None) -> Any:
    """``model`` exported by brevitas as QCDQ ONNX (TorchScript exporter, eval mode)."""
    import onnx
    import torch

    try:
        from brevitas.export import export_onnx_qcdq
    except ImportError as err:  # pragma: no cover
        raise ImportError("Brevitas models need the 'brevitas' extra: pip install 'fhe-sklearn[brevitas]'") from err
    from . import _sample

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"compile_brevitas_qat_model takes a torch.nn.Module, got {type(model).__name__}")
    if not any(type(m).__module__.startswith("brevitas.") for m in model.modules()):
        raise ValueError("the model has no brevitas layer: use compile_torch_model (or compile_qat_model)")
    sample = _sample(X_calib)
    was_training = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporters' deprecation notices
            path = Path(output_onnx_file) if output_onnx_file else Path(directory) / "model.onnx"
            # brevitas' dynamo path refuses quantized biases: TorchScript
            export_onnx_qcdq(
                model,
                args=sample[0] if len(sample) == 1 else sample,
                export_path=str(path),
                opset_version=BREVITAS_OPSET,
                dynamo=False,
            )
            return onnx.load(str(path))
    finally:
        model.train(was_training)


def brevitas_to_module(
    model: Any, X_calib: Any, n_bits: Any = 8, rounding_threshold_bits: int | None = None
) -> QuantizedModule:
    """The calibrated (not compiled) QuantizedModule of a brevitas network; see
    :func:`compile_brevitas_qat_model`."""
    return onnx_to_module(
        export_brevitas_onnx(model, X_calib), X_calib, n_bits=n_bits, rounding_threshold_bits=rounding_threshold_bits
    )


def compile_brevitas_qat_model(
    model: Any,
    X_calib: Any,
    n_bits: Any = 8,
    rounding_threshold_bits: int | None = None,
    output_onnx_file: str | Path | None = None,
    **kwargs: Any,
) -> QuantizedModule:
    """Compile a network of ``brevitas.nn`` layers with the integers it learned.

    Parameters
    ----------
    model : torch.nn.Module
        The trained brevitas network (any bit-widths; weights per tensor or per output
        channel; biases float or quantized, e.g. ``bias_quant=Int32Bias``).
    X_calib : array-like
        Representative inputs: they trace the circuit and calibrate what the training did
        not quantize (accumulators, and activations without a quantizer after them).
    n_bits : int or dict, default=8
        For the values without a learned grid only.
    rounding_threshold_bits : int or None, default=None
        None (as Concrete ML): every lookup computes its table of the full accumulator, so the
        circuit computes brevitas' integer model exactly (a wide table as narrower lookups,
        :mod:`fhe_sklearn.quantization.wide_lookup`). An int truncates accumulators to that many
        bits before their lookups: faster, no longer bit-exact.
    output_onnx_file : str or Path, optional
        Also keep the exported ONNX there.
    **kwargs
        As :func:`~fhe_sklearn.onnx.compile_onnx_model` (``p_error``, ``global_p_error``,
        ``configuration``, ``verbose``).

    Returns
    -------
    QuantizedModule
        Compiled; ``forward(x, fhe=...)`` returns the de-quantized outputs.
    """
    onnx_model = export_brevitas_onnx(model, X_calib, output_onnx_file)
    return compile_onnx_model(
        onnx_model, X_calib, n_bits=n_bits, rounding_threshold_bits=rounding_threshold_bits, **kwargs
    )


__all__ = ["brevitas_to_module", "compile_brevitas_qat_model", "export_brevitas_onnx"]

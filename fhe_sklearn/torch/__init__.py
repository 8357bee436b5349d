"""Compile a torch ``nn.Module`` to FHE: exported to ONNX by torch, then imported by
:func:`fhe_sklearn.onnx.compile_onnx_model` (one import path)."""

from __future__ import annotations

import io
import warnings
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
    arrays = X_calib if isinstance(X_calib, (tuple, list)) else (X_calib,)
    sample = tuple(torch.as_tensor(np.asarray(a[:1], dtype=np.float32)) for a in arrays)
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


def compile_torch_model(model: Any, X_calib: Any, **kwargs: Any) -> QuantizedModule:
    """Export ``model`` to ONNX and compile it; parameters as
    :func:`~fhe_sklearn.onnx.compile_onnx_model` (``n_bits``, ``rounding_threshold_bits``,
    ``p_error``, ``global_p_error``, ``configuration``, ``verbose``)."""
    return compile_onnx_model(export_onnx(model, X_calib), X_calib, **kwargs)


__all__ = ["compile_torch_model", "export_onnx"]

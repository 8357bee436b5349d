"""Concrete ML's module path of the network compilers (``concrete.ml.torch.compile``), so its
scripts run with their imports renamed."""

from ..onnx import compile_onnx_model
from . import compile_brevitas_qat_model, compile_qat_model, compile_torch_model

__all__ = ["compile_brevitas_qat_model", "compile_onnx_model", "compile_qat_model", "compile_torch_model"]

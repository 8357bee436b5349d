"""Uniform quantization and the integer graph every estimator lowers to."""

from . import activations, conv_ops, custom_ops, fake_quantize, rounding  # noqa: F401  (register their ops)
from .base_op import QuantizedOp, TensorSpec
from .custom_ops import QuantizedCustomGemm, QuantizedCustomOp
from .graph import GraphBuilder
from .integer_ops import QuantizedGather, QuantizedIntegerMatMul, QuantizedTableLookup, QuantizedTruncate
from .module import FheMode, QuantizedModule, validate_fhe_mode
from .ops import (
    QuantizedAbs,
    QuantizedAdd,
    QuantizedConcat,
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
    QuantizedSub,
    QuantizedUnivariateOp,
)
from .post_training import PostTrainingQuantizer
from .products import QuantizedMul
from .quantizers import (
    MAX_BIT_WIDTH,
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizationParameters,
    UniformQuantizer,
    check_n_bits,
    integer_bit_width,
)
from .rank import QuantizedRankComparison, ThresholdRankQuantizer
from .registry import CUSTOM_ONNX_OPS, OP_REGISTRY, register_op, unregister_custom_op
from .unary import QuantizedUnaryComparison, UnaryDigitQuantizer

__all__ = [
    "CUSTOM_ONNX_OPS",
    "MAX_BIT_WIDTH",
    "OP_REGISTRY",
    "GraphBuilder",
    "FheMode",
    "MinMaxQuantizationStats",
    "PostTrainingQuantizer",
    "QuantizationOptions",
    "QuantizedAbs",
    "QuantizedAdd",
    "QuantizedConcat",
    "QuantizedCustomGemm",
    "QuantizedCustomOp",
    "QuantizedArray",
    "QuantizedEqual",
    "QuantizedGather",
    "QuantizedGemm",
    "QuantizedGreater",
    "QuantizedGreaterOrEqual",
    "QuantizedIdentity",
    "QuantizedIntegerMatMul",
    "QuantizedLess",
    "QuantizedLessOrEqual",
    "QuantizedMatMul",
    "QuantizedMul",
    "QuantizedModule",
    "QuantizedOp",
    "QuantizedRelu",
    "QuantizedReshape",
    "QuantizedSub",
    "QuantizedSigmoid",
    "QuantizedTableLookup",
    "QuantizedTruncate",
    "QuantizedRankComparison",
    "QuantizedUnaryComparison",
    "QuantizedUnivariateOp",
    "TensorSpec",
    "UniformQuantizationParameters",
    "UniformQuantizer",
    "ThresholdRankQuantizer",
    "UnaryDigitQuantizer",
    "check_n_bits",
    "integer_bit_width",
    "register_op",
    "unregister_custom_op",
    "validate_fhe_mode",
]

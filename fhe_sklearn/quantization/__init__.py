"""Uniform quantization and the integer graph every estimator lowers to."""

from .base_op import QuantizedOp, TensorSpec
from .integer_ops import QuantizedGather, QuantizedIntegerMatMul, QuantizedTableLookup
from .module import FheMode, QuantizedModule, validate_fhe_mode
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
    QuantizedUnivariateOp,
)
from .post_training import PostTrainingQuantizer
from .quantizers import (
    MAX_BIT_WIDTH,
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizer,
    check_n_bits,
    integer_bit_width,
)

__all__ = [
    "MAX_BIT_WIDTH",
    "FheMode",
    "MinMaxQuantizationStats",
    "PostTrainingQuantizer",
    "QuantizationOptions",
    "QuantizedAbs",
    "QuantizedAdd",
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
    "QuantizedModule",
    "QuantizedOp",
    "QuantizedRelu",
    "QuantizedReshape",
    "QuantizedSigmoid",
    "QuantizedTableLookup",
    "QuantizedUnivariateOp",
    "TensorSpec",
    "UniformQuantizer",
    "check_n_bits",
    "integer_bit_width",
    "validate_fhe_mode",
]

"""Calibration choices of the ONNX import: the input grid, and which accumulators a
truncation reads (their weights then take only the bits the truncation keeps)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..quantization.lattice import lattice_quantizer
from ..quantization.quantizers import MinMaxQuantizationStats, QuantizationOptions, UniformQuantizer

#: linear ops whose weight bits follow the truncation after them (:mod:`~fhe_sklearn.quantization.weight_bits`)
TRUNCATION_AWARE_OPS = ("Gemm", "MatMul", "Conv")


def input_quantizer(x: np.ndarray, n_bits: int) -> UniformQuantizer:
    """Per feature for tabular (2-D) inputs; per tensor for images and sequences, whose
    convolutions need one scale.

    A feature constant on the calibration data (a border pixel always 0) gets the median
    step of the other features, on a range centred on its value, rather than a step of 1:
    a step of 1 next to steps of 1/63 made its folded weights dominate every weight scale of
    the first layer (digits MLP at 6 bits: simulate accuracy 0.911 → 0.956). Its codes are
    constant on the calibration data, so the Gemm's bias correction absorbs where it falls.

    A feature (or image) whose calibration values sit on a lattice of fewer levels than the
    grid has, pixel intensities or counts, is quantized on that lattice, exactly, and its
    codes stop at its last level (:mod:`~fhe_sklearn.quantization.lattice`).
    """
    if x.ndim != 2:
        base = UniformQuantizer(QuantizationOptions(n_bits), MinMaxQuantizationStats(float(x.min()), float(x.max())))
        return lattice_quantizer(x, base, per_feature=False) or base
    lo, hi = x.min(axis=0), x.max(axis=0)
    span = hi - lo
    if np.any(span > 0) and np.any(span == 0):
        half = float(np.median(span[span > 0])) / 2
        lo, hi = np.where(span > 0, lo, lo - half), np.where(span > 0, hi, hi + half)
    base = UniformQuantizer(QuantizationOptions(n_bits), MinMaxQuantizationStats(lo, hi))
    return lattice_quantizer(x, base, per_feature=True) or base


def mark_truncated(builder: Any, source: str, target_bits: int) -> None:
    """Tell the linear op producing ``source`` (if any, without learned weights) that a
    lookup reads it truncated to ``target_bits``."""
    producer = next((op for op in builder._ops if op.name == source), None)
    if producer is not None and producer.op_type in TRUNCATION_AWARE_OPS and producer.weight_scale is None:
        producer.truncated_to = target_bits

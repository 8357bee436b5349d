"""Unary-digit input encoding: integer comparisons for one cheap 2-bit lookup each.

A tree compares each feature's integer ``q`` (``n`` bits) with many thresholds. Read
directly, every comparison is a lookup on an ``n``-bit ciphertext (an ``n + 1``-bit PBS with
its own large keys). Here the client, who holds ``q`` in the clear anyway, splits it into a
high digit ``h = q >> b`` and a low digit ``l = q mod 2**b`` (``b = n // 2``) and sends both
in unary: the bits ``[h <= j]`` and ``[l <= j]`` for every level ``j`` but the last. With
``k = (kh << b) + kl``,

    q <= k  ⇔  h < kh  or  (h == kh and l <= kl)  ⇔  [h <= kh - 1] + [h <= kh] + [l <= kl] >= 2,

so each comparison is a sum of at most three input bits (no PBS) and one lookup on a 2-bit
value. The client sends ``2**(n - b) + 2**b - 2`` bits per feature (14 at 6 bits) instead of
one ``n``-bit integer, and learns nothing it did not know: every level of every feature is
sent, whichever the model uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from concrete import fhe

from .base_op import QuantizedOp, TensorSpec
from .quantizers import QuantizationOptions, _QuantizerIntrospection
from .registry import register_op


class UnaryDigitQuantizer(_QuantizerIntrospection):
    """Quantize with ``base`` (per-feature integers in ``[0, 2**n - 1]``), then encode each
    feature as its two unary digits (see the module docstring): ``quant`` returns
    ``(n_samples, n_features * width)`` bits.

    Its own grid is those bits (``n_bits`` 1, scale 1, zero point 0); ``base`` holds the
    features' grid."""

    def __init__(self, base: Any) -> None:
        self.base = base
        n_bits = base.options.n_bits
        if base.options.qmin != 0:
            raise ValueError(f"unary digits encode unsigned integers, got qmin={base.options.qmin}")
        self.low_bits = n_bits // 2
        self.n_high = 2 ** (n_bits - self.low_bits) - 1
        self.n_low = 2**self.low_bits - 1
        #: encoded bits per feature
        self.width = self.n_high + self.n_low
        self.options = QuantizationOptions(1)
        self.scale = 1.0
        self.zero_point = 0

    def encoded_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample shape of the encoded input, from the features' ``(n_features,)``."""
        return (int(np.prod(shape)) * self.width,)

    def encode(self, q: np.ndarray) -> np.ndarray:
        """Per-feature integers (n_samples, n_features) → unary digits, feature by feature."""
        q = np.asarray(q, dtype=np.int64)
        high, low = q >> self.low_bits, q & (2**self.low_bits - 1)
        bits = [high[..., None] <= np.arange(self.n_high), low[..., None] <= np.arange(self.n_low)]
        return np.concatenate(bits, axis=-1).reshape(len(q), -1).astype(np.int64)

    def quant(self, values: Any) -> np.ndarray:
        """Float rows (n_samples, n_features) → their unary digits (n_samples, n_features * width)."""
        return self.encode(self.base.quant(values))

    def comparison(self, feature: int, k: int) -> tuple[list[int], int]:
        """``q[feature] <= k`` ⇔ ``sum(bits[columns]) + constant >= 2``, for ``0 <= k < qmax``."""
        start = feature * self.width
        kh, kl = k >> self.low_bits, k & (2**self.low_bits - 1)
        columns, constant = [], 0
        if kh >= 1:  # [h <= kh - 1]; 0 when kh = 0
            columns.append(start + kh - 1)
        if kh < self.n_high:  # [h <= kh]; 1 at the top level
            columns.append(start + kh)
        else:
            constant += 1
        if kl < self.n_low:  # [l <= kl]; 1 at the top level
            columns.append(start + self.n_high + kl)
        else:
            constant += 1
        return columns, constant


def _at_least_two(s: Any) -> Any:
    return (s >= 2).astype(np.int64)


@register_op
class QuantizedUnaryComparison(QuantizedOp):
    """``q[features[i]] <= ks[i]`` for every i, on the unary digits of
    :class:`UnaryDigitQuantizer`: a sum of input bits, then one lookup per comparison.

    The sums need 2 bits; ``lookup_bits`` may widen the lookups to the width of the circuit's
    other lookups, so the whole circuit has one PBS precision: one set of bootstrap and
    key-switch keys instead of one per precision and per pair of them (for a depth-5 tree:
    evaluation keys 37 → 24 MB, key generation ~1.7x faster, for 1.4x the complexity). The
    tree lowering keeps 2 bits: both key sizes are well under the budget, the complexity is not.

    The module input is the encoded bits; calibration feeds the float features, which the
    float path quantizes itself, so the op is the module's first.
    """

    op_type = "UnaryComparison"

    def __init__(
        self,
        name: str,
        quantizer: UnaryDigitQuantizer,
        features: Any,
        ks: Any,
        lookup_bits: int = 2,
        *,
        inputs: list[str] | None = None,
    ) -> None:
        super().__init__(name, inputs=inputs)
        self.quantizer = quantizer
        self.lookup_bits = max(2, int(lookup_bits))
        self.features = np.asarray(features, dtype=np.int64)
        self.ks = np.asarray(ks, dtype=np.int64)
        terms = [quantizer.comparison(int(f), int(k)) for f, k in zip(self.features, self.ks)]
        self.columns = np.array(sorted({c for cols, _ in terms for c in cols}), dtype=np.int64)
        position = {c: i for i, c in enumerate(self.columns)}
        self.weight = np.zeros((len(self.columns), len(terms)), dtype=np.int64)
        self.constant = np.array([constant for _, constant in terms], dtype=np.int64)
        for j, (cols, _) in enumerate(terms):
            self.weight[[position[c] for c in cols], j] = 1

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return (self.quantizer.base.quant(x)[:, self.features] <= self.ks).astype(np.float64)

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        n = len(self.ks)
        return TensorSpec(1.0, 0, np.zeros(n), np.ones(n))

    def q_impl(self, u: Any) -> Any:
        # 2-D product: a 1-D dot of lookup outputs miscompiles (concrete-python-facts.md)
        s = u[:, self.columns] @ self.weight + self.constant
        if isinstance(s, fhe.tracing.Tracer):
            return fhe.univariate(_at_least_two)(fhe.hint(s, bit_width=self.lookup_bits))
        return _at_least_two(s)

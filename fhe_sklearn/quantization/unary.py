"""Unary-digit input encoding: integer comparisons for one cheap lookup each.

A tree compares each feature's integer ``q`` (``n`` bits) with many thresholds. Read
directly, every comparison is a lookup on an ``n``-bit ciphertext (an ``n + 1``-bit PBS with
its own large keys). Here the client, who holds ``q`` in the clear anyway, splits it into
``d`` digits (``d`` = 2 or 3, one per bit when ``n < d``; ``n // d`` bits each, one more for
the top ``n % d``) and sends each digit ``g`` in unary: the bits ``[g <= j]`` for every
level ``j`` but the last. Comparing digit by digit from the top, with ``k``'s digits ``kg``,

    q <= k  ⇔  S = Σ_{digits above the lowest} w_g ([g <= kg - 1] + [g <= kg]) + [l <= kl] >= 2**(d-1)

with ``w_g = 2**(i-1)`` for the ``i``-th digit from the bottom: a digit below ``kg`` alone
reaches the threshold, one above it leaves every lower digit short of it, an equal one hands
the decision to the digits below. ``S`` takes ``d`` bits (``[0, 2**d - 1]``), so each
comparison is a weighted sum of at most ``2d - 1`` input bits (no PBS) and one ``d``-bit
lookup. At 6 bits the client sends 14 bits per feature with two digits, 9 with three,
instead of one 6-bit integer, and learns nothing it did not know: every level of every
feature is sent, whichever the model uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from concrete import fhe

from .base_op import QuantizedOp, TensorSpec
from .quantizers import QuantizationOptions, _QuantizerIntrospection, as_integers
from .registry import register_op


class UnaryDigitQuantizer(_QuantizerIntrospection):
    """Quantize with ``base`` (per-feature integers in ``[0, 2**n - 1]``), then encode each
    feature as the unary bits of its digits (see the module docstring): ``quant`` returns
    ``(n_samples, n_features * width)`` bits.

    Its own grid is those bits (``n_bits`` 1, scale 1, zero point 0); ``base`` holds the
    features' grid. ``n_digits``: 2 (the default, which older model files hold) or 3.
    """

    def __init__(self, base: Any, n_digits: int = 2) -> None:
        self.base = base
        n_bits = base.options.n_bits
        if base.options.qmin != 0:
            raise ValueError(f"unary digits encode unsigned integers, got qmin={base.options.qmin}")
        if isinstance(n_digits, bool) or n_digits not in (2, 3):
            raise ValueError(f"n_digits must be 2 or 3, got {n_digits!r}")
        self.n_digits = int(n_digits)
        used = min(self.n_digits, n_bits)
        #: bits of each digit, top digit first (the top ones take the remainder)
        self.digit_bits = [n_bits // used + (i < n_bits % used) for i in range(used)]
        #: encoded bits per feature
        self.width = sum(2**b - 1 for b in self.digit_bits)
        #: a comparison holds when the weighted sum of its bits reaches this
        self.threshold = 2 ** (used - 1)
        self.options = QuantizationOptions(1)
        self.scale = 1.0
        self.zero_point = 0

    @property
    def lookup_bits(self) -> int:
        """Bits of a comparison's sum (the input of its lookup)."""
        return len(self.digit_bits)

    def encoded_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample shape of the encoded input, from the features' ``(n_features,)``."""
        return (int(np.prod(shape)) * self.width,)

    def _digits(self, q: Any) -> list[Any]:
        digits, shift = [], sum(self.digit_bits)
        for b in self.digit_bits:
            shift -= b
            digits.append((q >> shift) & (2**b - 1))
        return digits

    def encode(self, q: np.ndarray) -> np.ndarray:
        """Per-feature integers (n_samples, n_features) → unary digits, feature by feature."""
        q = np.asarray(q, dtype=np.int64)
        bits = [g[..., None] <= np.arange(2**b - 1) for g, b in zip(self._digits(q), self.digit_bits)]
        return np.concatenate(bits, axis=-1).reshape(len(q), -1).astype(np.int64)

    def quant(self, values: Any) -> np.ndarray:
        """Float rows (n_samples, n_features) → their unary digits (n_samples, n_features * width)."""
        return self.encode(self.base.quant(values))

    def comparison(self, feature: int, k: int) -> tuple[dict[int, int], int]:
        """``q[feature] <= k`` ⇔ ``sum(weight * bits[column]) + constant >= threshold`` for
        ``0 <= k < qmax``: the weights by column, and the constant."""
        weights: dict[int, int] = {}
        constant, start = 0, feature * self.width
        for i, (kg, b) in enumerate(zip(self._digits(int(k)), self.digit_bits)):
            from_bottom = len(self.digit_bits) - 1 - i
            top_level = 2**b - 1
            # [g <= kg - 1] (0 when kg = 0) and [g <= kg] (1 at the top level); the lowest digit: [g <= kg]
            levels = [kg] if from_bottom == 0 else [kg - 1, kg]
            weight = 1 if from_bottom == 0 else 2 ** (from_bottom - 1)
            for level in levels:
                if level >= top_level:
                    constant += weight
                elif level >= 0:
                    weights[start + level] = weights.get(start + level, 0) + weight
            start += top_level
        return weights, constant


class EncodedInputComparison(QuantizedOp):
    """What the comparisons ``q[features[i]] <= ks[i]`` on a client-side encoding of the input
    share (unary digits here, threshold ranks in :mod:`.rank`): the float path quantizes the
    features with the encoding's ``quantizer.base`` and compares; the output is one bit per
    comparison.

    ``lookup_bits`` may widen the lookups beyond the ``encoding_bits`` the encoding needs (at
    least 2), to the width of the circuit's other lookups."""

    def __init__(
        self,
        name: str,
        quantizer: Any,
        features: Any,
        ks: Any,
        lookup_bits: int,
        *,
        encoding_bits: int,
        inputs: list[str] | None = None,
    ) -> None:
        super().__init__(name, inputs=inputs)
        self.quantizer = quantizer
        self.lookup_bits = max(2, int(encoding_bits), int(lookup_bits))
        self.features = as_integers(features, "features").reshape(-1)
        self.ks = as_integers(ks, "ks").reshape(-1)

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        return (self.quantizer.base.quant(x)[:, self.features] <= self.ks).astype(np.float64)

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        n = len(self.ks)
        return TensorSpec(1.0, 0, np.zeros(n), np.ones(n))


@register_op
class QuantizedUnaryComparison(EncodedInputComparison):
    """``q[features[i]] <= ks[i]`` for every i, on the unary digits of
    :class:`UnaryDigitQuantizer`: a weighted sum of input bits, then one lookup per comparison.

    The sums need ``quantizer.lookup_bits``; ``lookup_bits`` may widen the lookups to the width
    of the circuit's other lookups, so the whole circuit has one PBS precision: one bootstrap
    key, which concrete's runtime converts to the Fourier domain on every call (~55 ms each,
    measured), and one set of key-switch keys.

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
        super().__init__(name, quantizer, features, ks, lookup_bits, encoding_bits=quantizer.lookup_bits, inputs=inputs)
        terms = [quantizer.comparison(int(f), int(k)) for f, k in zip(self.features, self.ks)]
        self.columns = np.array(sorted({c for weights, _ in terms for c in weights}), dtype=np.int64)
        position = {c: i for i, c in enumerate(self.columns)}
        self.weight = np.zeros((len(self.columns), len(terms)), dtype=np.int64)
        self.constant = np.array([constant for _, constant in terms], dtype=np.int64)
        for j, (weights, _) in enumerate(terms):
            for c, w in weights.items():
                self.weight[position[c], j] = w

    def q_impl(self, u: Any) -> Any:
        # 2-D product: a 1-D dot of lookup outputs miscompiles (concrete-python-facts.md)
        s = u[:, self.columns] @ self.weight + self.constant
        threshold = self.quantizer.threshold

        def holds(v: Any) -> Any:
            return (v >= threshold).astype(np.int64)

        if isinstance(s, fhe.tracing.Tracer):
            return fhe.univariate(holds)(fhe.hint(s, bit_width=self.lookup_bits))
        return holds(s)

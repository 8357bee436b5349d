"""Squared-norm input encoding: the client sends ``||u||²`` with its query.

A squared distance ``||u - t||² = ||u||² - 2 u·t + ||t||²`` to clear points ``t`` is leveled
arithmetic except for ``||u||²``, which costs one lookup per feature, on ciphertexts as wide
as the distances: measured on a 50-point k-NN (breast_cancer), that partition alone held 72 MB
of its 169 MB of evaluation keys. The client, which quantizes the query anyway, appends the
integer ``||u||²`` (one more encrypted integer, ~24 bytes compressed) and the circuit adds it.

A client sending another value only corrupts its own answer: every other term is what the
server computes from the query's own ciphertexts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .quantizers import MAX_BIT_WIDTH, QuantizationOptions, UniformQuantizer, _QuantizerIntrospection, integer_bit_width


def code_centre(qmin: int, qmax: int) -> int:
    """The integer the squares are centred on: the middle of the codes' range (not the zero
    point, which lies far outside it for a feature far from zero)."""
    return (int(qmin) + int(qmax)) // 2


class SquaredNormEncoder(_QuantizerIntrospection):
    """Quantize with ``base``, then append ``sum((q - c)**2)``, ``c`` the middle of the codes'
    range (:func:`code_centre`): ``quant`` returns ``(n_samples, n_features + 1)`` integers.

    Parameters
    ----------
    base : UniformQuantizer
        The features' grid.
    n_features : int
    """

    def __init__(self, base: UniformQuantizer, n_features: int) -> None:
        self.base = base
        self.n_features = int(n_features)
        options = base.options
        centre = code_centre(options.qmin, options.qmax)
        #: the code farthest from the centre, in every feature: the row of the largest norm
        self.far_codes = np.full(
            self.n_features, options.qmin if centre - options.qmin > options.qmax - centre else options.qmax
        )
        norm_max = int(np.sum((self.far_codes - centre) ** 2))
        self.column_max = np.r_[np.full(self.n_features, options.qmax), norm_max].astype(np.int64)
        bits = integer_bit_width(0, max(norm_max, options.qmax))
        if bits > MAX_BIT_WIDTH:
            raise ValueError(
                f"the query's squared norm needs a {bits}-bit integer, over the {MAX_BIT_WIDTH}-bit FHE limit"
            )
        self.options = QuantizationOptions(bits)
        #: the features' grid (the norm column is an integer of its own)
        self.scale = base.scale
        self.zero_point = base.zero_point

    def encoded_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample shape of the encoded input: the codes and their squared norm."""
        return (self.n_features + 1,)

    def encode(self, q: np.ndarray) -> np.ndarray:
        """Codes (n_samples, n_features) → codes and squared norm (n_samples, n_features + 1)."""
        q = np.asarray(q, dtype=np.int64)
        u = q - code_centre(self.base.options.qmin, self.base.options.qmax)
        return np.column_stack([q, np.sum(u * u, axis=1)]).astype(np.int64)

    def quant(self, values: Any) -> np.ndarray:
        """Float rows (n_samples, n_features) → codes and squared norm."""
        return self.encode(self.base.quant(values))

    def extreme_rows(self) -> np.ndarray:
        """Encoded rows of the lowest, the highest and the farthest codes: every column's
        extremes, each row consistent (its norm is its codes')."""
        options = self.base.options
        rows = [np.full(self.n_features, options.qmin), np.full(self.n_features, options.qmax), self.far_codes]
        return self.encode(np.array(rows))

    def random_rows(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` encoded rows of random codes."""
        options = self.base.options
        return self.encode(rng.integers(options.qmin, options.qmax, size=(n, self.n_features), endpoint=True))


__all__ = ["SquaredNormEncoder", "code_centre"]

"""Threshold-rank input encoding: one small integer per feature a tree model reads.

Every encrypted integer costs the client the same upload (24 bytes, compressed, whatever its
width, plus 264 bytes per tensor: measured with concrete-python 2.10), so the bytes of a
query are set by the count of integers, not their width. A tree ensemble compares feature
``f``'s integer ``q`` (on the base grid) with a few distinct integer thresholds
``k_0 < ... < k_m`` only; the client sends their rank instead,

    r = #{j : k_j < q}   so that   q <= k_j  ⇔  r <= j,

one integer in ``[0, m]`` per feature some split reads (the others are not sent), and each
comparison is one lookup on ``log2(m + 1)`` bits. A feature with many thresholds may be sent
as the ranks among groups of them, each narrower (see :func:`rank_quantizer`). The rank reveals the split points of the
model on the base grid to the client, which quantizes; the unary layout
(:mod:`~fhe_sklearn.quantization.unary`) keeps them private at 9 to 14 integers per feature.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from concrete import fhe

from .quantizers import QuantizationOptions, _QuantizerIntrospection, as_integers, integer_bit_width
from .registry import register_op
from .unary import EncodedInputComparison


class ThresholdRankQuantizer(_QuantizerIntrospection):
    """Quantize with ``base`` (per-feature integers), then send, for each column, the rank of
    feature ``features[i]``'s integer among ``cuts[i]`` (sorted distinct integer thresholds):
    ``quant`` returns ``(n_samples, len(features))`` integers in ``[0, max len(cuts)]``.

    A feature may fill several columns, each with a group of its thresholds: ranks in
    smaller groups are narrower integers, so cheaper lookups (one cut per column: a bit the
    circuit reads without any lookup).

    Parameters
    ----------
    base : quantizer
        The features' grid (``UniformQuantizer`` or ``ThresholdBinQuantizer``).
    features : array of int
        The feature of each column, in the order they are sent.
    cuts : list of arrays of int
        ``q[features[i]] <= cuts[i][j]`` is a comparison of the model, for every j; a
        feature's groups are disjoint.
    """

    def __init__(self, base: Any, features: Any, cuts: list[Any]) -> None:
        self.base = base
        self.features = as_integers(features, "features").reshape(-1)
        self.cuts = [as_integers(c, "cuts").reshape(-1) for c in cuts]
        if len(self.cuts) != len(self.features) or not len(self.features):
            raise ValueError(f"one list of cuts per feature: {len(self.features)} features, {len(self.cuts)} lists")
        if any(c.size == 0 or np.any(np.diff(c) <= 0) for c in self.cuts):
            raise ValueError("each feature's cuts must be a non-empty increasing sequence")
        #: the largest rank of each column (its number of cuts): the circuit is built for
        #: these bounds, and refuses larger ranks
        self.column_max = np.array([len(c) for c in self.cuts], dtype=np.int64)
        self.options = QuantizationOptions(integer_bit_width(0, int(self.column_max.max())))
        self.scale = 1.0
        self.zero_point = 0

    def encoded_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Per-sample shape of the encoded input: one integer per compared feature."""
        return (len(self.features),)

    def encode(self, q: np.ndarray) -> np.ndarray:
        """Base integers (n_samples, n_features) → ranks (n_samples, len(features))."""
        q = np.asarray(q, dtype=np.int64)
        ranks = [np.searchsorted(c, q[:, f], side="left") for f, c in zip(self.features, self.cuts)]
        return np.column_stack(ranks).astype(np.int64)

    def quant(self, values: Any) -> np.ndarray:
        """Float rows (n_samples, n_features) → ranks (n_samples, len(features))."""
        return self.encode(self.base.quant(values))

    def comparison(self, feature: int, k: int) -> tuple[int, int]:
        """``q[feature] <= k`` ⇔ ``ranks[:, column] <= j``, for a cut k of ``feature``: (column, j)."""
        for column in np.flatnonzero(self.features == feature):
            j = int(np.searchsorted(self.cuts[column], k))
            if j < len(self.cuts[column]) and self.cuts[column][j] == k:
                return int(column), j
        raise ValueError(f"{k} is not a cut of feature {feature}")


@register_op
class QuantizedRankComparison(EncodedInputComparison):
    """``q[features[i]] <= ks[i]`` for every i on the ranks of :class:`ThresholdRankQuantizer`:
    one lookup per comparison, on ``lookup_bits`` (at least the ranks' width; wider to share
    the precision of the circuit's other lookups). The module's first op (as
    :class:`~fhe_sklearn.quantization.unary.QuantizedUnaryComparison`)."""

    op_type = "RankComparison"

    def __init__(
        self,
        name: str,
        quantizer: ThresholdRankQuantizer,
        features: Any,
        ks: Any,
        lookup_bits: int = 2,
        *,
        inputs: list[str] | None = None,
    ) -> None:
        super().__init__(name, quantizer, features, ks, lookup_bits, encoding_bits=quantizer.n_bits, inputs=inputs)
        pairs = [quantizer.comparison(int(f), int(k)) for f, k in zip(self.features, self.ks)]
        self.columns = np.array([c for c, _ in pairs], dtype=np.int64)
        self.ranks = np.array([j for _, j in pairs], dtype=np.int64)

    def q_impl(self, r: Any) -> Any:
        ranks = self.ranks

        def holds(v: Any) -> Any:
            return (v <= ranks).astype(np.int64)

        if not isinstance(r, fhe.tracing.Tracer):
            return holds(r[:, self.columns])
        # a column of one cut holds a rank 0 or 1: its comparison is 1 - rank, no lookup
        single = np.array([len(self.quantizer.cuts[c]) == 1 for c in self.columns])
        if single.all():
            return 1 - r[:, self.columns]
        ranks = ranks[~single]
        looked_up = fhe.univariate(holds)(fhe.hint(r[:, self.columns[~single]], bit_width=self.lookup_bits))
        if not single.any():
            return looked_up
        order = np.argsort(np.concatenate([np.flatnonzero(single), np.flatnonzero(~single)]), kind="stable")
        return np.concatenate((1 - r[:, self.columns[single]], looked_up), axis=1)[:, order]


def rank_quantizer(base: Any, features: np.ndarray, ks: np.ndarray, max_integers: int) -> ThresholdRankQuantizer:
    """The ranks of the comparisons ``q[features[i]] <= ks[i]``, in groups of at most
    ``2**b - 1`` thresholds for the smallest ``b`` that sends at most ``max_integers``
    integers per row (one integer per feature of the model with ``max_integers =
    n_features``, as Concrete ML sends): the narrowest lookups the upload allows. The
    integers left over each take one threshold off the smallest groups: a group of one is a
    bit the circuit reads without a lookup (all of them with at most ``max_integers``
    distinct comparisons)."""
    features, ks = np.asarray(features, dtype=np.int64), np.asarray(ks, dtype=np.int64)
    by_feature = {int(f): np.unique(ks[features == f]) for f in np.unique(features)}
    for bits in range(1, 17):
        size = 2**bits - 1
        if sum(-(-len(c) // size) for c in by_feature.values()) <= max(max_integers, len(by_feature)):
            break
    groups = [(f, list(g)) for f, cuts in by_feature.items() for g in np.array_split(cuts, -(-len(cuts) // size))]
    # spare integers: single cuts peeled off the smallest groups, each then read without lookup
    for _ in range(max(max_integers - len(groups), 0)):
        shared = [i for i, (_, g) in enumerate(groups) if len(g) > 1]
        if not shared:
            break
        i = min(shared, key=lambda i: len(groups[i][1]))
        groups.append((groups[i][0], [groups[i][1].pop()]))
    return ThresholdRankQuantizer(base, [f for f, _ in groups], [np.array(g) for _, g in groups])


#: widest rank the comparisons read: a 5-bit lookup costs ~2.3x a 4-bit one (2.2e8 against
#: 9.6e7 complexity, measured), so beyond, the closest thresholds of a feature are merged
MAX_RANK_BITS = 4


def merge_close_cuts(features: Any, ks: Any, max_integers: int, max_bits: int = MAX_RANK_BITS) -> np.ndarray:
    """``ks`` with, when one integer per feature cannot hold every feature's ranks on
    ``max_bits`` bits, each feature's closest thresholds merged (the lower moved onto the
    upper, the fewest grid steps) until its ranks fit: the comparisons then read ``max_bits``
    bits. Returns the (possibly) moved thresholds, one per comparison."""
    features, ks = np.asarray(features, dtype=np.int64), np.asarray(ks, dtype=np.int64).copy()
    size = 2**max_bits - 1
    counts = {int(f): len(np.unique(ks[features == f])) for f in np.unique(features)}
    if sum(-(-n // size) for n in counts.values()) <= max(max_integers, len(counts)):
        return ks
    for feature in counts:
        cuts = list(np.unique(ks[features == feature]))
        while len(cuts) > size:
            i = int(np.argmin(np.diff(cuts)))  # cuts[i] joins cuts[i + 1]
            ks[(features == feature) & (ks == cuts[i])] = cuts[i + 1]
            del cuts[i]
    return ks

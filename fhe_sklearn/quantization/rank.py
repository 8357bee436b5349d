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

from .base_op import hint_range
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
    :class:`~fhe_sklearn.quantization.unary.QuantizedUnaryComparison`).

    Two kinds of comparison need no lookup: on a column of one cut (a rank 0 or 1) it is
    ``1 - rank``; on a column of ``m`` cuts that all are comparisons, one of them may be
    ``m - rank`` minus the others, since ``sum_j [rank <= j] = m - rank``: ``derived`` (one
    flag per comparison, at most one per column; None: none) names those. Such a bit carries
    the noise of its column's ``m - 1`` other lookups, and concrete bounds the noise of a
    tensor by its noisiest element: derive where the sums reading the bits leave room.
    """

    op_type = "RankComparison"

    def __init__(
        self,
        name: str,
        quantizer: ThresholdRankQuantizer,
        features: Any,
        ks: Any,
        lookup_bits: int = 2,
        derived: Any = None,
        *,
        inputs: list[str] | None = None,
    ) -> None:
        super().__init__(name, quantizer, features, ks, lookup_bits, encoding_bits=quantizer.n_bits, inputs=inputs)
        self.columns, self.ranks = _columns_and_ranks(quantizer, self.features, self.ks)
        self.derived = np.zeros(len(self.ks), dtype=bool) if derived is None else np.asarray(derived)
        if self.derived.dtype != bool or self.derived.shape != self.ks.shape:
            raise ValueError(f"derived must be one bool per comparison ({len(self.ks)}), got {derived!r}")
        for i in np.flatnonzero(self.derived):
            mine = self.columns == self.columns[i]
            if self.derived[mine].sum() > 1 or not _every_cut_compared(quantizer, self.ranks[mine], self.columns[i]):
                raise ValueError(
                    f"comparison {i} cannot be derived: its column needs several cuts, all compared, one derived"
                )

    @staticmethod
    def derivable(quantizer: ThresholdRankQuantizer, features: Any, ks: Any, max_cuts: int) -> np.ndarray:
        """A ``derived`` flag per comparison: one in each column of 2 to ``max_cuts`` cuts,
        all compared (its bit then sums ``max_cuts - 1`` lookups' noise, at most)."""
        columns, ranks = _columns_and_ranks(quantizer, features, ks)
        derived = np.zeros(len(columns), dtype=bool)
        for column in np.unique(columns):
            mine = np.flatnonzero(columns == column)
            if quantizer.column_max[column] <= max_cuts and _every_cut_compared(quantizer, ranks[mine], column):
                derived[mine[np.argmax(ranks[mine])]] = True
        return derived

    def q_impl(self, r: Any) -> Any:
        if not isinstance(r, fhe.tracing.Tracer):
            return (r[:, self.columns] <= self.ranks).astype(np.int64)
        cuts = self.quantizer.column_max[self.columns]
        free, derived = cuts == 1, self.derived
        looked = ~free & ~derived
        parts, order = [], []
        if free.any():
            parts.append(1 - r[:, self.columns[free]])
            order.append(np.flatnonzero(free))
        if looked.any():
            ranks = self.ranks[looked]
            narrowed = fhe.hint(r[:, self.columns[looked]], bit_width=self.lookup_bits)
            looked_up = fhe.univariate(lambda v: (v <= ranks).astype(np.int64))(narrowed)
            parts.append(looked_up)
            order.append(np.flatnonzero(looked))
        if derived.any():
            # column c's other comparisons, one per cut, among the looked-up ones
            index = {(int(c), int(j)): n for n, (c, j) in reversed(list(enumerate(zip(self.columns[looked], ranks))))}
            others = np.zeros((int(looked.sum()), int(derived.sum())), dtype=np.int64)
            for d, i in enumerate(np.flatnonzero(derived)):
                rows = [index[(int(self.columns[i]), j)] for j in range(int(cuts[i])) if j != self.ranks[i]]
                others[rows, d] = 1
            top = cuts[derived]
            complement = hint_range(top - r[:, self.columns[derived]], 0, int(top.max()))
            # 2-D on purpose: a 1-D dot of lookup outputs computes wrong results in concrete
            parts.append(complement - looked_up @ others)
            order.append(np.flatnonzero(derived))
        if len(parts) == 1:
            return parts[0]
        position = np.argsort(np.concatenate(order), kind="stable")
        return np.concatenate(tuple(parts), axis=1)[:, position]


def _columns_and_ranks(quantizer: ThresholdRankQuantizer, features: Any, ks: Any) -> tuple[np.ndarray, np.ndarray]:
    """Each comparison ``q[features[i]] <= ks[i]`` as ``ranks[:, column] <= j``: (columns, js)."""
    pairs = [quantizer.comparison(int(f), int(k)) for f, k in zip(features, ks)]
    return np.array([c for c, _ in pairs], dtype=np.int64), np.array([j for _, j in pairs], dtype=np.int64)


def _every_cut_compared(quantizer: ThresholdRankQuantizer, ranks: np.ndarray, column: int) -> bool:
    """Whether ``ranks`` (a column's comparisons) cover its several cuts: one is then derivable."""
    return len(np.unique(ranks)) == quantizer.column_max[column] > 1


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

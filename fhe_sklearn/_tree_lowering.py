"""Lower decision trees and tree ensembles to one QuantizedModule.

Circuit, for all trees of a model at once:

1. ``splits``: one comparison TLU per distinct (feature, integer threshold) over all trees,
   on what the client sends: by default the ranks of the compared features among their
   thresholds, at most one integer per feature (:mod:`~fhe_sklearn.quantization.rank`; one
   threshold per rank: bits, no TLU; and one comparison per rank is the rank minus the
   others, where the sums reading it have room for its noise: ``DERIVED_NOISE_BUDGET``), or
   unary digits (:mod:`~fhe_sklearn.quantization.unary`); thresholds that every quantized
   input satisfies (or none does) are constants, not TLUs;
2. ``paths``: for every internal node ``p`` with a leaf child, the integer
   ``v = 2 * (number of terms that hold on the path to p) + bit(p)``, a matrix product of the
   split bits (no PBS), where the terms are p's ancestors' agreements with that path;
3. ``leaves``: one TLU per such node and output column: ``v = 2*terms + 1`` means the left
   leaf is reached, ``2*terms`` the right one; the table returns that leaf's quantized value
   (centered on its zero point), else 0. A node whose leaves quantize to 0 needs no TLU.
   With many output columns, one TLU per leaf child returns whether it is reached instead,
   and the leaf's values become weights of ``tree_sum``. A small subtree may be one TLU
   reading all its nodes' bits (a unit, :mod:`._tree_paths`): a depth-3 tree's halves read
   4 bits, as 4-bit ranks' comparisons do, and replace two 3-bit lookups each;
4. ``tree_sum``: sum the leaf TLUs into output columns (no PBS), each tree weighted by its
   leaf scale as an integer multiple of the finest one. A sum wider than
   ``PLANE_MIN_SUM_BITS`` goes back as binary digit planes instead (every lookup then says
   whether its leaf is reached, and plane ``j`` adds bit ``j`` of the reached leaves'
   integers): no lookup writes the sum's width, and the client adds ``2**j`` times each plane
   (``TensorSpec.blocks``) after decryption. Where planes need too many more lookups, each
   tree's value goes back in a block of its own ("trees": a lookup writes its tree's few bits
   on its tree's scale) and the client adds the blocks.

Two layouts, by the number of lookups, since concrete's runtime converts every bootstrap
key (one per PBS precision) to the Fourier domain on every call (~55 ms each, measured):

- up to ``SINGLE_PRECISION_MAX_LOOKUPS`` (a single tree, small ensembles): every lookup
  reads 3 bits, one precision (3 unary digits per feature; ranks wider than 3 bits: their
  width for the comparisons); a leaf lookup reads at most 3 terms, the first one, for a
  node deeper than that, the ``reach`` bit of an ancestor (one shared lookup ``[its path's
  agreements all hold]``). A depth-5 tree: 22 PBS, keys 39 → 18 MB, execution 0.46 → 0.33 s;
- beyond, the per-PBS price dominates: comparisons on the ranks' width (2-digit unary ones
  on 2 bits, the cheapest parameters) and leaf lookups at their natural width
  (``log2(2 * depth + 2)`` bits), or units at the comparisons' width where that costs less
  (``PBS_COST``); two precisions at most (a 20×4 forest: 3.1 s per row against 3.8 s on one
  3-bit precision).

So a prediction costs (distinct splits + nodes with a leaf child + reach lookups) PBS, fewer
with units and derived comparisons, and no lookup reads more than the ranks' or the leaves'
few bits however wide the inputs are.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ._tree_leaves import binary_digits, leaf_quantizers, table_offset
from ._tree_paths import LEAF_TERMS, LOOKUP_BITS, _Decision, _LeafSlot, _PathForms, leaf_lookups, subtree_slot
from .quantization import (
    MAX_BIT_WIDTH,
    GraphBuilder,
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedModule,
    UniformQuantizer,
)
from .quantization.bins import ThresholdBinQuantizer
from .quantization.quantizers import integer_bit_width
from .quantization.rank import QuantizedRankComparison, merge_close_cuts, rank_quantizer
from .quantization.unary import UnaryDigitQuantizer


@dataclass
class FlatTree:
    """One tree in scikit-learn's array layout.

    ``left``/``right`` are child ids (-1 at leaves); a sample goes left when
    ``x[feature] <= threshold`` (or ``<`` when ``strict``, as in xgboost). ``value[node]``
    holds a leaf's values, which add to the output ``columns``.
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    value: np.ndarray
    columns: np.ndarray
    strict: bool = False

    def is_leaf(self, node: int) -> bool:
        """Whether ``node`` is a leaf."""
        return self.left[node] < 0

    def leaf_index(self, X: np.ndarray) -> np.ndarray:
        """Leaf reached by each row of X, in float (the reference the FHE model approximates)."""
        nodes = np.zeros(len(X), dtype=np.int64)
        for _ in range(len(self.left)):
            inner = self.left[nodes] >= 0
            if not inner.any():
                break
            n = nodes[inner]
            x = X[inner, self.feature[n]]
            if self.strict:  # xgboost compares in float32
                go_left = x.astype(np.float32) < self.threshold[n].astype(np.float32)
            else:
                go_left = x <= self.threshold[n]
            nodes[inner] = np.where(go_left, self.left[n], self.right[n])
        return nodes

    def predict_float(self, X: np.ndarray, n_outputs: int) -> np.ndarray:
        """This tree's float output for each row of ``X``, placed in its ``columns`` of ``n_outputs``."""
        out = np.zeros((len(X), n_outputs))
        out[:, self.columns] = self.value[self.leaf_index(X)]
        return out


def split_range_quantizer(trees: list[FlatTree], X: np.ndarray, n_bits: int) -> UniformQuantizer:
    """Uniform per-feature grid spanning the model's split thresholds (plus one step each side).

    Inputs beyond a feature's lowest or highest split all take the same path, so clipping them
    costs nothing and every level of the grid lands where a decision can change. It reveals
    the lowest and highest split of each feature to the client (the data range would reveal
    the training data's extremes instead). Features no tree uses keep their data range.
    """
    lo, hi = X.min(axis=0).astype(np.float64), X.max(axis=0).astype(np.float64)
    for feature in range(X.shape[1]):
        thresholds = _feature_thresholds(trees, feature)
        if thresholds.size:
            a, b = thresholds.min(), thresholds.max()
            step = (b - a) / max(2**n_bits - 3, 1) if b > a else max(abs(a), 1.0) * 1e-3
            lo[feature], hi[feature] = a - step, b + step
    return UniformQuantizer(QuantizationOptions(n_bits), MinMaxQuantizationStats(lo, hi))


def threshold_grid(trees: list[FlatTree], n_features: int) -> np.ndarray:
    """A calibration set read off the model itself, for ``from_sklearn_model(model, X=None)``.

    Column ``f`` runs through feature ``f``'s distinct split thresholds plus one point beyond
    each extreme (a tenth of the split span, at least 1e-3 of its magnitude), so every split
    is on both sides of some row; a feature no tree splits on gets ``[0, 1]``. The input grid of
    ``quantization="uniform"`` spans the split thresholds and ``"splits"`` bins them, so the
    quantized model is the one a training set would give, except for the range of unused
    features (whose values no split reads).

    Returns
    -------
    X : ndarray of shape (n_points, n_features)
        Shorter columns repeat their last point.
    """
    columns = []
    for feature in range(n_features):
        thresholds = np.unique(_feature_thresholds(trees, feature))
        if thresholds.size == 0:
            columns.append(np.array([0.0, 1.0]))
            continue
        lo, hi = thresholds[0], thresholds[-1]
        margin = max((hi - lo) / 10, 1e-3 * max(abs(lo), abs(hi), 1.0))
        columns.append(np.concatenate([[lo - margin], thresholds, [hi + margin]]))
    n_points = max(len(c) for c in columns)
    return np.column_stack([np.pad(c, (0, n_points - len(c)), mode="edge") for c in columns])


def threshold_bin_quantizer(trees: list[FlatTree], n_features: int, max_bits: int) -> ThresholdBinQuantizer:
    """Exact bins at the split points (``quantization="splits"``)."""
    per_feature = [_feature_thresholds(trees, f) for f in range(n_features)]
    return ThresholdBinQuantizer(per_feature, strict=trees[0].strict, max_bits=max_bits)


def _feature_thresholds(trees: list[FlatTree], feature: int) -> np.ndarray:
    """Every split threshold on ``feature``, over all trees."""
    return np.concatenate([t.threshold[(t.feature == feature) & (t.left >= 0)] for t in trees])


class _Splits:
    """Distinct comparisons ``q[feature] <= k`` on the quantized input."""

    def __init__(self, quantizer: UniformQuantizer | ThresholdBinQuantizer, n_features: int) -> None:
        self.quantizer = quantizer
        self.scale = np.broadcast_to(quantizer.scale, (n_features,))
        self.zero_point = np.broadcast_to(quantizer.zero_point, (n_features,))
        self.qmin, self.qmax = quantizer.options.qmin, quantizer.options.qmax
        self.index: dict[tuple[int, int], int] = {}

    def bit(self, feature: int, threshold: float, strict: bool) -> tuple[int | None, int]:
        """(comparison id, 0) for a real split, or (None, constant bit)."""
        if isinstance(self.quantizer, ThresholdBinQuantizer):
            k = self.quantizer.split_index(feature, threshold)
        else:
            position = threshold / self.scale[feature] + self.zero_point[feature]
            k = int(np.ceil(position)) - 1 if strict else int(np.floor(position))
        if k < self.qmin:
            return None, 0
        if k >= self.qmax:
            return None, 1
        return self.index.setdefault((int(feature), k), len(self.index)), 0

    def thresholds(self) -> tuple[np.ndarray, np.ndarray]:
        """Feature and integer threshold ``k`` (``q <= k``) of each comparison, by id."""
        features = np.array([f for f, _ in self.index], dtype=np.int64)
        return features, np.array([k for _, k in self.index], dtype=np.int64)


QUANTIZATION_MODES = ("uniform", "splits")
#: what the client sends: "unary" (the default) 9 or 14 bits per feature, the thresholds stay
#: on the server; "rank" one integer per compared feature, its rank among the feature's
#: thresholds, which the client then knows (Concrete ML's upload size, and thresholds merged
#: to 4-bit ranks where a feature has many: scikit-learn's estimator checks on random
#: forests and extra trees fail on that loss); see :mod:`~fhe_sklearn.quantization.rank`
INPUT_ENCODINGS = ("unary", "rank")
#: what the client decrypts: "auto" (the default) picks the cheapest of the others (see
#: PLANE_MIN_SUM_BITS and PLANES_MAX_LOOKUP_RATIO); "planes" the scores as binary digit
#: planes; "sum" one integer per output (a sum over 16 bits is then refused); "trees" one
#: integer per tree and output, each on its tree's own leaf grid (Concrete ML's output: a
#: ciphertext per tree). Planes tell the client, per output and bit, how many trees reached a
#: leaf with that bit set (a digit count, not which leaf); "trees" every tree's leaf value;
#: "sum" only the scores
OUTPUT_ENCODINGS = ("auto", "planes", "sum", "trees")


def lower_trees(
    trees: list[FlatTree],
    n_outputs: int,
    X: np.ndarray,
    n_bits_inputs: int,
    n_bits_leaves: int,
    quantization: str = "uniform",
    input_encoding: str = "unary",
    output_encoding: str = "auto",
) -> QuantizedModule:
    """Build and calibrate the QuantizedModule of a sum of ``trees`` (see module docstring).

    ``quantization="uniform"``: a uniform grid per feature over its split range;
    ``"splits"``: exact bins at the split points (reveals them to the client).
    """
    if quantization == "uniform":
        quantizer = split_range_quantizer(trees, X, n_bits_inputs)
    elif quantization == "splits":
        quantizer = threshold_bin_quantizer(trees, X.shape[1], n_bits_inputs)
    else:
        raise ValueError(f"quantization must be one of {QUANTIZATION_MODES}, got {quantization!r}")
    if input_encoding not in INPUT_ENCODINGS:
        raise ValueError(f"input_encoding must be one of {INPUT_ENCODINGS}, got {input_encoding!r}")
    if output_encoding not in OUTPUT_ENCODINGS:
        raise ValueError(f"output_encoding must be one of {OUTPUT_ENCODINGS}, got {output_encoding!r}")
    # one sum: multiples of the finest leaf grid; blocks apart: every tree on its own grid
    shared = leaf_quantizers(trees, n_bits_leaves)
    leaf_scale = shared[2]

    def collect(implied_leaf: bool = False, unit_bits: int = 0, per_tree_blocks: tuple | None = None) -> _TreeCircuit:
        width = n_outputs * (len(trees) if per_tree_blocks else 1)
        circuit = _TreeCircuit(_Splits(quantizer, X.shape[1]), width, implied_leaf, narrow=bool(per_tree_blocks))
        per_tree, multipliers, _ = per_tree_blocks or shared
        for i, (tree, leaf_q, m) in enumerate(zip(trees, per_tree, multipliers)):
            if per_tree_blocks:  # each tree sums into its own columns
                tree = replace(tree, columns=tree.columns + i * n_outputs)
            circuit.add_tree(tree, leaf_q, m, unit_bits)
        return circuit

    circuit = collect()
    n_splits, n_lookups = circuit.lookup_count()
    # one precision for a few lookups (see the module docstring)
    single = n_splits + n_lookups <= SINGLE_PRECISION_MAX_LOOKUPS
    unit_bits = 0
    bits = 0 if single or output_encoding == "planes" else circuit.comparison_bits(input_encoding, X.shape[1])
    if bits >= UNIT_MIN_BITS:
        # lookups of whole subtrees, read at the comparisons' width, where fewer cost less
        candidate = collect(unit_bits=bits)
        if candidate.lookup_cost() < circuit.lookup_cost():
            circuit, unit_bits = candidate, bits
    planes = 0
    if output_encoding in ("auto", "planes") and circuit.tree_leaves:
        # "planes" and a sum over 16 bits always; "auto" where it pays (see PLANES_MAX_LOOKUP_RATIO)
        forced = output_encoding == "planes" or (circuit.sum_bits() > MAX_BIT_WIDTH and not unit_bits)
        if forced or (not single and circuit.sum_bits() > PLANE_MIN_SUM_BITS):
            candidate = collect(implied_leaf=True)
            n_planes = candidate.score_planes()
            if unit_bits and not forced:  # units go back per tree, as narrow as planes: the cheaper
                take = candidate.lookup_cost(n_planes) <= circuit.lookup_cost()
            else:
                take = forced or candidate.lookup_count(n_planes)[1] <= PLANES_MAX_LOOKUP_RATIO * n_lookups
            if take:
                circuit, planes = candidate, n_planes
            elif len(trees) > 1:
                output_encoding = "trees"  # the value lookups, each writing its tree's few bits
    if output_encoding == "trees":
        own = leaf_quantizers(trees, n_bits_leaves, shared=False)
        blocks = collect(unit_bits=unit_bits, per_tree_blocks=own)
        scales = np.repeat([[float(np.max(q.scale))] for q in own[0]], n_outputs, axis=1)
        return blocks.build(X, leaf_scale, input_encoding, single=single, block_scales=scales)
    return circuit.build(X, leaf_scale, input_encoding, planes, single)


class _TreeCircuit:
    """Collects the leaf slots of every tree, then builds their one shared circuit."""

    def __init__(self, splits: _Splits, n_outputs: int, implied_leaf: bool = False, narrow: bool = False) -> None:
        self.splits = splits
        #: offsets from one leaf of each tree (its most common value vector), which then needs
        #: no lookup in any column: what digit planes want; else per column (table_offset)
        self.implied_leaf = implied_leaf
        #: offsets that keep each tree's leaf integers as narrow as its quantizer's grid
        self.narrow = narrow
        self.slots: list[_LeafSlot] = []
        self.bias = np.zeros(n_outputs, dtype=np.int64)
        # exactly one leaf per tree and column is reached: the sum's true range, per column
        self.reach_lo = np.zeros(n_outputs, dtype=np.int64)
        self.reach_hi = np.zeros(n_outputs, dtype=np.int64)
        #: each tree's output columns and leaf integers (minus its offset, times its multiple)
        self.tree_leaves: list[tuple[np.ndarray, np.ndarray]] = []
        #: leaf lookups by number of planes, once the trees are in (lookup_count, then build)
        self._lookups: dict[int, list[tuple[_LeafSlot, np.ndarray]]] = {}

    def add_tree(self, tree: FlatTree, leaf_q: UniformQuantizer, multiplier: int, unit_bits: int = 0) -> None:
        """Add ``tree``'s slots; ``unit_bits`` > 0: a subtree whose lookup reads at most that
        many bits is one slot (a unit, for a single-output tree)."""
        # a table returns the reached leaf's integer minus the tree's offset (0 elsewhere);
        # the offset goes to the bias: one leaf per tree and column is always reached
        self._lookups.clear()
        q_values = leaf_q.quant(tree.value) - leaf_q.zero_point
        reached = q_values[tree.left < 0]
        if tree.is_leaf(0):
            self.bias[tree.columns] += multiplier * q_values[0]
            return
        if self.implied_leaf:
            rows, counts = np.unique(reached, axis=0, return_counts=True)
            offset = rows[np.argmax(counts)]
        else:
            offset = np.array([table_offset(reached[:, j], self.narrow) for j in range(reached.shape[1])])
        self.bias[tree.columns] += multiplier * offset
        q_values, reached = q_values - offset, reached - offset
        self.tree_leaves.append((np.asarray(tree.columns), multiplier * reached))
        self.reach_lo[tree.columns] += multiplier * np.minimum(reached.min(axis=0), 0)
        self.reach_hi[tree.columns] += multiplier * np.maximum(reached.max(axis=0), 0)

        def decision(node: int, went_left: bool = False) -> _Decision:
            return _Decision(*self.splits.bit(tree.feature[node], tree.threshold[node], tree.strict), went_left)

        units = unit_bits if len(tree.columns) == 1 else 0
        stack: list[tuple[int, list[_Decision]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            if units and 2 <= (inner := _internal_nodes(tree, node)) and inner + len(path).bit_length() <= units:
                slot = subtree_slot(tree, node, decision, q_values[:, 0], path, int(tree.columns[0]), multiplier)
                if slot.values.any():
                    self.slots.append(slot)
                continue
            left, right = tree.left[node], tree.right[node]
            own = decision(node)
            for j, column in enumerate(tree.columns):
                q_left = q_values[left, j] if tree.is_leaf(left) else 0
                q_right = q_values[right, j] if tree.is_leaf(right) else 0
                if q_left or q_right:
                    values = np.array([q_right, q_left], dtype=np.int64)
                    self.slots.append(_LeafSlot(path, [own], column, values, multiplier))
            for child, went_left in ((left, True), (right, False)):
                if not tree.is_leaf(child):
                    stack.append((child, [*path, decision(node, went_left)]))

    def _used_splits(self) -> list[int]:
        decisions = (d for slot in self.slots for d in (*slot.prefix, *slot.nodes))
        return sorted({d.split for d in decisions if d.split is not None})

    def _all_slots(self) -> list[_LeafSlot]:
        # all trees are leaves: one lookup of a constant bit keeps the circuit's shape
        return self.slots or [_LeafSlot([], [_Decision(None, 0, False)], 0, np.zeros(2, dtype=np.int64), 1)]

    def leaf_lookups(self, planes: int = 0) -> list[tuple[_LeafSlot, np.ndarray]]:
        """:func:`leaf_lookups` of this circuit's slots (with ``planes``: in digit planes)."""
        if planes not in self._lookups:
            self._lookups[planes] = leaf_lookups(self._all_slots(), len(self.bias), planes)
        return self._lookups[planes]

    def lookup_count(self, planes: int = 0) -> tuple[int, int]:
        """Comparisons read and leaf lookups of the circuit (with ``planes``: in digit planes)."""
        return len(self._used_splits()), len(self.leaf_lookups(planes))

    def lookup_cost(self, planes: int = 0) -> float:
        """The leaf lookups' cost, by their number and the width they all read (one tensor)."""
        lookups = self.leaf_lookups(planes)
        top = max(2 ** len(slot.nodes) * (len(slot.prefix) + 1) for slot, _ in lookups)
        bits = min(max((top - 1).bit_length(), min(PBS_COST)), max(PBS_COST))
        return len(lookups) * PBS_COST[bits]

    def _comparisons(self, input_encoding: str, n_features: int, single: bool) -> tuple[Any, dict]:
        """The input quantizer and the comparison op's arguments, on the splits the slots use."""
        features, thresholds = self.splits.thresholds()
        used = self._used_splits()
        features, thresholds = features[used], thresholds[used]
        if not used:  # keeps the circuit's input encrypted; its bit is never read
            features, thresholds = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
        comparisons = {"features": features, "ks": thresholds, "lookup_bits": LOOKUP_BITS if single else 2}
        if input_encoding == "rank":
            # at most one integer per feature of the row: the upload of Concrete ML's query;
            # split bins promise the float model's exact paths, so keep their ranks whole
            if isinstance(self.splits.quantizer, UniformQuantizer):
                thresholds = merge_close_cuts(features, thresholds, max_integers=n_features)
                comparisons["ks"] = thresholds
            quantizer = rank_quantizer(self.splits.quantizer, features, thresholds, max_integers=n_features)
        else:
            quantizer = UnaryDigitQuantizer(self.splits.quantizer, n_digits=3 if single else 2)
        return quantizer, comparisons

    def comparison_bits(self, input_encoding: str, n_features: int) -> int:
        """The width the comparisons read (of the multi-precision layout)."""
        quantizer, comparisons = self._comparisons(input_encoding, n_features, single=False)
        own = quantizer.n_bits if input_encoding == "rank" else quantizer.lookup_bits
        return max(2, own, comparisons["lookup_bits"])

    def build(
        self,
        X: np.ndarray,
        leaf_scale: float,
        input_encoding: str = "unary",
        planes: int = 0,
        single: bool = False,
        block_scales: np.ndarray | None = None,
    ) -> QuantizedModule:
        """The module: ``planes`` > 0 returns the scores in that many binary digit planes;
        ``block_scales`` (n_trees, n_outputs): one block per tree, on its scales, which the
        client adds up;
        ``single``: every lookup at one 3-bit precision (see the module docstring)."""
        used = self._used_splits()
        renumber = {old: new for new, old in enumerate(used)}
        quantizer, comparisons = self._comparisons(input_encoding, X.shape[1], single)
        lookups = self.leaf_lookups(planes)
        forms = _PathForms(renumber)
        sums, offsets = [], []
        for slot, _ in lookups:
            # with one precision at most LEAF_TERMS terms, the first one a deep ancestor's reach bit
            form, depth = forms.leaf_sum(slot, LEAF_TERMS if single else None)
            sums.append(form)
            offsets.append(2 ** len(slot.nodes) * depth)
        width = max(offset + len(slot.values) for offset, (slot, _) in zip(offsets, lookups))
        tables = np.zeros((len(lookups), width), dtype=np.int64)
        to_output = np.zeros((len(lookups), max(planes, 1) * len(self.bias)), dtype=np.int64)
        for s, (offset, (slot, row)) in enumerate(zip(offsets, lookups)):
            tables[s, offset : offset + len(slot.values)] = slot.values
            to_output[s] = row
        n_splits = len(comparisons["ks"])
        reach_sums = [
            forms.matrix([forms.sums[r] for r in reaches], n_splits, below=level)
            for level, reaches in enumerate(forms.levels(), start=1)
        ]
        paths = forms.matrix(sums, n_splits, below=len(reach_sums) + 1)
        builder = GraphBuilder()
        builder.input(quantizer)
        if input_encoding == "rank":
            # a derived bit's noise (its column's other lookups) times the noisiest sum's
            norm = max(int(np.max(np.sum(w**2, axis=0), initial=1)) for w, _ in [paths, *reach_sums])
            derived = QuantizedRankComparison.derivable(
                quantizer, comparisons["features"], comparisons["ks"], max_cuts=1 + DERIVED_NOISE_BUDGET // norm
            )
            builder.add("RankComparison", name="splits", quantizer=quantizer, derived=derived, **comparisons)
        else:
            builder.add("UnaryComparison", name="splits", quantizer=quantizer, **comparisons)
        bits = ["splits"]
        for level, ((weight, bias), reaches) in enumerate(zip(reach_sums, forms.levels()), start=1):
            source = bits[0] if len(bits) == 1 else builder.add("Concat", *bits, name=f"reach_inputs_{level}", axis=1)
            builder.add("IntegerMatMul", source, name=f"reach_sums_{level}", weight=weight, bias=bias)
            reach_tables = np.zeros((len(reaches), 2**LOOKUP_BITS), dtype=np.int64)
            reach_tables[np.arange(len(reaches)), [forms.targets[r] for r in reaches]] = 1
            bits.append(builder.add("TableLookup", name=f"reach_{level}", tables=reach_tables, lookup_bits=LOOKUP_BITS))
        source = bits[0] if len(bits) == 1 else builder.add("Concat", *bits, name="path_bits", axis=1)
        builder.add("IntegerMatMul", source, name="paths", weight=paths[0], bias=paths[1])
        lookup_bits = LOOKUP_BITS if single else None
        builder.add("TableLookup", name="leaves", tables=tables, output_scale=leaf_scale, lookup_bits=lookup_bits)
        builder.add(
            "IntegerMatMul",
            name="tree_sum",
            weight=to_output,
            overflow_hint="lower n_bits['op_leaves'], use fewer trees or output_encoding='auto' (digit planes)",
            **self._output_arguments(leaf_scale, planes, block_scales),
        )
        return builder.build(X)

    def _output_arguments(self, leaf_scale: float, planes: int, block_scales: np.ndarray | None) -> dict:
        """How ``tree_sum`` maps to scores: one integer per output, digit planes or blocks."""
        if planes:
            # the bias would widen plane 0: it becomes the client's zero point instead
            zero_point = np.concatenate([-self.bias, np.zeros((planes - 1) * len(self.bias), dtype=np.int64)])
            return {
                "bounds": self._plane_bounds(planes),
                "output_scale": np.repeat(leaf_scale * 2.0 ** np.arange(planes), len(self.bias)),
                "output_zero_point": zero_point,
                "output_blocks": planes,
            }
        if block_scales is not None:  # a tree's offset is its block's zero point, as for planes
            return {
                "bounds": (self.reach_lo, self.reach_hi),
                "output_scale": block_scales.ravel(),
                "output_zero_point": -self.bias,
                "output_blocks": len(block_scales),
            }
        return {"bias": self.bias, "bounds": (self.reach_lo, self.reach_hi)}

    def score_planes(self) -> int:
        """Binary digit planes that hold every leaf integer."""
        largest = max(int(np.abs(values).max(initial=0)) for _, values in self.tree_leaves)
        return max(1, largest.bit_length())

    def sum_bits(self) -> int:
        """Width of the score sum in one integer per column."""
        return integer_bit_width(self.reach_lo + self.bias, self.reach_hi + self.bias)

    def _plane_bounds(self, planes: int) -> tuple[np.ndarray, np.ndarray]:
        """Range of each plane's sum, column by column: one leaf per tree is reached, so a
        tree adds one of its leaves' digits."""
        n = len(self.bias)
        lo, hi = np.zeros((planes, n), dtype=np.int64), np.zeros((planes, n), dtype=np.int64)
        for columns, values in self.tree_leaves:
            for j, digit in enumerate(binary_digits(values, planes)):
                lo[j, columns] += np.minimum(digit.min(axis=0), 0)
                hi[j, columns] += np.maximum(digit.max(axis=0), 0)
        return lo.ravel(), hi.ravel()


def _internal_nodes(tree: FlatTree, node: int) -> int:
    """Internal nodes in the subtree of ``node``."""
    count, stack = 0, [node]
    while stack:
        n = stack.pop()
        if not tree.is_leaf(n):
            count += 1
            stack += [tree.left[n], tree.right[n]]
    return count


#: circuits of at most this many lookups (comparisons + leaf lookups) get one PBS precision:
#: measured, a depth-5 tree (20) runs 29% faster on one, a 20×3 XGBClassifier (151) as fast,
#: a 20×4 forest (281) 22% slower
SINGLE_PRECISION_MAX_LOOKUPS = 100
#: a score sum wider than this goes back as binary digit planes (the client adds them up):
#: a lookup then writes a plane's few bits, not the sum's 11-12, and its keys shrink. RF 20x4
#: digits: complexity 6.3e10 -> 3.1e10, 6.4 -> 3.3 s per row, keys 53 -> 19 MB, output 164 KB -> 1.1 MB
PLANE_MIN_SUM_BITS = 7
#: planes need one lookup per leaf (bar one per tree, whose values become the offsets), not
#: per node with a leaf child: kept when that costs at most this many times the leaf lookups,
#: else each tree's value goes back in its own block ("trees"); with units, the cheaper of the
#: two by PBS_COST (HistGradientBoostingRegressor 20x3, 4-bit ranks: 1.02e10 -> 8.7e9, one
#: precision instead of two). Measured (20 trees): RF depth 4
#: on digits 1.0x, complexity -51%; on breast_cancer 1.2x, -7%; XGBClassifier depth 3 1.43x,
#: -17%, keys 35 -> 19 MB; XGBRegressor depth 3 1.58x, +4%
PLANES_MAX_LOOKUP_RATIO = 1.5
#: subtree lookups (units) where the comparisons read at least this many bits: then they join
#: the comparisons' parameter set; on 3-bit ranks they only add their sums' noise
#: (XGBClassifier 20x3: 1.11e10 as units sent back per tree, 1.01e10 in planes)
UNIT_MIN_BITS = 4
#: compiler complexity of one PBS by the bits it reads, x 1e7 (concrete-python-facts.md): how
#: leaf lookups of whole subtrees (wider, fewer) weigh against one per node with a leaf child
PBS_COST = {2: 3.1, 3: 4.3, 4: 7.3, 5: 10.0, 6: 24.0, 7: 55.0, 8: 130.0}
#: a comparison derived from its column's rank and m - 1 others (see QuantizedRankComparison)
#: where (m - 1) times the largest sum of squared weights that reads the bits stays under
#: this (in lookup-output variances): measured free up to 126-170 (XGBRegressor's pairs at
#: 14 x 9, its units at 2 x 85), +1% at 4 x 85, a costlier parameter set at 9 x 85
DERIVED_NOISE_BUDGET = 180

"""Lower decision trees and tree ensembles to one QuantizedModule.

Circuit, for all trees of a model at once:

1. ``features``: gather the input column each comparison needs (no PBS);
2. ``splits``: one comparison TLU per distinct (feature, integer threshold) over all trees;
   thresholds that every quantized input satisfies (or none does) are constants, not TLUs;
3. ``paths``: for every internal node ``p`` with a leaf child, the integer
   ``v = 2 * (number of p's ancestors whose split agrees with the path to p) + bit(p)``,
   a matrix product of the split bits (no PBS);
4. ``leaves``: one TLU per such node and output column: ``v = 2*depth(p) + 1`` means the left
   leaf is reached, ``2*depth(p)`` the right one; the table returns that leaf's quantized
   value (centered on its zero point), else 0. A node whose leaves quantize to 0 needs no TLU;
5. ``tree_sum``: sum the leaf TLUs into output columns (no PBS), each tree weighted by its
   leaf scale as an integer multiple of the finest one.

So a prediction costs (distinct splits + nodes with a leaf child) PBS, and the leaf TLUs see
only ``log2(2 * depth + 2)`` bits however wide the inputs are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .quantization import (
    MAX_BIT_WIDTH,
    GraphBuilder,
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedModule,
    UniformQuantizer,
)
from .quantization.bins import ThresholdBinQuantizer
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


def lower_trees(
    trees: list[FlatTree],
    n_outputs: int,
    X: np.ndarray,
    n_bits_inputs: int,
    n_bits_leaves: int,
    quantization: str = "uniform",
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
    circuit = _TreeCircuit(_Splits(quantizer, X.shape[1]), n_outputs)
    leaf_quantizers, multipliers, leaf_scale = _leaf_quantizers(trees, n_bits_leaves)
    for tree, leaf_q, m in zip(trees, leaf_quantizers, multipliers):
        circuit.add_tree(tree, leaf_q, m)
    return circuit.build(X, leaf_scale)


@dataclass(frozen=True)
class _Decision:
    """A node's split on a path: comparison id (None: the constant bit ``const``), and
    whether the path goes left there."""

    split: int | None
    const: int
    went_left: bool


@dataclass
class _LeafSlot:
    """One leaf lookup: node ``path[-1]`` has a leaf child; ``q_left``/``q_right`` are its
    children's quantized values in output ``column`` (0 for an inner child)."""

    path: list[_Decision]
    column: int
    q_left: int
    q_right: int
    multiplier: int

    @property
    def depth(self) -> int:
        return len(self.path) - 1


class _TreeCircuit:
    """Collects the leaf slots of every tree, then builds their one shared circuit."""

    def __init__(self, splits: _Splits, n_outputs: int) -> None:
        self.splits = splits
        self.slots: list[_LeafSlot] = []
        self.bias = np.zeros(n_outputs, dtype=np.int64)
        # exactly one leaf per tree and column is reached: the sum's true range, per column
        self.reach_lo = np.zeros(n_outputs, dtype=np.int64)
        self.reach_hi = np.zeros(n_outputs, dtype=np.int64)

    def add_tree(self, tree: FlatTree, leaf_q: UniformQuantizer, multiplier: int) -> None:
        # a table returns the reached leaf's integer minus the tree's offset (0 elsewhere);
        # the offset goes to the bias: one leaf per tree and column is always reached
        q_values = leaf_q.quant(tree.value) - leaf_q.zero_point
        reached = q_values[tree.left < 0]
        if tree.is_leaf(0):
            self.bias[tree.columns] += multiplier * q_values[0]
            return
        offset = np.array([_table_offset(reached[:, j]) for j in range(reached.shape[1])])
        self.bias[tree.columns] += multiplier * offset
        q_values, reached = q_values - offset, reached - offset
        self.reach_lo[tree.columns] += multiplier * np.minimum(reached.min(axis=0), 0)
        self.reach_hi[tree.columns] += multiplier * np.maximum(reached.max(axis=0), 0)
        stack: list[tuple[int, list[_Decision]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            split, const = self.splits.bit(tree.feature[node], tree.threshold[node], tree.strict)
            left, right = tree.left[node], tree.right[node]
            for j, column in enumerate(tree.columns):
                q_left = q_values[left, j] if tree.is_leaf(left) else 0
                q_right = q_values[right, j] if tree.is_leaf(right) else 0
                if q_left or q_right:
                    own = _Decision(split, const, False)
                    self.slots.append(_LeafSlot([*path, own], column, q_left, q_right, multiplier))
            for child, went_left in ((left, True), (right, False)):
                if not tree.is_leaf(child):
                    stack.append((child, [*path, _Decision(split, const, went_left)]))

    def build(self, X: np.ndarray, leaf_scale: float) -> QuantizedModule:
        features, thresholds = self.splits.thresholds()
        used = sorted({d.split for slot in self.slots for d in slot.path if d.split is not None})
        renumber = {old: new for new, old in enumerate(used)}
        features, thresholds = features[used], thresholds[used]
        slots = self.slots or [_LeafSlot([_Decision(None, 0, False)], 0, 0, 0, 1)]  # all trees are leaves
        if not used:  # keeps the circuit's input encrypted; its bit is never read
            features, thresholds = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
        width = 2 * max(slot.depth for slot in slots) + 2
        paths = np.zeros((len(features), len(slots)), dtype=np.int64)
        offsets = np.zeros(len(slots), dtype=np.int64)
        tables = np.zeros((len(slots), width), dtype=np.int64)
        to_output = np.zeros((len(slots), len(self.bias)), dtype=np.int64)
        for s, slot in enumerate(slots):
            *ancestors, own = slot.path
            # bit(p), plus 2 * agreement of each ancestor: b where the path went left, else 1 - b
            weighted = [(own, 1)] + [(d, 2 if d.went_left else -2) for d in ancestors]
            offsets[s] += 2 * sum(1 for d in ancestors if not d.went_left)
            for decision, weight in weighted:
                if decision.split is None:
                    offsets[s] += weight * decision.const
                else:
                    paths[renumber[decision.split], s] += weight
            tables[s, 2 * slot.depth + 1], tables[s, 2 * slot.depth] = slot.q_left, slot.q_right
            to_output[s, slot.column] = slot.multiplier
        builder = GraphBuilder()
        quantizer = UnaryDigitQuantizer(self.splits.quantizer)
        builder.input(quantizer)
        # comparisons at their own 2-bit width: a second PBS precision (keys 25 -> 37 MB on a
        # depth-5 tree, both under the 60 MB budget) buys 0.71x the complexity of one precision
        builder.add("UnaryComparison", name="splits", quantizer=quantizer, features=features, ks=thresholds)
        builder.add("IntegerMatMul", name="paths", weight=paths, bias=offsets)
        builder.add("TableLookup", name="leaves", tables=tables, output_scale=leaf_scale)
        builder.add(
            "IntegerMatMul",
            name="tree_sum",
            weight=to_output,
            bias=self.bias,
            bounds=(self.reach_lo, self.reach_hi),
            overflow_hint="lower n_bits['op_leaves'] or use fewer trees",
        )
        return builder.build(X)


def _table_offset(leaves: np.ndarray) -> int:
    """What a tree subtracts from its leaf integers: the most common leaf (its tables hold 0
    there, and a pair of such leaves needs no TLU), else the middle (narrowest tables)."""
    values, counts = np.unique(leaves, return_counts=True)
    if counts.max() > 1:
        return int(values[np.argmax(counts)])
    return int((leaves.min() + leaves.max() + 1) // 2)


def _leaf_quantizers(trees: list[FlatTree], n_bits: int) -> tuple[list[UniformQuantizer], list[int], float]:
    """One leaf quantizer per tree, each scale an integer multiple of the finest.

    Boosted trees shrink as they go: a scale shared by all trees would leave the late ones a
    level or two. Here every tree keeps ~``n_bits`` levels; the sum multiplies each tree's
    integers by its multiple in the (PBS-free) ``tree_sum`` product.
    """
    options = QuantizationOptions(n_bits)
    ranges = [(t.value[t.left < 0].min(), t.value[t.left < 0].max()) for t in trees]
    ideal = [
        UniformQuantizer.compute_quantization_parameters(options, MinMaxQuantizationStats(a, b))[0] for a, b in ranges
    ]
    # the finest scale, but not so fine that the trees' multiples overflow a 16-bit sum;
    # with more trees than that budget holds even at multiple 1, tree_sum reports it
    levels, budget = 2**n_bits - 1, 2 ** (MAX_BIT_WIDTH - 1) - 1
    room = budget - len(trees) * levels
    finest = float(min(ideal))
    if room > 0:
        finest = max(finest, float(sum(ideal)) * levels / room)
    quantizers, multipliers = [], []
    for (a, b), scale in zip(ranges, ideal):
        m = max(1, int(np.ceil(float(scale) / finest - 1e-9)))
        stats = MinMaxQuantizationStats(min(a, 0.0) if a == b else a, b)
        zero_point = int(np.rint(-stats.rmin / (m * finest)))
        quantizers.append(UniformQuantizer(options, scale=m * finest, zero_point=zero_point))
        multipliers.append(m)
    return quantizers, multipliers, finest

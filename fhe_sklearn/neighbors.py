"""k-nearest neighbours in FHE: the training points stay in the clear on the server, the query
is encrypted.

Circuit, for one encrypted query ``u`` (``op_inputs`` bits per feature, one scale for every
feature so that integer distances are the float metric's, up to that scale):

1. ``keys``: the distance of ``u`` to each training point ``t_i``, exact integers.
   Euclidean (``p=2``): the squared distance ``||u||² - 2 u·t_i + ||t_i||²``, one lookup per
   feature for ``||u||²`` on the query's few bits, the rest a clear matrix product. Manhattan
   (``p=1``): the query's thermometer bits ``[u_f <= v]`` (one comparison per feature and grid
   level), then ``|u_f - t_if|`` is linear in them: a clear matrix product.
2. ``nearest`` (:class:`QuantizedKSmallestMask`): each distance is cut to an ``op_distances``-bit
   window that holds the neighbours that count (the bits of the wide distance are extracted by
   the cheapest PBS; no lookup reads the distance itself), the k-th smallest is found by ``k``
   bubble passes of compare-exchanges (one PBS each), and every point whose key is at most
   that one gets a 1: one PBS per point. Every lookup of the selection reads
   ``op_distances + 1`` bits.
3. ``votes``: the mask times a clear matrix of per-point values. Classifier: the one-hot
   training labels, giving the number of neighbours of each class; the client decrypts those
   counts and takes the argmax (``predict_proba`` is the counts normalized, as scikit-learn's
   for uniform weights). Regressor: each target quantized (``op_targets`` bits, centred on its
   range's midpoint) plus a column of ones, giving the sum of the neighbours' targets and their
   number; the client divides in the clear. The client learns the class counts (or target
   sums) among the neighbours and nothing else of the training points.

Points tied with the k-th nearest (in the window's resolution) all vote, so a vote may count
more than k neighbours (a regressor then averages over all of them: it divides by the count,
not by k). Cost grows as ``(k + 1) * n_train`` PBS of ``op_distances + 1`` bits, plus the bits
of each distance; see ``benchmarks/neighbors.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from concrete import fhe
from sklearn import neighbors as sk_neighbors
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from .base import FHEClassifierMixin, FHERegressorMixin
from .quantization import GraphBuilder, QuantizationOptions, QuantizedModule, UniformQuantizer
from .quantization.base_op import QuantizedOp, TensorSpec, hint_range
from .quantization.norm import SquaredNormEncoder, code_centre
from .quantization.ops import _interval_matmul
from .quantization.post_training import resolve_n_bits
from .quantization.quantizers import MAX_BIT_WIDTH, check_n_bits, integer_bit_width
from .quantization.registry import register_op

#: default bits of each query feature and of the windowed distance keys. breast_cancer, k=5:
#: agreement with scikit-learn 0.939 / 0.965 / 0.982 on 50 / 100 / 200 training points; 5-bit
#: keys agree a little more (0.965 on 50) for twice the complexity (6-bit lookups need 8192-
#: coefficient keys at 1e-7, 5-bit ones 4096)
DEFAULT_INPUT_BITS = 3
DEFAULT_DISTANCE_BITS = 4
#: a k-NN circuit's error budget when the user sets none. A wrong lookup here moves one
#: distance key by a step or flips one point's mask bit: at worst one vote, next to the ~5% of
#: queries the quantized distances already decide differently from scikit-learn. At 1e-3 the
#: 5-bit selection lookups fit 2048-coefficient keys instead of 4096 (breast_cancer, 50 / 200
#: points, benchmarks/neighbors.py: keys 97 -> 68 MB / 144 -> 89 MB, complexity -33% / -42%)
KNN_GLOBAL_P_ERROR = 1e-3
#: default bits of each quantized regression target: a level is 1/15 of the target range, and
#: the rounding errors of k targets average out (diabetes: test R² 0.249 vs 0.259 at 5 bits).
#: Ties can select every training point, so the sums' width grows with n_train * 2**bits and
#: the mask lookups output at that width: 7 bits cost 1.8x the complexity of 4 on 100 points
DEFAULT_TARGET_BITS = 4
#: the input grid spans each feature's [GRID_QUANTILE, 1 - GRID_QUANTILE] quantiles
GRID_QUANTILE = 0.05
_METRICS = {"euclidean": 2, "l2": 2, "manhattan": 1, "l1": 1, "cityblock": 1}


@register_op
class QuantizedSquaredDistances(QuantizedOp):
    """Squared Euclidean distance of the query ``u`` to each clear point ``t_i`` on its grid:
    ``||u||² - 2 u·t_i + ||t_i||²``, exact integers, without a lookup.

    The input is a :class:`~fhe_sklearn.quantization.norm.SquaredNormEncoder`'s: the query's
    codes and, in its last column, ``||u||²`` computed by the client (in the circuit it cost one
    lookup per feature on ciphertexts as wide as the distances, and their own key partition).
    The rest is a clear matrix product. True distances (not ``||t_i||² - 2 u·t_i``, which ranks
    the same) start at 0 whatever the query: the selection can then drop the far ones (see
    :class:`QuantizedKSmallestMask`).

    Parameters
    ----------
    name : str
    points : array of int, shape (n_points, n_features)
        The points' codes on the query's grid, minus the middle of the codes' range (as the
        query's, see :func:`~fhe_sklearn.quantization.norm.code_centre`).
    code_range : (int, int)
        The range of the query's codes (the norm column has its own).
    """

    op_type = "SquaredDistances"

    def __init__(
        self, name: str, points: Any, code_range: tuple[int, int] = (0, 7), *, inputs: list[str] | None = None
    ) -> None:
        super().__init__(name, inputs=inputs)
        self.points = np.asarray(points, dtype=np.int64)
        self.code_range = (int(code_range[0]), int(code_range[1]))

    def float_forward(self, x: np.ndarray) -> np.ndarray:
        s = self.input_specs[0]
        u = np.rint(x / s.scale) + s.zero_point - code_centre(*self.code_range)
        return ((u[:, None, :] - self.points[None]) ** 2).sum(axis=2) * float(np.max(s.scale)) ** 2

    def _calibrate(self, float_output: np.ndarray, x: np.ndarray) -> TensorSpec:
        s = self.input_specs[0]
        if len(np.unique(s.scale)) != 1:
            raise ValueError(f"SquaredDistances '{self.name}' needs one input scale, got {len(np.unique(s.scale))}")
        n_features = self.points.shape[1]
        self.input_offset = np.full(n_features, code_centre(*self.code_range))
        lo = np.full(n_features, self.code_range[0]) - self.input_offset
        hi = np.full(n_features, self.code_range[1]) - self.input_offset
        self.centered_range = (lo, hi)
        squares = np.where((lo <= 0) & (hi >= 0), 0, np.minimum(lo**2, hi**2)), np.maximum(lo**2, hi**2)
        self.norm_range = (int(np.sum(squares[0])), int(np.sum(squares[1])))
        worst = np.maximum((lo - self.points) ** 2, (hi - self.points) ** 2).sum(axis=1)
        self.cross_range = _interval_matmul(lo, hi, -2 * self.points.T)
        return TensorSpec(float(np.max(s.scale)) ** 2, 0, np.zeros(len(self.points), dtype=np.int64), worst)

    def q_impl(self, x: Any) -> Any:
        n_features = self.points.shape[1]
        u = hint_range(x[:, :n_features] - self.input_offset, *self.centered_range)
        norm = hint_range(x[:, n_features:], *self.norm_range)
        cross = hint_range(u @ (-2 * self.points.T), *self.cross_range)
        return hint_range(cross + norm + np.sum(self.points**2, axis=1), 0, int(np.max(self.output_spec.hi)))


@register_op
class QuantizedKSmallestMask(QuantizedOp):
    """1 at each position whose key is at most the ``k``-th smallest of its row, else 0.

    Keys are non-negative (distances). With ``n_bits`` set, each key first becomes
    ``min(factor * key >> lsbs, 2**n_bits - 1)``: its bits are extracted (``fhe.bits``, one
    cheap PBS of the lowest precision per bit), the window's ``n_bits`` are kept and the bits
    above it saturate the key (a lookup on those few bits, then one of ``n_bits + 1`` bits).
    The window, ``[0, 2**(lsbs + n_bits))`` of the keys scaled by a small integer ``factor``
    (1-8, the one that fills the window best), is set at calibration to hold the
    ``k + 1``-th smallest key of every calibration row (the
    training points, whose own key is 0): the neighbours that count fall inside it, and keys
    beyond it tie at the top (a query farther than that from all but k - 1 points gets votes
    from every point outside the window). ``n_bits=None`` keeps exact keys.

    The selection is then ``k`` bubble passes over the keys (``k * n - k(k+1)/2``
    compare-exchanges, each one PBS on a key difference: ``min = b + min(a - b, 0)``,
    ``max = a - min(a - b, 0)``), and one comparison per position with the ``k``-th smallest:
    every lookup of the selection reads ``n_bits + 1`` bits.

    Parameters
    ----------
    name : str
    k : int
        How many smallest keys to select (ties with the k-th are selected too).
    n_bits : int, optional
        Bits of each key in the selection.
    """

    op_type = "KSmallestMask"

    def __init__(self, name: str, k: int, n_bits: int | None = None, *, inputs: list[str] | None = None) -> None:
        super().__init__(name, inputs=inputs)
        self.k = int(k)
        self.n_bits = n_bits

    def float_forward(self, keys: np.ndarray) -> np.ndarray:
        kth = np.sort(keys, axis=1)[:, self.k - 1 : self.k]
        return (keys <= kth).astype(np.float64)

    def _calibrate(self, float_output: np.ndarray, keys: np.ndarray) -> TensorSpec:
        spec = self.input_specs[0]
        n = keys.shape[1]
        if not 1 <= self.k <= n:
            raise ValueError(f"KSmallestMask '{self.name}': k={self.k} must be in [1, {n}] (the number of keys)")
        if int(np.min(spec.lo)) < 0:
            raise ValueError(f"KSmallestMask '{self.name}' selects among non-negative keys (distances)")
        hi = int(np.max(spec.hi))
        self.width, self.factor = integer_bit_width(0, hi), 1
        self.lsbs, self.span = 0, hi
        self.windowed = self.n_bits is not None and self.width > self.n_bits
        if self.windowed:
            integers = np.rint(keys / np.asarray(spec.scale) + np.asarray(spec.zero_point)).astype(np.int64)
            reach = max(int(np.max(np.sort(integers, axis=1)[:, min(self.k, n - 1)])), 1)
            # a window is a power of two: scaling the keys by a small factor first makes the
            # reach fill most of it (up to twice the resolution), for a few more bits to extract
            factors = [1] + [f for f in range(2, 9) if integer_bit_width(0, hi * f) <= MAX_BIT_WIDTH]
            self.factor = max(factors, key=lambda f: reach * f / 2 ** integer_bit_width(0, reach * f))
            self.width = integer_bit_width(0, hi * self.factor)
            reach_bits = integer_bit_width(0, reach * self.factor)
            self.lsbs = min(max(0, reach_bits - self.n_bits), self.width - self.n_bits)
            self.span = 2**self.n_bits - 1
        # comparisons see a - b + span in [0, 2 span]
        if integer_bit_width(0, 2 * self.span) > MAX_BIT_WIDTH:
            raise ValueError(
                f"KSmallestMask '{self.name}' compares {integer_bit_width(0, 2 * self.span)}-bit key "
                f"differences, over the {MAX_BIT_WIDTH}-bit FHE limit: lower n_bits['op_distances']"
            )
        return TensorSpec(1.0, 0, np.zeros(n, dtype=np.int64), np.ones(n, dtype=np.int64))

    def q_impl(self, keys: Any) -> Any:
        # every value of the selection is non-negative: concrete 2.10 simulated rounding and
        # chains of lookups on signed values differently from numpy (measured); unsigned exactly
        span = self.span
        keys = hint_range(self._windowed(keys), 0, span)
        n = keys.shape[1]
        values = [keys[:, i : i + 1] for i in range(n)]
        # k bubble passes, pass ``rank`` moving the next smallest to position ``rank``: fewer
        # compare-exchanges than a pruned Batcher network at these sizes (benchmarks/neighbors.py)
        # and, measured on 50 points, smaller keys than its vectorized layers (204 vs 169 MB)
        for rank in range(self.k):
            for i in range(n - 1, rank, -1):
                a, b = values[i - 1], values[i]
                # min(a, b) = b + min(a - b, 0), max(a, b) = a - min(a - b, 0): one lookup on
                # a - b + span (in [0, 2 span]), and no sum outgrows the hinted widths
                shifted = hint_range(a - b + span, 0, 2 * span)
                smaller = hint_range(fhe.univariate(lambda v, s=span: np.minimum(v - s, 0))(shifted), -span, 0)
                if rank < self.k - 1:  # the last pass needs only the minimum
                    values[i] = hint_range(a - smaller, 0, span)
                values[i - 1] = hint_range(b + smaller, 0, span)
        shifted = hint_range(keys - values[self.k - 1] + span, 0, 2 * span)
        return fhe.univariate(lambda v, s=span: (v <= s).astype(np.int64))(shifted)

    def _windowed(self, keys: Any) -> Any:
        """``min(keys >> lsbs, span)`` from the keys' bits: no lookup reads the wide keys."""
        if not self.windowed:
            return keys
        top = self.lsbs + self.n_bits
        # bit by bit: concrete 2.10 failed to compile some slices of a hinted value (bits[2:6] of
        # a 9-bit one, measured), never single bits
        bits = fhe.bits(hint_range(keys * self.factor, 0, 2**self.width - 1))
        window = sum(bits[i] * 2 ** (i - self.lsbs) for i in range(self.lsbs, top))
        if top >= self.width:
            return window
        # the count of set bits above the window (a few bits) says whether the key is beyond it
        beyond = fhe.univariate(lambda v: (v > 0).astype(np.int64))(sum(bits[i] for i in range(top, self.width)))
        return fhe.univariate(lambda v, s=self.span: np.minimum(v, s))(window + (self.span + 1) * beyond)


def _metric_p(model: BaseEstimator) -> int:
    """1 or 2, or a clear error for a metric the circuit does not compute."""
    if model.metric in _METRICS and model.metric_params is None:
        return _METRICS[model.metric]
    if model.metric == "minkowski" and model.p in (1, 2) and model.metric_params is None:
        return int(model.p)
    raise ValueError(
        f"{type(model).__name__}: FHE supports metric='minkowski' with p=1 or p=2 (or 'euclidean', 'manhattan'), "
        f"got metric={model.metric!r}, p={model.p!r}, metric_params={model.metric_params!r}"
    )


def common_scale_quantizer(X: np.ndarray, n_bits: int) -> UniformQuantizer:
    """One scale for every feature (distances weigh features as the float metric does), a
    zero point per feature centring it on the grid.

    The grid spans the widest 5th–95th percentile range of the training features: a few
    outliers would otherwise take most of the levels; values beyond are clipped (they are far
    from most points anyway). The client learns these percentiles.
    """
    lo, hi = np.quantile(X, GRID_QUANTILE, axis=0), np.quantile(X, 1 - GRID_QUANTILE, axis=0)
    levels = 2**n_bits - 1
    span = float(np.max(hi - lo))
    scale = (span if span > 0 else 1.0) / levels  # constant features: any scale
    zero_point = np.rint(levels / 2 - (lo + hi) / (2 * scale)).astype(np.int64)
    return UniformQuantizer(QuantizationOptions(n_bits), scale=scale, zero_point=zero_point)


def lower_neighbors(
    X_train: np.ndarray,
    values: np.ndarray,
    k: int,
    p: int,
    n_bits_inputs: int,
    n_bits_distances: int,
    value_scale: Any = None,
) -> QuantizedModule:
    """The module of a uniform-weight k-NN: the integer ``values`` (n_train, n_outputs) of the
    selected neighbours summed (one-hot classes for a classifier), read with ``value_scale``
    (one per output column; None: 1)."""
    if k > len(X_train):
        raise ValueError(f"n_neighbors={k} needs at least as many training points (n_samples = {len(X_train)})")
    quantizer = common_scale_quantizer(X_train, n_bits_inputs)
    codes = quantizer.quant(X_train)  # the training points on the query's grid
    hint = "standardize the features (StandardScaler), lower n_bits['op_inputs'] or use fewer features"
    builder = GraphBuilder()
    if p == 2:
        # the client appends ||u||² to its codes: no lookup before the selection
        try:
            builder.input(SquaredNormEncoder(quantizer, X_train.shape[1]))
        except ValueError as err:
            raise ValueError(f"{err}: {hint}") from None
        code_range = (quantizer.options.qmin, quantizer.options.qmax)
        points = codes - code_centre(*code_range)
        builder.add("SquaredDistances", name="keys", points=points, code_range=code_range, overflow_hint=hint)
    else:
        builder.input(quantizer)
        # |u - t| = #{v : min(u, t) <= v < max(u, t)} = Σ_v [u <= v] (2[t > v] - 1) + #{v : t <= v}
        n_features = X_train.shape[1]
        levels = np.arange(quantizer.options.qmin, quantizer.options.qmax) - quantizer.zero_point[:, None]
        features = np.repeat(np.arange(n_features), levels.shape[1])
        builder.add("Gather", name="features", indices=features)
        thresholds = quantizer.scale * (levels.ravel() + 0.5)  # halfway between grid points
        builder.add("LessOrEqual", name="thermometer", threshold=thresholds)
        q_train = codes - quantizer.zero_point
        above = (q_train[:, features] > levels.ravel()).astype(np.int64)  # [t > v], (n_train, n_bits)
        weight, bias = (2 * above - 1).T, np.sum(1 - above, axis=1)
        builder.add("IntegerMatMul", name="keys", weight=weight, bias=bias, overflow_hint=hint)
    builder.add("KSmallestMask", name="nearest", k=k, n_bits=n_bits_distances)
    builder.add(
        "IntegerMatMul",
        name="votes",
        weight=values.astype(np.int64),
        output_scale=value_scale,
        # ties can select every point: the sum's range is over the whole training set
        overflow_hint="lower n_bits['op_targets'] (regressor) or use fewer training points",
    )
    return builder.build(X_train, default_global_p_error=KNN_GLOBAL_P_ERROR)


def quantize_targets(y: np.ndarray, n_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regression targets → integers centred on each target's range midpoint.

    Parameters
    ----------
    y : ndarray of shape (n_samples, n_targets)
    n_bits : int
        Levels per target: ``2**n_bits - 1`` steps span its range.

    Returns
    -------
    integers : ndarray of int64, shape (n_samples, n_targets)
        Within half a step of ``(y - offset) / scale``.
    scale, offset : ndarray of shape (n_targets,)
        ``y ≈ offset + scale * integers``; offset is the range's midpoint.
    """
    lo, hi = y.min(axis=0), y.max(axis=0)
    offset = (lo + hi) / 2
    spread = hi - lo
    scale = np.where(spread > 0, spread, 1.0) / (2**n_bits - 1)  # constant targets: any scale
    return np.rint((y - offset) / scale).astype(np.int64), scale, offset


class _KNeighborsFHE:
    """What the k-NN classifier and regressor share: parameters, their checks and the lowering
    of the fitted float model; a subclass gives the per-point values the neighbours sum."""

    _n_bits_keys: ClassVar[tuple[str, ...]] = ("op_inputs", "op_distances")
    #: widths an int ``n_bits`` (the input bits) leaves at their defaults
    _default_bits: ClassVar[dict[str, int]] = {"op_distances": DEFAULT_DISTANCE_BITS}
    _default_n_bits: ClassVar[int] = DEFAULT_INPUT_BITS
    _agreement_advice: ClassVar[str] = (
        "Standardize the features (StandardScaler) or give the query and the distances more bits "
        "(n_bits={'op_inputs': ..., 'op_distances': ...})."
    )

    def _bits(self) -> dict[str, int]:
        if isinstance(self.n_bits, dict):
            return resolve_n_bits(self.n_bits, self._n_bits_keys)
        return {"op_inputs": check_n_bits(self.n_bits), **self._default_bits}

    def _check_weights(self, weights: Any) -> None:
        if weights != "uniform":
            raise ValueError(f"{type(self).__name__}: FHE supports weights='uniform' only, got {weights!r}")

    def _check_fhe_params(self) -> None:
        super()._check_fhe_params()
        self._check_weights(self.weights)
        _metric_p(self)

    def _build_quantized_module(self, X: np.ndarray) -> QuantizedModule:
        model = self.sklearn_model_
        self._check_weights(model.weights)
        bits = self._bits()
        values, scale = self._neighbour_values(model, bits)
        return lower_neighbors(
            np.asarray(model._fit_X, dtype=np.float64),
            values,
            model.n_neighbors,
            _metric_p(model),
            bits["op_inputs"],
            bits["op_distances"],
            scale,
        )

    def _neighbour_values(self, model: BaseEstimator, bits: dict[str, int]) -> tuple[np.ndarray, Any]:
        """Integer values (n_train, n_outputs) the selected neighbours sum, and their scales."""
        raise NotImplementedError


class KNeighborsClassifier(_KNeighborsFHE, FHEClassifierMixin, ClassifierMixin, BaseEstimator):
    """k-nearest neighbours classifier predicting in FHE.

    Parameters: scikit-learn's (``weights="uniform"``; ``metric="minkowski"`` with ``p`` 1 or
    2), plus ``n_bits``: an int (bits per query feature; distance keys get
    ``DEFAULT_DISTANCE_BITS``) or ``{"op_inputs": a, "op_distances": b}``. Default 3 input bits
    and 4 distance bits.

    The training set is part of the server's circuit; the client sends the encrypted query and
    decrypts the number of neighbours per class.
    """

    _sklearn_class = sk_neighbors.KNeighborsClassifier
    _multi_output = False

    def _neighbour_values(self, model: BaseEstimator, bits: dict[str, int]) -> tuple[np.ndarray, Any]:
        encoded = np.asarray(model._y)
        if encoded.ndim != 1:
            raise ValueError("KNeighborsClassifier: multi-output targets are not supported in FHE")
        return np.eye(len(model.classes_), dtype=np.int64)[encoded], None

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        """Neighbour counts per class → fractions (ties with the k-th neighbour included)."""
        total = y.sum(axis=1, keepdims=True)
        return np.divide(y, total, out=np.full_like(y, 1 / y.shape[1]), where=total > 0)


class KNeighborsRegressor(_KNeighborsFHE, FHERegressorMixin, RegressorMixin, BaseEstimator):
    """k-nearest neighbours regressor predicting in FHE: the mean of the neighbours' targets.

    Parameters: scikit-learn's (``weights="uniform"``; ``metric="minkowski"`` with ``p`` 1 or
    2), plus ``n_bits``: an int (bits per query feature; distance keys get
    ``DEFAULT_DISTANCE_BITS``, targets ``DEFAULT_TARGET_BITS``) or
    ``{"op_inputs": a, "op_distances": b, "op_targets": c}``. Default 3 input, 4 distance and
    4 target bits.

    The circuit sums the selected neighbours' quantized targets and counts them (no PBS beyond
    the classifier's selection); the client divides the sums by the count and adds back
    ``target_offset_`` in the clear. Multi-output targets are supported.

    Attributes
    ----------
    target_offset_ : ndarray of shape (n_targets,)
        Midpoint of each target's training range, which the quantized targets are centred on.
    """

    _sklearn_class = sk_neighbors.KNeighborsRegressor
    _n_bits_keys: ClassVar[tuple[str, ...]] = ("op_inputs", "op_distances", "op_targets")
    _default_bits: ClassVar[dict[str, int]] = {
        "op_distances": DEFAULT_DISTANCE_BITS,
        "op_targets": DEFAULT_TARGET_BITS,
    }
    _client_attributes: ClassVar[dict[str, type]] = {"target_offset_": np.ndarray}
    _agreement_advice: ClassVar[str] = (
        "A k-NN regressor follows which neighbours the coarse grid selects: finer input and distance "
        "grids (e.g. n_bits={'op_inputs': 5, 'op_distances': 7, 'op_targets': 4}) select scikit-learn's "
        "more often, at a higher cost; compare both models' test scores, which are often as close."
    )

    def _neighbour_values(self, model: BaseEstimator, bits: dict[str, int]) -> tuple[np.ndarray, Any]:
        y = np.asarray(model._y, dtype=np.float64)
        targets, scale, self.target_offset_ = quantize_targets(y.reshape(len(y), -1), bits["op_targets"])
        # the last column counts the neighbours: ties with the k-th may make them more than k
        ones = np.ones((len(targets), 1), dtype=np.int64)
        return np.hstack([targets, ones]), np.append(scale, 1.0)

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        """Sums of the neighbours' targets and their count → their mean."""
        return y[:, :-1] / y[:, -1:] + self.target_offset_


__all__ = ["KNeighborsClassifier", "KNeighborsRegressor", "QuantizedKSmallestMask", "lower_neighbors"]

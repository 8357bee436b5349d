"""Linear models in FHE: one encrypted × clear matrix product, no programmable bootstrap.

Post-training quantization: inputs are quantized per feature on the client; each feature's
scale is folded into its weight, and weights are quantized per output with a scale chosen
so that the worst-case integer accumulator fits 16 bits (accumulator-aware quantization).
When ``op_weights`` bits would overflow it, the weight grid is coarsened instead of
rounding the accumulator in FHE, which would cost PBS. The score leaves the circuit
as the accumulator; sigmoid/softmax, link functions and argmax run in the clear.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy.special import expit, softmax
from sklearn import linear_model as sk_linear
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from .base import FHEClassifierMixin, FHEEstimatorMixin, FHERegressorMixin
from .exceptions import InputRangeWarning, warn_user
from .quantization import (
    MAX_BIT_WIDTH,
    GraphBuilder,
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedModule,
    UniformQuantizer,
)
from .quantization.post_training import resolve_n_bits
from .training.sgd import TRAINING_PARAMS, EncryptedSGDMixin


class _LinearLowering(FHEEstimatorMixin):
    """Lower ``coef_``/``intercept_`` to a single QuantizedGemm.

    ``input_range`` (constructor parameter) sets the float range each feature's integer grid
    spans: ``"minmax"`` (default) the calibration data's extremes; a pair of percentiles
    ``(low, high)`` in [0, 100], as ``RobustScaler``'s ``quantile_range``, so the client does
    not learn the exact training extremes; or an array of shape (2, n_features) of explicit
    per-feature ``[low, high]`` bounds. Inputs outside the range are clipped to it, with an
    :class:`~fhe_sklearn.exceptions.InputRangeWarning`.
    """

    _extra_params: ClassVar[dict[str, Any]] = {"input_range": "minmax"}
    _agreement_advice: ClassVar[str] = (
        "Give it more bits (n_bits, or more op_weights bits), standardize the features (e.g. a "
        "StandardScaler in a Pipeline), or widen input_range if it clips the data."
    )

    def _check_fhe_params(self) -> None:
        super()._check_fhe_params()
        _input_range_kind(self.input_range)

    def _input_bounds(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-feature float range of the input grid, from ``input_range`` and ``X``."""
        kind, value = _input_range_kind(self.input_range)
        if kind == "minmax":
            return X.min(axis=0), X.max(axis=0)
        if kind == "percentile":
            low, high = np.percentile(X, value, axis=0)
            return low, high
        if value.shape[1] != X.shape[1]:
            raise ValueError(f"input_range has bounds for {value.shape[1]} features, X has {X.shape[1]}")
        return value[0], value[1]

    def _build_quantized_module(self, X: np.ndarray) -> QuantizedModule:
        coef = np.asarray(self.sklearn_model.coef_, dtype=np.float64)
        weight = coef.reshape(-1, 1) if coef.ndim == 1 else coef.T
        bias = np.broadcast_to(np.asarray(self.sklearn_model.intercept_, dtype=np.float64).ravel(), weight.shape[1:])
        bits = resolve_n_bits(self.n_bits)
        low, high = self._input_bounds(X)
        builder = GraphBuilder()
        builder.input(UniformQuantizer(QuantizationOptions(bits["op_inputs"]), MinMaxQuantizationStats(low, high)))
        builder.add(
            "Gemm",
            name="linear",
            weight=weight,
            bias=bias,
            n_bits=bits["op_weights"],
            max_accumulator_bits=MAX_BIT_WIDTH,
        )
        return builder.build(X)

    def quantize_input(self, X: Any) -> np.ndarray:
        """Float rows → integer rows (client side, in the clear); values outside the
        quantization range are clipped to it, with an ``InputRangeWarning``."""
        check_is_fitted(self, "quantized_module_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        _warn_if_clipped(self, X)
        return self.quantized_module_.quantize_input(X)


def _input_range_kind(input_range: Any) -> tuple[str, Any]:
    """Validate ``input_range``: ("minmax", None), ("percentile", (lo, hi)) or ("bounds", array)."""
    if isinstance(input_range, str):
        if input_range == "minmax":
            return "minmax", None
    else:
        try:
            value = np.asarray(input_range, dtype=np.float64)
        except (TypeError, ValueError):
            value = None
        if value is not None and value.shape == (2,):
            if not (np.all(np.isfinite(value)) and 0 <= value[0] < value[1] <= 100):
                raise ValueError(f"input_range percentiles must satisfy 0 <= low < high <= 100, got {input_range!r}")
            return "percentile", value
        if value is not None and value.ndim == 2 and value.shape[0] == 2:
            if not np.all(np.isfinite(value)) or np.any(value[0] >= value[1]):
                raise ValueError("input_range bounds must be finite with low < high for every feature")
            return "bounds", value
    raise ValueError(
        "input_range must be 'minmax', a pair of percentiles (low, high), or an array of shape "
        f"(2, n_features) of per-feature bounds; got {input_range!r}"
    )


def _warn_if_clipped(model: FHEEstimatorMixin, X: np.ndarray) -> None:
    """One InputRangeWarning for all the values of ``X`` the input quantizer clips."""
    quantizer = model.quantized_module_.input_quantizer
    codes = np.rint(X / quantizer.scale) + quantizer.zero_point
    below = np.count_nonzero(codes < quantizer.options.qmin, axis=0)
    above = np.count_nonzero(codes > quantizer.options.qmax, axis=0)
    total = int(below.sum() + above.sum())
    if total == 0:
        return
    names = getattr(model, "feature_names_in_", [f"feature {j}" for j in range(X.shape[1])])
    low = quantizer.dequant(np.full(X.shape[1], quantizer.options.qmin))
    high = quantizer.dequant(np.full(X.shape[1], quantizer.options.qmax))
    features = np.flatnonzero(below + above)
    details = [f"{names[j]}: {below[j] + above[j]} outside [{low[j]:.4g}, {high[j]:.4g}]" for j in features[:5]]
    more = f", and {len(features) - 5} more features" if len(features) > 5 else ""
    warn_user(
        f"{type(model).__name__}: {total} input value(s) lie outside the range the model was quantized on and were "
        f"clipped to it ({'; '.join(details)}{more}); the FHE prediction of those rows differs from the float "
        "model's. Set input_range to cover them (per-feature bounds), or fit on data that does.",
        InputRangeWarning,
    )


class _LinearRegressor(_LinearLowering, FHERegressorMixin, RegressorMixin, BaseEstimator):
    pass


class _LinearClassifier(_LinearLowering, FHEClassifierMixin, ClassifierMixin, BaseEstimator):
    def decision_function(
        self, X: Any, fhe: str = "disable", n_jobs: int | None = 1, backend: str | None = None
    ) -> np.ndarray:
        """Class scores of the quantized model (raveled for binary problems), as in sklearn."""
        scores = self._inference(X, fhe, n_jobs, backend)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def _class_indices(self, scores: np.ndarray) -> np.ndarray:
        # sign / argmax of the scores: also for models without probabilities (LinearSVC)
        return (scores[:, 0] > 0).astype(int) if scores.shape[1] == 1 else np.argmax(scores, axis=1)

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        if y.shape[1] == 1:
            p = expit(y[:, 0])
            return np.column_stack([1 - p, p])
        return softmax(y, axis=1)


class LinearRegression(_LinearRegressor):
    """Ordinary least squares predicting in FHE. Parameters: sklearn's, plus ``n_bits``
    (int, or ``{"op_inputs": a, "op_weights": b}``)."""

    _sklearn_class = sk_linear.LinearRegression


class Ridge(_LinearRegressor):
    """Ridge regression predicting in FHE."""

    _sklearn_class = sk_linear.Ridge


class Lasso(_LinearRegressor):
    """Lasso regression predicting in FHE."""

    _sklearn_class = sk_linear.Lasso


class ElasticNet(_LinearRegressor):
    """Elastic-net regression predicting in FHE."""

    _sklearn_class = sk_linear.ElasticNet


class SGDRegressor(EncryptedSGDMixin, _LinearRegressor):
    """Linear model fitted by SGD, predicting in FHE; with ``fit_encrypted=True``, fitted by
    SGD on encrypted data (squared loss), see :class:`~fhe_sklearn.training.sgd.EncryptedSGDMixin`."""

    _sklearn_class = sk_linear.SGDRegressor
    _extra_params: ClassVar[dict[str, Any]] = {**_LinearLowering._extra_params, **TRAINING_PARAMS}
    _task = "regression"
    _encrypted_loss = "squared_error"
    _default_learning_rate = 0.1


class LogisticRegression(_LinearClassifier):
    """Logistic regression (binary and multinomial) predicting in FHE: 0 PBS; sigmoid or
    softmax and argmax in the clear."""

    _sklearn_class = sk_linear.LogisticRegression


class SGDClassifier(EncryptedSGDMixin, _LinearClassifier):
    """Linear classifier fitted by SGD, predicting in FHE. ``predict_proba`` exists for
    ``loss="log_loss"`` and ``"modified_huber"``, as in scikit-learn.

    With ``fit_encrypted=True`` it is fitted by SGD on encrypted data (log-loss, one-vs-rest
    for several classes), see :class:`~fhe_sklearn.training.sgd.EncryptedSGDMixin`.

    The default ``loss`` is ``"log_loss"`` (logistic regression by SGD, with
    ``predict_proba``), as in Concrete ML; scikit-learn's default is ``"hinge"`` (a linear
    SVM, no probabilities): pass ``loss="hinge"`` for it.
    """

    _sklearn_class = sk_linear.SGDClassifier
    _extra_params: ClassVar[dict[str, Any]] = {**_LinearLowering._extra_params, **TRAINING_PARAMS}
    _task = "classification"
    _encrypted_loss = "log_loss"
    _default_learning_rate = 0.5
    _default_overrides: ClassVar[dict[str, Any]] = {"loss": "log_loss"}
    _client_attributes: ClassVar[dict[str, type]] = {"loss": str}

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        """Class probabilities from the scores (sigmoid for ``log_loss``, clipped linear for
        ``modified_huber``; one-vs-rest normalized for several classes)."""
        if self.loss == "log_loss":
            p = expit(y)
        else:  # modified_huber
            p = (np.clip(y, -1, 1) + 1) / 2
        if y.shape[1] == 1:
            return np.column_stack([1 - p[:, 0], p[:, 0]])
        # one-vs-rest: normalize, and spread evenly where every class says 0
        total = p.sum(axis=1, keepdims=True)
        return np.divide(p, total, out=np.full_like(p, 1 / p.shape[1]), where=total > 0)


__all__ = [
    "ElasticNet",
    "Lasso",
    "LinearRegression",
    "LogisticRegression",
    "Ridge",
    "SGDClassifier",
    "SGDRegressor",
]

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

from .base import FHEClassifierMixin, FHEEstimatorMixin, FHERegressorMixin
from .quantization import MAX_BIT_WIDTH, GraphBuilder, QuantizedModule
from .quantization.post_training import input_quantizer, resolve_n_bits


class _LinearLowering(FHEEstimatorMixin):
    """Lower ``coef_``/``intercept_`` to a single QuantizedGemm."""

    def _build_quantized_module(self, X: np.ndarray) -> QuantizedModule:
        coef = np.asarray(self.sklearn_model.coef_, dtype=np.float64)
        weight = coef.reshape(-1, 1) if coef.ndim == 1 else coef.T
        bias = np.broadcast_to(np.asarray(self.sklearn_model.intercept_, dtype=np.float64).ravel(), weight.shape[1:])
        bits = resolve_n_bits(self.n_bits)
        builder = GraphBuilder()
        builder.input(input_quantizer(X, bits["op_inputs"]))
        builder.add(
            "Gemm",
            name="linear",
            weight=weight,
            bias=bias,
            n_bits=bits["op_weights"],
            max_accumulator_bits=MAX_BIT_WIDTH,
        )
        return builder.build(X)


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


class SGDRegressor(_LinearRegressor):
    """Linear model fitted by SGD, predicting in FHE."""

    _sklearn_class = sk_linear.SGDRegressor


class LogisticRegression(_LinearClassifier):
    """Logistic regression (binary and multinomial) predicting in FHE: 0 PBS; sigmoid or
    softmax and argmax in the clear."""

    _sklearn_class = sk_linear.LogisticRegression


class SGDClassifier(_LinearClassifier):
    """Linear classifier fitted by SGD, predicting in FHE. ``predict_proba`` exists for
    ``loss="log_loss"`` and ``"modified_huber"``, as in scikit-learn.

    The default ``loss`` is ``"log_loss"`` (logistic regression by SGD, with
    ``predict_proba``), as in Concrete ML; scikit-learn's default is ``"hinge"`` (a linear
    SVM, no probabilities): pass ``loss="hinge"`` for it.
    """

    _sklearn_class = sk_linear.SGDClassifier
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

"""Linear support vector machines in FHE (0 PBS; the sign/argmax in the clear)."""

from __future__ import annotations

from sklearn import svm as sk_svm

from .linear_model import _LinearClassifier, _LinearRegressor


class LinearSVC(_LinearClassifier):
    """Linear support vector classifier predicting in FHE (no ``predict_proba``, as in sklearn)."""

    _sklearn_class = sk_svm.LinearSVC


class LinearSVR(_LinearRegressor):
    """Linear support vector regressor predicting in FHE."""

    _sklearn_class = sk_svm.LinearSVR


__all__ = ["LinearSVC", "LinearSVR"]

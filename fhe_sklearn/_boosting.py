"""Shared by every boosted-tree family (xgboost, LightGBM, scikit-learn's gradient boosting).

The circuit sums the quantized leaf values of all trees into one margin per output column;
the base margin (the model's constant start) and the link (sigmoid/softmax, exp or identity)
run in the clear after decryption.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from scipy.special import expit, softmax

from .quantization import QuantizedModule

LINKS = ("identity", "log")


class _BoostedTrees:
    """Trees summed into margins; the base margin is fitted as the float model's raw score
    minus the trees' sum, and checked to be one constant per column."""

    _client_attributes: ClassVar[dict[str, type]] = {"base_margin_": np.ndarray}

    def _raw_score(self, X: np.ndarray) -> np.ndarray:
        """The float model's margin on ``X`` (before its link), shape (n_samples, n_columns)."""
        raise NotImplementedError

    def _check_supported(self) -> None:
        """Raise a clear error for a float model the circuit cannot reproduce."""

    def _set_fitted_attributes(self) -> None:
        super()._set_fitted_attributes()
        self.n_averaged_ = 1

    def _build_quantized_module(self, X: np.ndarray) -> QuantizedModule:
        self._check_supported()
        margin = np.asarray(self._raw_score(X), dtype=np.float64).reshape(len(X), -1)
        # one output column per class (multiclass) or target (multi-output)
        self._n_groups = margin.shape[1]
        trees = self._flat_trees()
        module = self._lower(X, trees)
        gap = margin - sum(t.predict_float(X, self._n_groups) for t in trees)
        self.base_margin_ = np.median(gap, axis=0)
        if np.max(np.abs(gap - self.base_margin_)) > 1e-3 * (1 + np.abs(margin).max()):
            raise ValueError(f"{type(self).__name__}: could not reproduce the float model's margins from its trees")
        return module

    def _margin(self, y: np.ndarray) -> np.ndarray:
        return y + self.base_margin_


class _BoostedClassifierMixin(_BoostedTrees):
    """Binary models carry one margin column (sigmoid), multiclass one per class (softmax)."""

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        """Class probabilities from the summed leaf values plus the base margin."""
        margin = self._margin(y)
        if margin.shape[1] == 1:
            p = expit(margin[:, 0])
            return np.column_stack([1 - p, p])
        return softmax(margin, axis=1)


class _BoostedRegressorMixin(_BoostedTrees):
    """``link_`` is ``"log"`` for Poisson/Gamma/Tweedie-style objectives, else ``"identity"``."""

    _client_attributes: ClassVar[dict[str, type]] = {"link_": str}

    def _link(self) -> str:
        """The inverse link applied in the clear: ``"identity"`` or ``"log"``."""
        return "identity"

    def _set_fitted_attributes(self) -> None:
        super()._set_fitted_attributes()
        self.link_ = self._link()

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        """Predictions from the summed leaf values plus the base margin, through the link."""
        margin = self._margin(y)
        return np.exp(margin) if self.link_ == "log" else margin

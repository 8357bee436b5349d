"""XGBoost models in FHE, lowered from the booster's tree dump (``trees_to_dataframe``).

The circuit sums the quantized leaf margins; the base margin, sigmoid/softmax or inverse
link run in the clear.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import xgboost
from scipy.special import expit, softmax
from sklearn.base import BaseEstimator
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets

from ._tree_lowering import FlatTree
from .quantization import QuantizedModule
from .tree import _TreeClassifier, _TreeRegressor

_IDENTITY = {"reg:squarederror", "reg:absoluteerror", "reg:pseudohubererror", "reg:squaredlogerror"}
_EXP = {"count:poisson", "reg:gamma", "reg:tweedie"}
_CLASSIFICATION = {"binary:logistic", "multi:softprob", "multi:softmax"}


def xgb_flat_trees(booster: xgboost.Booster, n_groups: int) -> list[FlatTree]:
    """The booster's trees; tree ``t`` adds to output column ``t % n_groups``."""
    frame = booster.trees_to_dataframe()
    names = booster.feature_names
    trees = []
    for tree_id, nodes in frame.groupby("Tree", sort=True):
        ids = {node_id: i for i, node_id in enumerate(nodes["ID"])}
        leaf = (nodes["Feature"] == "Leaf").to_numpy()
        left = np.array([-1 if is_leaf else ids[c] for is_leaf, c in zip(leaf, nodes["Yes"])])
        right = np.array([-1 if is_leaf else ids[c] for is_leaf, c in zip(leaf, nodes["No"])])
        feature = np.array(
            [-2 if is_leaf else (names.index(f) if names else int(f[1:])) for is_leaf, f in zip(leaf, nodes["Feature"])]
        )
        threshold = np.where(leaf, 0.0, nodes["Split"].to_numpy(dtype=np.float64))
        value = np.where(leaf, nodes["Gain"].to_numpy(dtype=np.float64), 0.0)[:, None]
        trees.append(FlatTree(left, right, feature, threshold, value, np.array([tree_id % n_groups]), strict=True))
    return trees


class _XGBModel:
    """Shared by XGBClassifier and XGBRegressor: trees from the booster, base margin fitted."""

    _client_attributes: ClassVar[dict[str, type]] = {"base_margin_": np.ndarray, "objective": str}

    def _set_fitted_attributes(self) -> None:
        super()._set_fitted_attributes()
        self.n_averaged_ = 1

    @classmethod
    def _float_flat_trees(cls, sklearn_model: Any) -> list[FlatTree]:
        # every tree in column 0: enough for the split thresholds (from_sklearn_model, X=None)
        return xgb_flat_trees(sklearn_model.get_booster(), 1)

    def _flat_trees(self) -> list[FlatTree]:
        return xgb_flat_trees(self.sklearn_model_.get_booster(), self._n_groups)

    def _build_quantized_module(self, X: np.ndarray) -> QuantizedModule:
        objective = self.objective
        if objective not in _IDENTITY | _EXP | _CLASSIFICATION:
            raise ValueError(f"{type(self).__name__}: objective {objective!r} is not supported in FHE")
        margin = np.asarray(self.sklearn_model_.predict(X, output_margin=True), dtype=np.float64).reshape(len(X), -1)
        # one output column per class (multiclass) or target (multi-output); trees take turns
        self._n_groups = margin.shape[1]
        trees = self._flat_trees()
        module = self._lower(X, trees)
        # the booster's base margin: what its margins add to the sum of the trees
        gap = margin - sum(t.predict_float(X, self._n_groups) for t in trees)
        self.base_margin_ = np.median(gap, axis=0)
        if np.max(np.abs(gap - self.base_margin_)) > 1e-3 * (1 + np.abs(margin).max()):
            raise ValueError(f"{type(self).__name__}: could not reproduce the booster's margins from its tree dump")
        return module

    def _margin(self, y: np.ndarray) -> np.ndarray:
        return y + self.base_margin_


class XGBClassifier(_XGBModel, _TreeClassifier):
    """XGBoost classifier predicting in FHE (``n_bits`` default 6; int, or
    ``{"op_inputs": a, "op_leaves": b}``). Labels may be any values (encoded internally)."""

    _sklearn_class = xgboost.XGBClassifier

    def _fit_float(self, X: np.ndarray, y: np.ndarray, **fit_params: Any) -> BaseEstimator:
        check_classification_targets(y)
        self._label_encoder = LabelEncoder().fit(y)
        return super()._fit_float(X, self._label_encoder.transform(y), **fit_params)

    def _set_fitted_attributes(self) -> None:
        super()._set_fitted_attributes()
        if hasattr(self, "_label_encoder"):
            self.classes_ = self._label_encoder.classes_

    def _float_predict(self, X: np.ndarray) -> np.ndarray:
        pred = self.sklearn_model_.predict(X)
        return self._label_encoder.inverse_transform(pred) if hasattr(self, "_label_encoder") else pred

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        margin = self._margin(y)
        if margin.shape[1] == 1:
            p = expit(margin[:, 0])
            return np.column_stack([1 - p, p])
        return softmax(margin, axis=1)


class XGBRegressor(_XGBModel, _TreeRegressor):
    """XGBoost regressor predicting in FHE (``n_bits`` default 6)."""

    _sklearn_class = xgboost.XGBRegressor

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        margin = self._margin(y)
        return np.exp(margin) if self.objective in _EXP else margin


__all__ = ["XGBClassifier", "XGBRegressor"]

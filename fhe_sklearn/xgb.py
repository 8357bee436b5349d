"""XGBoost models in FHE, lowered from the booster's tree dump (``trees_to_dataframe``).

The circuit sums the quantized leaf margins; the base margin, sigmoid/softmax or inverse
link run in the clear.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import xgboost
from sklearn.base import BaseEstimator
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import check_classification_targets

from ._boosting import _BoostedClassifierMixin, _BoostedRegressorMixin
from ._tree_lowering import FlatTree
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
    """Shared by XGBClassifier and XGBRegressor: trees from the booster's dump."""

    _client_attributes: ClassVar[dict[str, type]] = {"base_margin_": np.ndarray, "objective": str}

    def _check_fhe_params(self) -> None:
        super()._check_fhe_params()
        self._check_supported()  # the objective is a parameter: checked before fitting and at load

    def _check_supported(self) -> None:
        if self.objective not in _IDENTITY | _EXP | _CLASSIFICATION:
            raise ValueError(f"{type(self).__name__}: objective {self.objective!r} is not supported in FHE")

    def _raw_score(self, X: np.ndarray) -> np.ndarray:
        return self.sklearn_model_.predict(X, output_margin=True)

    @classmethod
    def _float_flat_trees(cls, sklearn_model: Any) -> list[FlatTree]:
        # every tree in column 0: enough for the split thresholds (from_sklearn_model, X=None)
        return xgb_flat_trees(sklearn_model.get_booster(), 1)

    def _flat_trees(self) -> list[FlatTree]:
        return xgb_flat_trees(self.sklearn_model_.get_booster(), self._n_groups)


class XGBClassifier(_XGBModel, _BoostedClassifierMixin, _TreeClassifier):
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


class XGBRegressor(_XGBModel, _BoostedRegressorMixin, _TreeRegressor):
    """XGBoost regressor predicting in FHE (``n_bits`` default 6)."""

    _sklearn_class = xgboost.XGBRegressor

    def _link(self) -> str:
        return "log" if self.objective in _EXP else "identity"

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        margin = self._margin(y)
        return np.exp(margin) if self.objective in _EXP else margin


__all__ = ["XGBClassifier", "XGBRegressor"]

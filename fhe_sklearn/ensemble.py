"""Tree ensembles of scikit-learn in FHE: every tree of a model in one circuit, splits shared
across trees.

- Random forests and extra trees: the trees' outputs are averaged in the clear.
- Gradient boosting (``GradientBoosting*``, ``HistGradientBoosting*``): the circuit sums the
  trees' leaf values (learning rate included) into one margin per class; the model's constant
  start (its ``init`` estimator or baseline) and the sigmoid/softmax or inverse link run in
  the clear.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from sklearn import ensemble as sk_ensemble
from sklearn.base import BaseEstimator
from sklearn.dummy import DummyClassifier, DummyRegressor

from ._boosting import _BoostedClassifierMixin, _BoostedRegressorMixin
from ._tree_lowering import FlatTree
from .tree import _TreeClassifier, _TreeRegressor, sklearn_flat_tree


class RandomForestClassifier(_TreeClassifier):
    """Random forest classifier predicting in FHE (``n_bits`` default 6)."""

    _sklearn_class = sk_ensemble.RandomForestClassifier


class RandomForestRegressor(_TreeRegressor):
    """Random forest regressor predicting in FHE (``n_bits`` default 6)."""

    _sklearn_class = sk_ensemble.RandomForestRegressor


class ExtraTreesClassifier(_TreeClassifier):
    """Extremely randomized trees classifier predicting in FHE (``n_bits`` default 6)."""

    _sklearn_class = sk_ensemble.ExtraTreesClassifier


class ExtraTreesRegressor(_TreeRegressor):
    """Extremely randomized trees regressor predicting in FHE (``n_bits`` default 6)."""

    _sklearn_class = sk_ensemble.ExtraTreesRegressor


# -- GradientBoosting* ---------------------------------------------------------------------------
class _GradientBoosting:
    """Stage ``s`` holds one regression tree per margin column; each adds ``learning_rate``
    times its leaf value. A non-constant ``init`` estimator cannot run in the circuit and is
    refused by the base-margin check."""

    def _check_supported(self) -> None:
        init = self.sklearn_model_.init
        if not (init is None or init == "zero" or isinstance(init, (DummyClassifier, DummyRegressor))):
            raise ValueError(
                f"{type(self).__name__}: the init estimator {type(init).__name__} predicts outside the trees; "
                "only a constant start (init=None, 'zero' or a Dummy estimator) runs in FHE"
            )

    @classmethod
    def _float_flat_trees(cls, sklearn_model: BaseEstimator) -> list[FlatTree]:
        scale = _margin_factor(sklearn_model) * sklearn_model.learning_rate
        trees = []
        for stage in sklearn_model.estimators_:
            for column, tree in enumerate(stage):
                flat = sklearn_flat_tree(tree, False)
                trees.append(replace(flat, value=flat.value * scale, columns=np.array([column])))
        return trees


def _margin_factor(model: BaseEstimator) -> float:
    """Exponential loss: P(class 1) = sigmoid(2 * margin); the factor goes into the trees."""
    return 2.0 if getattr(model, "loss", None) == "exponential" else 1.0


class GradientBoostingClassifier(_GradientBoosting, _BoostedClassifierMixin, _TreeClassifier):
    """Gradient boosting classifier predicting in FHE (``n_bits`` default 6; int, or
    ``{"op_inputs": a, "op_leaves": b}``). Binary models carry one margin, multiclass one per
    class (one tree per class and stage)."""

    _sklearn_class = sk_ensemble.GradientBoostingClassifier

    def _raw_score(self, X: np.ndarray) -> np.ndarray:
        return _margin_factor(self.sklearn_model_) * self.sklearn_model_.decision_function(X)


class GradientBoostingRegressor(_GradientBoosting, _BoostedRegressorMixin, _TreeRegressor):
    """Gradient boosting regressor predicting in FHE (``n_bits`` default 6)."""

    _sklearn_class = sk_ensemble.GradientBoostingRegressor

    def _raw_score(self, X: np.ndarray) -> np.ndarray:
        return self.sklearn_model_.predict(X)


# -- HistGradientBoosting* -----------------------------------------------------------------------
def hist_flat_trees(model: sk_ensemble.HistGradientBoostingRegressor) -> list[FlatTree]:
    """The binned trees of a fitted HistGradientBoosting model; tree ``j`` of each iteration
    adds to margin column ``j``. A sample goes left when ``x <= num_threshold``."""
    trees = []
    for iteration in model._predictors:
        for column, predictor in enumerate(iteration):
            nodes = predictor.nodes
            if np.any(nodes["is_categorical"] & ~nodes["is_leaf"].astype(bool)):
                raise ValueError(
                    f"{type(model).__name__} has categorical splits, which have no FHE lowering: "
                    "one-hot or ordinal-encode those features before fitting (categorical_features=None)"
                )
            leaf = nodes["is_leaf"].astype(bool)
            trees.append(
                FlatTree(
                    left=np.where(leaf, -1, nodes["left"]).astype(np.int64),
                    right=np.where(leaf, -1, nodes["right"]).astype(np.int64),
                    feature=np.where(leaf, -2, nodes["feature_idx"]).astype(np.int64),
                    threshold=np.where(leaf, 0.0, nodes["num_threshold"]).astype(np.float64),
                    value=np.where(leaf, nodes["value"], 0.0).astype(np.float64)[:, None],
                    columns=np.array([column]),
                )
            )
    return trees


class _HistGradientBoosting:
    """Leaf values already include the learning rate; the baseline is the base margin.
    Missing values (NaN) are refused by the input validation, so ``missing_go_to_left``
    never applies."""

    @classmethod
    def _float_flat_trees(cls, sklearn_model: BaseEstimator) -> list[FlatTree]:
        return hist_flat_trees(sklearn_model)

    def _raw_score(self, X: np.ndarray) -> np.ndarray:
        return self.sklearn_model_._raw_predict(X)


class HistGradientBoostingClassifier(_HistGradientBoosting, _BoostedClassifierMixin, _TreeClassifier):
    """Histogram gradient boosting classifier predicting in FHE (``n_bits`` default 6).
    Categorical splits are refused: encode categories as numbers before fitting."""

    _sklearn_class = sk_ensemble.HistGradientBoostingClassifier


class HistGradientBoostingRegressor(_HistGradientBoosting, _BoostedRegressorMixin, _TreeRegressor):
    """Histogram gradient boosting regressor predicting in FHE (``n_bits`` default 6);
    ``loss="poisson"``/``"gamma"`` apply their exponential link in the clear."""

    _sklearn_class = sk_ensemble.HistGradientBoostingRegressor

    def _link(self) -> str:
        link = type(self.sklearn_model_._loss.link).__name__
        if link not in ("IdentityLink", "LogLink"):
            raise ValueError(f"HistGradientBoostingRegressor: a loss with a {link} is not supported in FHE")
        return "log" if link == "LogLink" else "identity"


__all__ = [
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
]

"""Random forests in FHE: all trees in one circuit, splits shared across trees, the
average taken in the clear."""

from __future__ import annotations

from sklearn import ensemble as sk_ensemble

from .tree import _TreeClassifier, _TreeRegressor


class RandomForestClassifier(_TreeClassifier):
    """Random forest classifier predicting in FHE (``n_bits`` default 6)."""

    _sklearn_class = sk_ensemble.RandomForestClassifier


class RandomForestRegressor(_TreeRegressor):
    """Random forest regressor predicting in FHE (``n_bits`` default 6)."""

    _sklearn_class = sk_ensemble.RandomForestRegressor


__all__ = ["RandomForestClassifier", "RandomForestRegressor"]

"""Decision trees in FHE.

Inputs are quantized per feature on the client (``op_inputs`` bits); each split becomes an
encrypted-vs-constant comparison on that integer grid, shared by every node (of every tree)
with the same feature and integer threshold; leaf values are quantized to ``op_leaves`` bits.
See :mod:`fhe_sklearn._tree_lowering` for the circuit and its PBS count.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np
from sklearn import tree as sk_tree
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils.validation import check_is_fitted

from ._tree_lowering import INPUT_ENCODINGS, OUTPUT_ENCODINGS, QUANTIZATION_MODES, FlatTree, lower_trees, threshold_grid
from .base import FHEClassifierMixin, FHEEstimatorMixin, FHERegressorMixin
from .exceptions import QuantizationAgreementWarning
from .quantization import QuantizedModule
from .quantization.post_training import resolve_n_bits


def sklearn_flat_tree(estimator: BaseEstimator, classifier: bool) -> FlatTree:
    """A fitted sklearn tree as a FlatTree; binary classifiers keep P(class 1) only."""
    t = estimator.tree_
    value = t.value[:, 0, :] if classifier else t.value[:, :, 0]
    if classifier and value.shape[1] == 2:
        value = value[:, 1:]
    return FlatTree(t.children_left, t.children_right, t.feature, t.threshold, value, np.arange(value.shape[1]))


class _TreeModel(FHEEstimatorMixin):
    """Shared by trees, forests and boosted trees: lower ``_flat_trees()`` to one circuit."""

    _n_bits_keys: ClassVar[tuple[str, ...]] = ("op_inputs", "op_leaves")
    _default_n_bits: ClassVar[int] = 6
    _extra_params: ClassVar[dict] = {"quantization": "uniform", "input_encoding": "unary", "output_encoding": "auto"}
    _client_attributes: ClassVar[dict[str, type]] = {"n_averaged_": int}

    @classmethod
    def from_sklearn_model(
        cls, sklearn_model: BaseEstimator, X: Any = None, n_bits: Any = None, **fhe_params: Any
    ) -> _TreeModel:
        """Wrap an already-fitted float model.

        Parameters
        ----------
        sklearn_model : fitted estimator of type ``_sklearn_class``
        X : array-like of shape (n_samples, n_features), optional
            Representative data. Without it, the calibration set is read off the model's
            split thresholds (see :func:`fhe_sklearn._tree_lowering.threshold_grid`): the
            input grid of trees spans the split thresholds either way, so the quantized
            model is the same except for features no split uses.
        n_bits : int or dict, optional
            Default 6; ``{"op_inputs": a}`` or ``{"op_inputs": a, "op_leaves": b}``.
        **fhe_params
            ``quantization`` (``"uniform"`` or ``"splits"``), ``input_encoding`` (``"unary"``
            or ``"rank"``, see :data:`fhe_sklearn._tree_lowering.INPUT_ENCODINGS`),
            ``output_encoding`` (``"auto"``, ``"planes"``, ``"sum"`` or ``"trees"``, see
            :data:`fhe_sklearn._tree_lowering.OUTPUT_ENCODINGS`).

        Returns
        -------
        model : the FHE estimator, fitted (quantized), not compiled
        """
        if X is None:
            if not isinstance(sklearn_model, cls._sklearn_class):
                raise TypeError(
                    f"{cls.__name__} wraps {cls._sklearn_class.__name__}, got {type(sklearn_model).__name__}"
                )
            check_is_fitted(sklearn_model)
            X = threshold_grid(cls._float_flat_trees(sklearn_model), sklearn_model.n_features_in_)
            # rows sitting on the thresholds say nothing about agreement on real data
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", QuantizationAgreementWarning)
                model = super().from_sklearn_model(sklearn_model, X, n_bits, **fhe_params)
            model.quantization_agreement_ = None
            return model
        return super().from_sklearn_model(sklearn_model, X, n_bits, **fhe_params)

    @classmethod
    def _float_flat_trees(cls, sklearn_model: BaseEstimator) -> list[FlatTree]:
        """The trees of a fitted float model (their splits; outputs may be simplified)."""
        estimators = getattr(sklearn_model, "estimators_", [sklearn_model])
        return [sklearn_flat_tree(e, issubclass(cls, ClassifierMixin)) for e in estimators]

    _agreement_advice: ClassVar[str] = (
        "Give it more bits (n_bits, or more op_inputs / op_leaves bits), or use quantization='splits' "
        "for the float model's exact paths."
    )

    def _flat_trees(self) -> list[FlatTree]:
        return self._float_flat_trees(self.sklearn_model_)

    def _tree_n_bits(self) -> dict[str, int]:
        """``n_bits`` as a validated dict; ``op_leaves`` defaults to ``op_inputs`` (as in Concrete ML)."""
        n_bits = self.n_bits
        if isinstance(n_bits, Mapping) and "op_inputs" in n_bits and "op_leaves" not in n_bits:
            n_bits = {**n_bits, "op_leaves": n_bits["op_inputs"]}
        return resolve_n_bits(n_bits, self._n_bits_keys)

    def _check_fhe_params(self) -> None:
        self._tree_n_bits()
        if self.quantization not in QUANTIZATION_MODES:
            raise ValueError(f"quantization must be one of {QUANTIZATION_MODES}, got {self.quantization!r}")
        if self.input_encoding not in INPUT_ENCODINGS:
            raise ValueError(f"input_encoding must be one of {INPUT_ENCODINGS}, got {self.input_encoding!r}")
        if self.output_encoding not in OUTPUT_ENCODINGS:
            raise ValueError(f"output_encoding must be one of {OUTPUT_ENCODINGS}, got {self.output_encoding!r}")

    def _set_fitted_attributes(self) -> None:
        super()._set_fitted_attributes()
        #: trees whose outputs are averaged in the clear (forests); 1 for a tree or boosting
        self.n_averaged_ = len(getattr(self.sklearn_model_, "estimators_", [None]))

    def _build_quantized_module(self, X: np.ndarray) -> QuantizedModule:
        return self._lower(X, self._flat_trees())

    def _lower(self, X: np.ndarray, trees: list[FlatTree]) -> QuantizedModule:
        bits = self._tree_n_bits()
        n_outputs = 1 + max(int(t.columns.max()) for t in trees)
        return lower_trees(
            trees,
            n_outputs,
            X,
            bits["op_inputs"],
            bits["op_leaves"],
            self.quantization,
            self.input_encoding,
            self.output_encoding,
        )


class _TreeClassifier(_TreeModel, FHEClassifierMixin, ClassifierMixin, BaseEstimator):
    _multi_output = False

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        """Average the trees' class fractions; binary models carry P(class 1) only."""
        p = np.clip(y / self.n_averaged_, 0, None)
        if len(self.classes_) == 2 and p.shape[1] == 1:
            p1 = np.clip(p[:, 0], 0, 1)
            return np.column_stack([1 - p1, p1])
        total = p.sum(axis=1, keepdims=True)
        return np.divide(p, total, out=np.full_like(p, 1 / p.shape[1]), where=total > 0)


class _TreeRegressor(_TreeModel, FHERegressorMixin, RegressorMixin, BaseEstimator):
    def post_processing(self, y: np.ndarray) -> np.ndarray:
        return y / self.n_averaged_


class DecisionTreeClassifier(_TreeClassifier):
    """Decision tree classifier predicting in FHE. Parameters: sklearn's, plus ``n_bits``
    (default 6; int, or ``{"op_inputs": a, "op_leaves": b}``, ``op_leaves`` defaulting to
    ``op_inputs``) and ``quantization`` (``"uniform"`` or ``"splits"``)."""

    _sklearn_class = sk_tree.DecisionTreeClassifier


class DecisionTreeRegressor(_TreeRegressor):
    """Decision tree regressor predicting in FHE (``n_bits`` as for the classifier)."""

    _sklearn_class = sk_tree.DecisionTreeRegressor


__all__ = ["DecisionTreeClassifier", "DecisionTreeRegressor"]

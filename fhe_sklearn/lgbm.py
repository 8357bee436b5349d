"""LightGBM models in FHE (optional extra: ``pip install 'fhe-sklearn[lightgbm]'``), lowered
from the booster's ``dump_model()``.

LightGBM sends a sample left when ``x <= threshold`` (decision type ``"<="``); categorical
splits (``"=="``) and linear trees have no FHE lowering and are refused. The circuit sums the
leaf values; the base margin, sigmoid/softmax or exponential link run in the clear.
"""

from __future__ import annotations

from typing import Any

import lightgbm
import numpy as np

from ._boosting import _BoostedClassifierMixin, _BoostedRegressorMixin
from ._tree_lowering import FlatTree
from .tree import _TreeClassifier, _TreeRegressor

_IDENTITY = {"regression", "regression_l1", "huber", "fair", "quantile", "mape"}
_LOG = {"poisson", "gamma", "tweedie"}
_CLASSIFICATION = {"binary", "multiclass"}


def _objective(dump: dict) -> str:
    """The objective's name (``"binary sigmoid:1"`` → ``"binary"``)."""
    return dump["objective"].split()[0]


def _margin_factor(dump: dict) -> float:
    """P(class 1) = sigmoid(factor * raw score) for ``"binary sigmoid:factor"``; else 1."""
    name, *options = dump["objective"].split()
    for option in options:
        key, _, value = option.partition(":")
        if name == "binary" and key == "sigmoid":
            return float(value)
    return 1.0


def lgbm_flat_trees(dump: dict, scale: float = 1.0) -> list[FlatTree]:
    """Every tree of a ``Booster.dump_model()``; tree ``t`` adds to column ``t % num_tree_per_iteration``.

    Leaf values are multiplied by ``scale`` (the binary sigmoid factor; averaged output).
    """
    n_groups = dump["num_tree_per_iteration"]
    return [_flat_tree(info["tree_structure"], info["tree_index"] % n_groups, scale) for info in dump["tree_info"]]


def _flat_tree(root: dict, column: int, scale: float) -> FlatTree:
    """One nested LightGBM tree in array form (pre-order node ids)."""
    nodes: list[dict] = []
    left: list[int] = []
    right: list[int] = []
    stack: list[tuple[dict, int, bool]] = [(root, -1, False)]
    while stack:
        node, parent, is_left = stack.pop()
        index = len(nodes)
        nodes.append(node)
        left.append(-1)
        right.append(-1)
        if parent >= 0:
            (left if is_left else right)[parent] = index
        if "split_feature" in node:
            _check_split(node)
            stack += [(node["right_child"], index, False), (node["left_child"], index, True)]
        elif "leaf_coeff" in node:
            raise ValueError("LightGBM linear trees (linear_tree=True) have no FHE lowering")
    split = ["split_feature" in n for n in nodes]
    return FlatTree(
        np.array(left, dtype=np.int64),
        np.array(right, dtype=np.int64),
        np.array([n["split_feature"] if s else -2 for n, s in zip(nodes, split)], dtype=np.int64),
        np.array([n["threshold"] if s else 0.0 for n, s in zip(nodes, split)], dtype=np.float64),
        np.array([0.0 if s else scale * n.get("leaf_value", 0.0) for n, s in zip(nodes, split)])[:, None],
        np.array([column]),
    )


def _check_split(node: dict) -> None:
    if node["decision_type"] != "<=":
        raise ValueError(
            f"LightGBM split of decision type {node['decision_type']!r} (categorical) has no FHE lowering: "
            "encode categories as numbers and fit without categorical_feature"
        )
    if node.get("missing_type") == "Zero" and bool(node["default_left"]) != (0.0 <= node["threshold"]):
        raise ValueError("LightGBM models treating zero as missing (zero_as_missing=True) are not supported")


class _LGBMModel:
    """Shared by LGBMClassifier and LGBMRegressor: trees from the booster's dump."""

    _supported: frozenset[str] = frozenset()

    def _dump(self) -> dict:
        return self.sklearn_model_.booster_.dump_model()

    def _check_supported(self) -> None:
        name = _objective(self._dump())
        if name not in self._supported:
            raise ValueError(f"{type(self).__name__}: objective {name!r} is not supported in FHE")

    @classmethod
    def _float_flat_trees(cls, sklearn_model: Any) -> list[FlatTree]:
        dump = sklearn_model.booster_.dump_model()
        scale = _margin_factor(dump)
        if dump.get("average_output"):  # random-forest mode: the trees are averaged
            scale /= max(1, len(dump["tree_info"]) // dump["num_tree_per_iteration"])
        return lgbm_flat_trees(dump, scale)

    def _raw_score(self, X: np.ndarray) -> np.ndarray:
        return _margin_factor(self._dump()) * self.sklearn_model_.predict(X, raw_score=True)

    def _fit_float(self, X: np.ndarray, y: np.ndarray, **fit_params: Any) -> Any:
        params = self._sklearn_params()
        # LightGBM logs warnings at the default verbosity; keep fits quiet unless asked
        if params.get("verbose", params.get("verbosity")) is None:
            params["verbose"] = -1
        return self._sklearn_class(**params).fit(X, y, **fit_params)


class LGBMClassifier(_LGBMModel, _BoostedClassifierMixin, _TreeClassifier):
    """LightGBM classifier predicting in FHE (``n_bits`` default 6; int, or
    ``{"op_inputs": a, "op_leaves": b}``). Objectives ``binary`` and ``multiclass``."""

    _sklearn_class = lightgbm.LGBMClassifier
    _supported = frozenset(_CLASSIFICATION)


class LGBMRegressor(_LGBMModel, _BoostedRegressorMixin, _TreeRegressor):
    """LightGBM regressor predicting in FHE (``n_bits`` default 6); Poisson, Gamma and Tweedie
    objectives apply their exponential link in the clear."""

    _sklearn_class = lightgbm.LGBMRegressor
    _supported = frozenset(_IDENTITY | _LOG)

    def _link(self) -> str:
        return "log" if _objective(self._dump()) in _LOG else "identity"


__all__ = ["LGBMClassifier", "LGBMRegressor"]

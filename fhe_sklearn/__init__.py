"""fhe_sklearn: scikit-learn estimators that predict on encrypted data (TFHE, concrete-python).

Names are imported on first use (PEP 562), so ``import fhe_sklearn.deployment`` on a server
does not pay for torch, skorch or xgboost.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

from ._version import __version__

#: public name → the submodule defining it
_LAZY = {
    "DecisionTreeClassifier": "tree",
    "DecisionTreeRegressor": "tree",
    "RandomForestClassifier": "ensemble",
    "RandomForestRegressor": "ensemble",
    "ExtraTreesClassifier": "ensemble",
    "ExtraTreesRegressor": "ensemble",
    "GradientBoostingClassifier": "ensemble",
    "GradientBoostingRegressor": "ensemble",
    "HistGradientBoostingClassifier": "ensemble",
    "HistGradientBoostingRegressor": "ensemble",
    "KNeighborsClassifier": "neighbors",
    "KNeighborsRegressor": "neighbors",
    "XGBClassifier": "xgb",
    "XGBRegressor": "xgb",
    "ElasticNet": "linear_model",
    "GammaRegressor": "glm",
    "Lasso": "linear_model",
    "LinearRegression": "linear_model",
    "LinearSVC": "svm",
    "LinearSVR": "svm",
    "LogisticRegression": "linear_model",
    "NeuralNetClassifier": "neural_net",
    "NeuralNetRegressor": "neural_net",
    "PoissonRegressor": "glm",
    "Ridge": "linear_model",
    "SGDClassifier": "linear_model",
    "SGDRegressor": "linear_model",
    "TweedieRegressor": "glm",
    "dump": "serialization",
    "dumps": "serialization",
    "load": "serialization",
    "loads": "serialization",
}

# LightGBM is an optional extra (pip install 'fhe-sklearn[lightgbm]'): listed when installed
if importlib.util.find_spec("lightgbm") is not None:
    _LAZY.update(LGBMClassifier="lgbm", LGBMRegressor="lgbm")

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'fhe_sklearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

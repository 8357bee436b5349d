"""fhe_sklearn: scikit-learn estimators that predict on encrypted data (TFHE, concrete-python)."""

from ._version import __version__
from .ensemble import RandomForestClassifier, RandomForestRegressor
from .glm import GammaRegressor, PoissonRegressor, TweedieRegressor
from .linear_model import (
    ElasticNet,
    Lasso,
    LinearRegression,
    LogisticRegression,
    Ridge,
    SGDClassifier,
    SGDRegressor,
)
from .neural_net import NeuralNetClassifier, NeuralNetRegressor
from .serialization import dump, dumps, load, loads
from .svm import LinearSVC, LinearSVR
from .tree import DecisionTreeClassifier, DecisionTreeRegressor
from .xgb import XGBClassifier, XGBRegressor

__all__ = [
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "XGBClassifier",
    "XGBRegressor",
    "ElasticNet",
    "GammaRegressor",
    "Lasso",
    "LinearRegression",
    "LinearSVC",
    "LinearSVR",
    "LogisticRegression",
    "NeuralNetClassifier",
    "NeuralNetRegressor",
    "PoissonRegressor",
    "Ridge",
    "SGDClassifier",
    "SGDRegressor",
    "TweedieRegressor",
    "__version__",
    "dump",
    "dumps",
    "load",
    "loads",
]

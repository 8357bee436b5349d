"""Generalized linear models in FHE: the linear score is computed encrypted (0 PBS); the
inverse link (exp for log links) is applied in the clear after decryption."""

from __future__ import annotations

import numpy as np
from sklearn import linear_model as sk_linear

from .linear_model import _LinearRegressor


class _GLMRegressor(_LinearRegressor):
    def post_processing(self, y: np.ndarray) -> np.ndarray:
        # sklearn's GLMs keep their link on the fitted loss object
        return self.sklearn_model._base_loss.link.inverse(y)


class PoissonRegressor(_GLMRegressor):
    """Poisson regression (log link) predicting in FHE."""

    _sklearn_class = sk_linear.PoissonRegressor


class GammaRegressor(_GLMRegressor):
    """Gamma regression (log link) predicting in FHE."""

    _sklearn_class = sk_linear.GammaRegressor


class TweedieRegressor(_GLMRegressor):
    """Tweedie regression (identity or log link, as sklearn picks) predicting in FHE."""

    _sklearn_class = sk_linear.TweedieRegressor


__all__ = ["GammaRegressor", "PoissonRegressor", "TweedieRegressor"]

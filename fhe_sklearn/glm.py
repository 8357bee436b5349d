"""Generalized linear models in FHE: the linear score is computed encrypted (0 PBS); the
inverse link (exp for log links) is applied in the clear after decryption."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn import linear_model as sk_linear

from .linear_model import _LinearRegressor


class _GLMRegressor(_LinearRegressor):
    _client_attributes: ClassVar[dict[str, type]] = {"link_": str}

    def _set_fitted_attributes(self) -> None:
        super()._set_fitted_attributes()
        # sklearn's GLMs keep their link on the fitted loss object: log or identity here
        link = type(self.sklearn_model_._base_loss.link).__name__
        self.link_ = {"LogLink": "log", "IdentityLink": "identity"}.get(link)
        if self.link_ is None:
            raise ValueError(f"{type(self).__name__}: link {link} is not supported")

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        return np.exp(y) if self.link_ == "log" else y


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

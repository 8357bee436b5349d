"""Does the quantized model still compute what the float model computes?

Every estimator checks this once, when its quantized model is built (``fit``,
``from_sklearn_model``): it predicts the calibration data with the integer model
(``fhe="disable"``, which ``"simulate"`` and ``"execute"`` reproduce) and with the float model it
was quantized from, and warns when they disagree
beyond a tolerance (:class:`~fhe_sklearn.exceptions.QuantizationAgreementWarning`):

- classifiers: the share of rows whose label differs, at most ``1 - MIN_LABEL_AGREEMENT``;
- regressors: the R² of the integer model's predictions, with the float model's predictions as
  the truth, at least ``MIN_R2`` (the worst output of a multi-output model). R² is scale-free and
  reads as the share of the float model's variation the FHE model reproduces. A float model with
  constant predictions is compared by relative error instead.

The measured value is kept as ``quantization_agreement_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import is_classifier

from .exceptions import QuantizationAgreementWarning, warn_user

#: classifiers warn when fewer calibration rows than this get the float model's label
MIN_LABEL_AGREEMENT = 0.95
#: regressors warn when the R² of the FHE predictions against the float ones is lower
MIN_R2 = 0.95
#: rows of the calibration data used (evenly spaced), to bound the cost on large sets
MAX_ROWS = 10_000


def agreement_score(reference: np.ndarray, predicted: np.ndarray, classifier: bool) -> float:
    """Label agreement (classifiers) or worst-output R² (regressors) of ``predicted``
    against ``reference``."""
    if classifier:
        return float(np.mean(np.asarray(reference) == np.asarray(predicted)))
    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    predicted = np.asarray(predicted, dtype=np.float64).reshape(len(predicted), -1)
    squared_error = np.mean((predicted - reference) ** 2, axis=0)
    variance = np.var(reference, axis=0)
    magnitude = np.mean(reference**2, axis=0)
    # constant float predictions: R² is undefined, use 1 - relative squared error
    denominator = np.where(variance > 1e-12 * np.maximum(magnitude, 1e-300), variance, magnitude)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = np.where(denominator > 0, 1 - squared_error / denominator, np.where(squared_error > 0, -np.inf, 1.0))
    return float(np.min(scores))


def check_agreement(model: Any, X: np.ndarray, advice: str) -> float:
    """Measure ``model``'s integer model against its float model on ``X``; warn if too far.

    Parameters
    ----------
    model : fitted fhe_sklearn estimator (with ``sklearn_model_`` and ``quantized_module_``)
    X : ndarray of shape (n_samples, n_features)
        The calibration data, already validated.
    advice : str
        What to change, appended to the warning.

    Returns
    -------
    score : float
        Label agreement or R², see the module docstring.
    """
    step = max(1, len(X) // MAX_ROWS)
    X = X[::step]
    classifier = is_classifier(model)
    module = model.quantized_module_
    output = module.dequantize_output(module.quantized_forward(module.quantize_input(X)))
    if classifier:
        predicted = model.classes_[model._class_indices(output)]
    else:
        predicted = model.output_from_dequantized(output)
    score = agreement_score(model._float_predict(X), predicted, classifier)
    tolerance = MIN_LABEL_AGREEMENT if classifier else MIN_R2
    if score < tolerance:
        what = (
            f"gives the float model's label for {score:.1%} of the calibration rows (tolerance {tolerance:.0%})"
            if classifier
            else f"reproduces the float model's predictions on the calibration rows with R² = {score:.3f} "
            f"(tolerance {tolerance})"
        )
        settings = f" with n_bits={model.n_bits!r}" if hasattr(model, "n_bits") else ""
        warn_user(
            f"{type(model).__name__}{settings}: the quantized model, which FHE computes, {what}. {advice}",
            QuantizationAgreementWarning,
        )
    return score

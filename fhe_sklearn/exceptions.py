"""Warnings raised by fhe_sklearn estimators (filter them with :func:`warnings.filterwarnings`)."""

from __future__ import annotations

import os
import sys
import warnings


class QuantizationAgreementWarning(UserWarning):
    """The quantized (FHE) model departs from the float model on its calibration data.

    Issued once per ``fit`` / ``from_sklearn_model``; see :mod:`fhe_sklearn.agreement`.
    """


class InputRangeWarning(UserWarning):
    """Input values outside the range a linear model was quantized on were clipped to it.

    Issued once per call (``predict``, ``predict_proba``, ``decision_function``,
    ``quantize_input``) with the number of clipped values per feature. A linear model's float
    prediction keeps growing beyond that range; its FHE prediction stops at the edge.
    """


def warn_user(message: str, category: type[Warning]) -> None:
    """Issue a warning attributed to the first caller outside this package (the user's line)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)


__all__ = ["InputRangeWarning", "QuantizationAgreementWarning"]

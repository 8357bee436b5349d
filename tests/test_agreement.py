import warnings

import numpy as np
import pytest

from fhe_sklearn import (
    DecisionTreeRegressor,
    LinearRegression,
    LogisticRegression,
    NeuralNetClassifier,
    RandomForestClassifier,
    XGBClassifier,
    XGBRegressor,
)
from fhe_sklearn.agreement import MIN_LABEL_AGREEMENT, agreement_score
from fhe_sklearn.exceptions import QuantizationAgreementWarning

DEFAULTS = [
    (LogisticRegression, {}, "scaled_cancer"),
    (RandomForestClassifier, {"n_estimators": 10, "max_depth": 4, "random_state": 0}, "scaled_cancer"),
    (XGBClassifier, {"n_estimators": 10, "max_depth": 3}, "scaled_wine"),
    (NeuralNetClassifier, {"max_epochs": 50, "random_state": 0}, "scaled_wine"),
    (LinearRegression, {}, "scaled_diabetes"),
    (DecisionTreeRegressor, {"max_depth": 5, "random_state": 0}, "scaled_diabetes"),
    (XGBRegressor, {"n_estimators": 20, "max_depth": 3}, "scaled_diabetes"),
]


@pytest.mark.parametrize(("cls", "params", "dataset"), DEFAULTS, ids=lambda p: getattr(p, "__name__", ""))
def test_default_settings_do_not_warn(cls, params, dataset, request):
    X_train, _, y_train, _ = request.getfixturevalue(dataset)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationAgreementWarning)
        model = cls(**params).fit(X_train, y_train)
    assert 0.95 <= model.quantization_agreement_ <= 1.0


def test_one_bit_model_below_the_majority_rate_warns(scaled_cancer):
    X_train, X_test, y_train, y_test = scaled_cancer
    match = r"n_bits=1.*label for \d+\.\d% of the calibration rows"
    with pytest.warns(QuantizationAgreementWarning, match=match) as record:
        model = LogisticRegression(n_bits=1).fit(X_train, y_train)
    majority = max(np.mean(y_test), 1 - np.mean(y_test))
    assert np.mean(model.predict(X_test) == y_test) < majority  # what the warning is about
    assert model.quantization_agreement_ < MIN_LABEL_AGREEMENT
    assert f"{model.quantization_agreement_:.1%}" in str(record[0].message)
    assert "standardize" in str(record[0].message)  # the fix, for a linear model
    assert record[0].filename == __file__  # points at the user's line


def test_an_undertrained_network_warns_with_the_network_fixes(scaled_wine):
    X_train, _, y_train, _ = scaled_wine
    # 5 epochs leave near-ties that the accumulator truncation flips
    with pytest.warns(QuantizationAgreementWarning, match="rounding_threshold_bits"):
        NeuralNetClassifier(max_epochs=5, random_state=0).fit(X_train, y_train)


def test_regressor_and_string_labels(scaled_diabetes, scaled_wine):
    X_train, _, y_train, _ = scaled_diabetes
    with pytest.warns(QuantizationAgreementWarning, match=r"R² = "):
        XGBRegressor(n_estimators=20, max_depth=3, n_bits=1).fit(X_train, y_train)
    X_train, _, y_train, _ = scaled_wine
    labels = np.array(["barolo", "grignolino", "barbera"])[y_train]
    # the booster predicts label indices: compared as labels, both models agree
    assert XGBClassifier(n_estimators=5, max_depth=2).fit(X_train, labels).quantization_agreement_ > 0.95


def test_agreement_score():
    assert agreement_score(np.array(["a", "b", "a", "b"]), np.array(["a", "b", "b", "b"]), True) == 0.75
    reference = np.column_stack([np.arange(10.0), np.arange(10.0) * 2])
    assert agreement_score(reference, reference, False) == 1.0
    noisy = reference + np.array([0.0, 1.0])  # second output shifted: its R² alone drops
    assert agreement_score(reference, noisy, False) == pytest.approx(1 - 1 / np.var(reference[:, 1]))
    # constant float predictions: relative error instead of an undefined R²
    assert agreement_score(np.full(5, 3.0), np.full(5, 3.0), False) == 1.0
    assert agreement_score(np.full(5, 3.0), np.full(5, 2.7), False) == pytest.approx(1 - 0.09 / 9)

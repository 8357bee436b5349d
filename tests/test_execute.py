"""Real encryption agrees with simulation and with the integer model, on the circuit's
decrypted outputs, for every family (one tiny model and one row each)."""

import numpy as np
import pytest

from fhe_sklearn import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    LinearSVC,
    NeuralNetRegressor,
    PoissonRegressor,
    RandomForestClassifier,
    XGBRegressor,
)

TINY_NET = {
    "module__n_hidden_neurons_multiplier": 1,
    "module__n_w_bits": 2,
    "module__n_a_bits": 2,
    "module__n_accum_bits": 5,
    "max_epochs": 10,
    "random_state": 0,
}

CASES = [
    (PoissonRegressor, {"n_bits": 6}, "scaled_diabetes", "count"),
    (LinearSVC, {"n_bits": 6}, "scaled_cancer", None),
    (RandomForestClassifier, {"n_estimators": 3, "max_depth": 2, "n_bits": 3, "random_state": 0}, "wine", None),
    (DecisionTreeRegressor, {"max_depth": 2, "n_bits": 3, "random_state": 0}, "diabetes", None),
    (XGBRegressor, {"n_estimators": 2, "max_depth": 2, "n_bits": 3}, "diabetes", None),
    (DecisionTreeClassifier, {"max_depth": 2, "quantization": "splits", "random_state": 0}, "wine", None),
    (NeuralNetRegressor, TINY_NET, "scaled_diabetes", None),
]


@pytest.mark.fhe_execute
@pytest.mark.parametrize(("cls", "params", "dataset", "target"), CASES, ids=lambda v: getattr(v, "__name__", None))
def test_execute_decrypts_to_the_simulated_integers(cls, params, dataset, target, request):
    X_train, X_test, y_train, _ = request.getfixturevalue(dataset)
    if target == "count":  # Poisson needs non-negative targets
        y_train = np.rint(y_train / 25)
    model = cls(**params).fit(X_train, y_train)
    model.compile(X_train)
    module = model.quantized_module_
    x_q = model.quantize_input(X_test[:1])
    executed = module.quantized_forward(x_q, fhe="execute")
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q, fhe="simulate"))
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q, fhe="disable"))
    # and the estimator's clear-side output follows from those integers
    y = model.output_from_dequantized(module.dequantize_output(executed))
    expected = model.predict_proba(X_test[:1]) if hasattr(model, "predict_proba") else model.predict(X_test[:1])
    if cls is LinearSVC:
        expected = model.decision_function(X_test[:1])
    np.testing.assert_allclose(y, expected)

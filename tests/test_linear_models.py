import numpy as np
import pandas as pd
import pytest
from sklearn import linear_model as sk_linear
from sklearn.base import clone
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import fhe_sklearn
from fhe_sklearn import (
    ElasticNet,
    GammaRegressor,
    Lasso,
    LinearRegression,
    LinearSVC,
    LinearSVR,
    LogisticRegression,
    PoissonRegressor,
    Ridge,
    SGDClassifier,
    SGDRegressor,
    TweedieRegressor,
)

CLASSIFIERS = [
    (LogisticRegression, {}),
    (SGDClassifier, {"loss": "log_loss", "random_state": 0}),
    (LinearSVC, {}),
]
REGRESSORS = [
    (LinearRegression, {}),
    (Ridge, {"alpha": 1.0}),
    (Lasso, {"alpha": 0.1}),
    (ElasticNet, {"alpha": 0.01}),
    (SGDRegressor, {"random_state": 0}),
    (LinearSVR, {"C": 10.0, "max_iter": 10000}),
    (TweedieRegressor, {"power": 0, "alpha": 0.01}),
]
GLMS = [(PoissonRegressor, {"alpha": 0.01}), (GammaRegressor, {"alpha": 0.01}), (TweedieRegressor, {"power": 1.5})]


def _fit_compile(cls, params, X_train, y_train, n_bits=8):
    model = cls(n_bits=n_bits, **params).fit(X_train, y_train)
    model.compile(X_train)
    assert model.fhe_circuit.programmable_bootstrap_count == 0
    return model


@pytest.mark.parametrize("dataset", ["scaled_cancer", "scaled_wine"])
@pytest.mark.parametrize(("cls", "params"), CLASSIFIERS, ids=lambda p: getattr(p, "__name__", ""))
def test_classifiers_match_float(cls, params, dataset, request):
    X_train, X_test, y_train, y_test = request.getfixturevalue(dataset)
    model = _fit_compile(cls, params, X_train, y_train)
    simulated = model.predict(X_test, fhe="simulate")
    np.testing.assert_array_equal(simulated, model.predict(X_test))
    float_acc = accuracy_score(y_test, model.sklearn_model.predict(X_test))
    assert accuracy_score(y_test, simulated) >= float_acc - 0.01
    np.testing.assert_array_equal(
        model.decision_function(X_test[:10], fhe="simulate"), model.decision_function(X_test[:10])
    )
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X_test)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)
        assert np.mean(np.abs(proba - model.sklearn_model.predict_proba(X_test))) < 0.02


@pytest.mark.parametrize(("cls", "params"), REGRESSORS, ids=lambda p: getattr(p, "__name__", ""))
def test_regressors_match_float(cls, params, scaled_diabetes):
    X_train, X_test, y_train, y_test = scaled_diabetes
    model = _fit_compile(cls, params, X_train, y_train)
    simulated = model.predict(X_test, fhe="simulate")
    np.testing.assert_array_equal(simulated, model.predict(X_test))
    assert simulated.shape == y_test.shape
    assert r2_score(y_test, simulated) >= r2_score(y_test, model.sklearn_model.predict(X_test)) - 0.02


@pytest.mark.parametrize(("cls", "params"), GLMS, ids=lambda p: getattr(p, "__name__", ""))
def test_glms_apply_link_in_the_clear(cls, params, scaled_diabetes):
    X_train, X_test, y_train, y_test = scaled_diabetes
    model = _fit_compile(cls, params, X_train, y_train)
    simulated = model.predict(X_test, fhe="simulate")
    np.testing.assert_array_equal(simulated, model.predict(X_test))
    assert np.all(simulated > 0)
    float_pred = model.sklearn_model.predict(X_test)
    assert r2_score(y_test, simulated) >= r2_score(y_test, float_pred) - 0.02
    assert np.median(np.abs(simulated / float_pred - 1)) < 0.02


def test_multi_target_regression(scaled_diabetes):
    X_train, X_test, y_train, _ = scaled_diabetes
    Y = np.column_stack([y_train, -2 * y_train + 5])
    model = _fit_compile(LinearRegression, {}, X_train, Y)
    pred = model.predict(X_test, fhe="simulate")
    assert pred.shape == (len(X_test), 2)
    assert r2_score(model.sklearn_model.predict(X_test), pred, multioutput="raw_values").min() > 0.99


@pytest.mark.fhe_execute
@pytest.mark.parametrize(
    ("cls", "loader"), [(LinearRegression, "scaled_diabetes"), (LogisticRegression, "scaled_wine")]
)
def test_execute_equals_simulate(cls, loader, request):
    X_train, X_test, y_train, _ = request.getfixturevalue(loader)
    model = _fit_compile(cls, {}, X_train, y_train)
    rows = X_test[:2]
    if cls is LogisticRegression:
        np.testing.assert_array_equal(
            model.decision_function(rows, fhe="execute"), model.decision_function(rows, fhe="simulate")
        )
    np.testing.assert_array_equal(model.predict(rows, fhe="execute"), model.predict(rows, fhe="simulate"))
    # rows run in parallel threads give the same result
    rows = X_test[:6]
    np.testing.assert_array_equal(model.predict(rows, fhe="execute", n_jobs=2), model.predict(rows, fhe="simulate"))


def test_n_bits_dict_and_validation(scaled_cancer):
    X_train, X_test, y_train, y_test = scaled_cancer
    model = LogisticRegression(n_bits={"op_inputs": 6, "op_weights": 4}).fit(X_train, y_train)
    assert model.quantized_module_.input_quantizer.options.n_bits == 6
    assert model.quantized_module_.ops[0].n_bits == 4
    assert accuracy_score(y_test, model.predict(X_test)) > 0.9
    with pytest.raises(ValueError, match="exactly the keys"):
        LogisticRegression(n_bits={"op_inputs": 6, "weights": 4}).fit(X_train, y_train)
    with pytest.raises(ValueError, match="out of range"):
        LogisticRegression(n_bits=17).fit(X_train, y_train)
    with pytest.raises(ValueError, match="out of range"):
        LogisticRegression(n_bits=0).fit(X_train, y_train)


def test_accumulator_that_cannot_fit_is_a_clear_error(scaled_cancer):
    X_train, _, y_train, _ = scaled_cancer
    with pytest.raises(ValueError, match=r"cannot fit a 16-bit accumulator.*lower the n_bits of the inputs"):
        LogisticRegression(n_bits={"op_inputs": 12, "op_weights": 8}).fit(X_train, y_train)


def test_pipeline_gridsearch_and_clone(cancer, scaled_cancer):
    X_train, X_test, y_train, y_test = cancer
    pipe = Pipeline([("scaler", StandardScaler()), ("clf", LogisticRegression(n_bits=6))]).fit(X_train, y_train)
    assert accuracy_score(y_test, pipe.predict(X_test)) > 0.93
    search = GridSearchCV(LogisticRegression(), {"n_bits": [2, 4, 6, 8]}, cv=3).fit(scaled_cancer[0], scaled_cancer[2])
    scores = dict(zip(search.cv_results_["param_n_bits"], search.cv_results_["mean_test_score"]))
    # n_bits reaches the cloned estimators: 2-bit inputs and weights lose most of the accuracy
    assert scores[8] > scores[2] + 0.3 and search.best_params_["n_bits"] != 2
    assert search.best_estimator_.quantized_module_.input_quantizer.options.n_bits == search.best_params_["n_bits"]
    copy = clone(LogisticRegression(n_bits={"op_inputs": 5, "op_weights": 3}, C=0.5))
    assert copy.get_params()["n_bits"] == {"op_inputs": 5, "op_weights": 3} and copy.C == 0.5
    assert not hasattr(copy, "quantized_module_")


def test_pandas_input(scaled_cancer):
    X_train, X_test, y_train, _ = scaled_cancer
    columns = [f"f{i}" for i in range(X_train.shape[1])]
    model = LogisticRegression().fit(pd.DataFrame(X_train, columns=columns), y_train)
    assert list(model.feature_names_in_) == columns and model.n_features_in_ == len(columns)
    frame = pd.DataFrame(X_test, columns=columns)
    np.testing.assert_array_equal(model.predict(frame), LogisticRegression().fit(X_train, y_train).predict(X_test))
    with pytest.raises(ValueError, match="feature names"):
        model.predict(frame.rename(columns={"f0": "other"}))
    with pytest.raises(ValueError, match="missing"):
        model.predict(frame.iloc[:, :5])
    np.testing.assert_array_equal(model.predict(X_test.tolist()), model.predict(frame))


def test_clear_errors(scaled_cancer):
    X_train, X_test, y_train, _ = scaled_cancer
    with pytest.raises(Exception, match="not fitted"):
        LogisticRegression().predict(X_test)
    model = LogisticRegression().fit(X_train, y_train)
    with pytest.raises(RuntimeError, match="call compile"):
        model.predict(X_test[:1], fhe="execute")
    with pytest.raises(ValueError, match="fhe must be one of"):
        model.predict(X_test, fhe="gpu")
    bad = X_test[:2].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(bad)
    with pytest.raises(ValueError, match="30 features"):
        model.predict(X_test[:, :3])


def test_from_sklearn_model(scaled_cancer):
    X_train, X_test, y_train, _ = scaled_cancer
    float_model = sk_linear.LogisticRegression(C=0.3).fit(X_train, y_train)
    model = LogisticRegression.from_sklearn_model(float_model, X_train, n_bits=8)
    assert model.C == 0.3 and model.sklearn_model is float_model
    assert np.mean(model.predict(X_test) == float_model.predict(X_test)) > 0.97
    with pytest.raises(ValueError, match="needs X"):
        LogisticRegression.from_sklearn_model(float_model)
    with pytest.raises(TypeError, match="wraps LogisticRegression"):
        LogisticRegression.from_sklearn_model(sk_linear.Ridge().fit(X_train, y_train), X_train)


def test_top_level_exports_every_family_estimator():
    from fhe_sklearn import ensemble, glm, linear_model, neural_net, svm, tree, xgb

    families = (linear_model, glm, svm, tree, ensemble, xgb, neural_net)
    expected = {name: module for module in families for name in module.__all__}
    assert set(expected) <= set(fhe_sklearn.__all__)
    for name, module in expected.items():
        cls = getattr(fhe_sklearn, name)
        assert cls is getattr(module, name)
        # an unfitted estimator that sklearn can clone, with its FHE parameters
        params = clone(cls()).get_params()
        assert "n_bits" in params or "module__n_a_bits" in params

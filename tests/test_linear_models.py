import re
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn import linear_model as sk_linear
from sklearn.base import clone, is_classifier
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
from fhe_sklearn.deployment.client_spec import ClientSpec
from fhe_sklearn.exceptions import InputRangeWarning, QuantizationAgreementWarning

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
        LogisticRegression(n_bits={"op_inputs": 14, "op_weights": 8}).fit(X_train, y_train)


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


# -- features far from zero (years, timestamps, prices) ---------------------------------------
OFFSET_FAMILIES = [
    (LinearRegression, {}),
    (Ridge, {}),
    (Lasso, {"alpha": 0.01}),
    (ElasticNet, {"alpha": 0.01}),
    (SGDRegressor, {"random_state": 0}),
    (LinearSVR, {"max_iter": 10000, "random_state": 0}),
    (PoissonRegressor, {}),
    (GammaRegressor, {}),
    (TweedieRegressor, {"power": 1.5}),
    (LogisticRegression, {}),
    (SGDClassifier, {"random_state": 0}),
    (LinearSVC, {"random_state": 0}),
]


def _offset_features(rng, n=800):
    """A year, a Unix timestamp (~1.7e9 s), a price (~1e6) and two centred features."""
    columns = [
        rng.integers(2000, 2021, n).astype(np.float64),
        1.7e9 + rng.uniform(0, 3.15e7, n),
        1e6 + rng.normal(0, 5e4, n),
        rng.normal(size=n),
        rng.normal(size=n),
    ]
    X = np.column_stack(columns)
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    signal = Z @ np.array([0.8, -0.6, 0.7, 0.5, -0.3])
    return X, signal


def _offset_problem(cls, rng):
    X, signal = _offset_features(rng)
    if issubclass(cls, (PoissonRegressor, GammaRegressor, TweedieRegressor)):
        mean = np.exp(1 + 0.4 * signal)
        y = rng.poisson(mean) + 0.5 if cls is not GammaRegressor else rng.gamma(2.0, mean / 2.0)
    elif hasattr(cls, "predict_proba") or cls is LinearSVC:
        y = (signal + 0.3 * rng.normal(size=len(signal)) > 0).astype(int)
    else:
        y = 10 * signal + rng.normal(size=len(signal))
    return train_test_split_(X, y)


def train_test_split_(X, y):
    n_train = int(0.75 * len(X))
    return X[:n_train], X[n_train:], y[:n_train], y[n_train:]


def _float_model_on_raw_features(cls, params, X_train, y_train):
    """The family's float model fitted on standardized features, then re-expressed on the raw
    ones (the scaler folded into coef_/intercept_): a float model of raw offset features that
    does not depend on its solver coping with them."""
    scaler = StandardScaler().fit(X_train)
    float_model = cls._sklearn_class(**params).fit(scaler.transform(X_train), y_train)
    coef = float_model.coef_ / scaler.scale_
    float_model.intercept_ = float_model.intercept_ - np.asarray(float_model.coef_ * scaler.mean_ / scaler.scale_).sum(
        axis=-1
    )
    float_model.coef_ = coef
    return float_model


@pytest.mark.parametrize(("cls", "params"), OFFSET_FAMILIES, ids=lambda p: getattr(p, "__name__", ""))
def test_offset_features_keep_float_accuracy(cls, params):
    X_train, X_test, y_train, y_test = _offset_problem(cls, np.random.default_rng(0))
    float_model = _float_model_on_raw_features(cls, params, X_train, y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizationAgreementWarning)
        model = cls.from_sklearn_model(float_model, X_train)
    float_pred, fhe_pred = float_model.predict(X_test), model.predict(X_test)
    if is_classifier(model):
        assert accuracy_score(y_test, fhe_pred) >= accuracy_score(y_test, float_pred) - 0.01
        assert np.mean(fhe_pred == float_pred) >= 0.98
    else:
        assert r2_score(y_test, fhe_pred) >= r2_score(y_test, float_pred) - 0.01
        assert r2_score(float_pred, fhe_pred) >= 0.99
    # the offsets live in the output zero point, not in the circuit: small accumulator
    assert model.quantized_module_.output_spec.bit_width <= 16
    assert model.quantization_agreement_ >= 0.98


def test_year_feature_reproduction_of_issue_18(cancer):
    """Raw breast_cancer with column 0 a year: float 0.947; FHE was 0.412 (all class 0)."""
    X_train, X_test, y_train, y_test = (a.copy() for a in cancer)
    rng = np.random.default_rng(0)
    X_train[:, 0] = rng.integers(2000, 2021, len(X_train))
    X_test[:, 0] = rng.integers(2000, 2021, len(X_test))
    model = LogisticRegression(max_iter=10000).fit(X_train, y_train)
    model.compile(X_train)
    float_acc = accuracy_score(y_test, model.sklearn_model.predict(X_test))
    fhe_acc = accuracy_score(y_test, model.predict(X_test, fhe="simulate"))
    assert float_acc > 0.9 and fhe_acc >= float_acc - 0.01
    # a feature 1000 + U(0, 1) used to fail fit with "lower the n_bits of the inputs"
    X_train[:, 1] = 1000 + rng.uniform(0, 1, len(X_train))
    model = LinearRegression().fit(X_train, X_train @ np.linspace(-1, 1, X_train.shape[1]))
    assert r2_score(model.sklearn_model.predict(X_train), model.predict(X_train)) > 0.99


# -- out-of-range inputs and the input grid's range ---------------------------------------------
def test_out_of_range_inputs_are_clipped_with_one_warning(diabetes):
    X_train, X_test, y_train, _ = diabetes
    model = LinearRegression().fit(X_train, y_train)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        model.predict(X_train)  # the calibration data is never clipped
    row = X_test[:1].copy()
    row[0, 0] = 1e6
    with pytest.warns(InputRangeWarning, match=r"1 input value\(s\).*feature 0: 1 outside \[") as record:
        answer = model.predict(row, fhe="disable")
    assert len(record) == 1 and record[0].filename == __file__
    edge = row.copy()
    edge[0, 0] = X_train[:, 0].max()
    np.testing.assert_allclose(answer, model.predict(edge))  # clipped to the range
    assert abs(model.sklearn_model.predict(row)[0]) > 1e5  # where the float model extrapolates
    frame = pd.DataFrame(np.vstack([row, row]), columns=[f"c{i}" for i in range(10)])
    named = LinearRegression().fit(pd.DataFrame(X_train, columns=frame.columns), y_train)
    with pytest.warns(InputRangeWarning, match=r"2 input value\(s\).*c0: 2 outside"):
        named.predict(frame)


def test_input_range_percentiles_and_bounds(scaled_cancer):
    X_train, X_test, y_train, y_test = scaled_cancer
    float_acc = accuracy_score(y_test, sk_linear.LogisticRegression().fit(X_train, y_train).predict(X_test))
    model = LogisticRegression(input_range=(1, 99)).fit(X_train, y_train)
    client = ClientSpec.from_model(model).build_model()  # what client.json holds
    quantizer = client.quantized_module_.input_quantizer
    low, high = quantizer.dequant(0), quantizer.dequant(2**8 - 1)
    # the client's grid spans the 1st-99th percentiles, not the training extremes
    np.testing.assert_allclose(low, np.percentile(X_train, 1, axis=0), atol=quantizer.scale.max())
    np.testing.assert_allclose(high, np.percentile(X_train, 99, axis=0), atol=quantizer.scale.max())
    assert np.all(high < X_train.max(axis=0) - quantizer.scale)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputRangeWarning)  # outliers clip, as chosen
        assert accuracy_score(y_test, model.predict(X_test)) >= float_acc - 0.02
    with pytest.warns(InputRangeWarning, match="clipped"):  # the client warns as well
        client.quantize_input(X_test)
    # explicit per-feature bounds, e.g. a known domain wider than the data
    bounds = np.array([np.full(30, -10.0), np.full(30, 15.0)])
    model = LogisticRegression.from_sklearn_model(model.sklearn_model, X_train, input_range=bounds)
    quantizer = model.quantized_module_.input_quantizer
    np.testing.assert_allclose(quantizer.dequant(0), -10.0, atol=quantizer.scale.max())
    np.testing.assert_allclose(quantizer.dequant(255), 15.0, atol=quantizer.scale.max())
    with warnings.catch_warnings():
        warnings.simplefilter("error", InputRangeWarning)
        model.predict(X_test)
    np.testing.assert_array_equal(clone(model).get_params()["input_range"], bounds)


@pytest.mark.parametrize(
    ("input_range", "match"),
    [
        ("quantile", "input_range must be 'minmax'"),
        ((99, 1), "0 <= low < high <= 100"),
        ((0, 101), "0 <= low < high <= 100"),
        (np.zeros((2, 30)), "low < high for every feature"),
        (np.ones((3, 30)), "input_range must be 'minmax'"),
        (np.array([[0.0] * 5, [1.0] * 5]), "bounds for 5 features, X has 30"),
    ],
)
def test_bad_input_range_is_refused(input_range, match, scaled_cancer):
    X_train, _, y_train, _ = scaled_cancer
    with pytest.raises(ValueError, match=re.escape(match)):
        LogisticRegression(input_range=input_range).fit(X_train, y_train)
    with pytest.raises(TypeError, match="unexpected parameters"):
        LogisticRegression.from_sklearn_model(sk_linear.LogisticRegression().fit(X_train, y_train), X_train, clip=True)

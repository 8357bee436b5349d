"""Tree ensembles beyond random forests and xgboost: extra trees, scikit-learn's gradient
boosting (exact and histogram) and LightGBM, each lowered to one circuit."""

import lightgbm
import numpy as np
import pandas as pd
import pytest
from sklearn import ensemble as sk_ensemble
from sklearn.linear_model import LinearRegression
from sklearn.metrics import r2_score

import fhe_sklearn
from fhe_sklearn import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
    LGBMClassifier,
    LGBMRegressor,
)

CLASSIFIERS = [
    (ExtraTreesClassifier, {"n_estimators": 10, "max_depth": 4, "random_state": 0}),
    (GradientBoostingClassifier, {"n_estimators": 10, "max_depth": 3, "random_state": 0}),
    (HistGradientBoostingClassifier, {"max_iter": 10, "max_depth": 3, "random_state": 0}),
    (LGBMClassifier, {"n_estimators": 10, "max_depth": 3, "num_leaves": 8, "random_state": 0}),
]
REGRESSORS = [
    (ExtraTreesRegressor, {"n_estimators": 10, "max_depth": 4, "random_state": 0}),
    (GradientBoostingRegressor, {"n_estimators": 10, "max_depth": 3, "random_state": 0}),
    (HistGradientBoostingRegressor, {"max_iter": 10, "max_depth": 3, "random_state": 0}),
    (LGBMRegressor, {"n_estimators": 10, "max_depth": 3, "num_leaves": 8, "random_state": 0}),
]
ids = lambda p: getattr(p, "__name__", "")  # noqa: E731


@pytest.mark.parametrize("dataset", ["cancer", "wine"])
@pytest.mark.parametrize(("cls", "params"), CLASSIFIERS, ids=ids)
def test_classifiers_follow_the_float_model(cls, params, dataset, request):
    X_train, X_test, y_train, _ = request.getfixturevalue(dataset)
    model = cls(**params).fit(X_train, y_train)  # default n_bits
    model.compile(X_train)
    simulated = model.predict(X_test, fhe="simulate")
    np.testing.assert_array_equal(simulated, model.predict(X_test))
    np.testing.assert_array_equal(model.predict_proba(X_test[:10], fhe="simulate"), model.predict_proba(X_test[:10]))
    assert np.mean(simulated == model.sklearn_model.predict(X_test)) >= 0.97
    proba = model.predict_proba(X_test)
    assert proba.shape == (len(X_test), len(model.classes_))
    assert np.mean(np.abs(proba - model.sklearn_model.predict_proba(X_test))) < 0.03


@pytest.mark.parametrize(("cls", "params"), REGRESSORS, ids=ids)
def test_regressors_follow_the_float_model(cls, params, diabetes):
    X_train, X_test, y_train, y_test = diabetes
    model = cls(**params).fit(X_train, y_train)
    model.compile(X_train)
    simulated = model.predict(X_test, fhe="simulate")
    np.testing.assert_array_equal(simulated, model.predict(X_test))
    float_pred = model.sklearn_model.predict(X_test)
    assert r2_score(float_pred, simulated) > 0.97
    assert r2_score(y_test, simulated) >= r2_score(y_test, float_pred) - 0.03


@pytest.mark.parametrize(
    ("cls", "float_model"),
    [
        (GradientBoostingClassifier, sk_ensemble.GradientBoostingClassifier(n_estimators=5, loss="exponential")),
        (HistGradientBoostingClassifier, sk_ensemble.HistGradientBoostingClassifier(max_iter=5)),
        (ExtraTreesClassifier, sk_ensemble.ExtraTreesClassifier(n_estimators=5, max_depth=3, random_state=0)),
        (LGBMClassifier, lightgbm.LGBMClassifier(n_estimators=5, objective="binary", verbose=-1)),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, type) else v.__name__,
)
def test_from_sklearn_model(cls, float_model, cancer):
    X_train, X_test, y_train, _ = cancer
    float_model.fit(X_train, y_train)
    model = cls.from_sklearn_model(float_model, X_train, n_bits={"op_inputs": 8, "op_leaves": 8})
    assert np.mean(model.predict(X_test) == float_model.predict(X_test)) >= 0.97
    np.testing.assert_allclose(model.predict_proba(X_test), float_model.predict_proba(X_test), atol=0.05)


def test_poisson_and_gamma_losses_apply_their_link_in_the_clear(diabetes):
    X_train, X_test, y_train, _ = diabetes
    for model in (
        HistGradientBoostingRegressor(loss="poisson", max_iter=10, random_state=0),
        LGBMRegressor(objective="gamma", n_estimators=10, random_state=0),
    ):
        model.fit(X_train, y_train)
        assert model.link_ == "log"
        float_pred = model.sklearn_model.predict(X_test)
        relative = np.abs(model.predict(X_test) / float_pred - 1)
        assert np.median(relative) < 0.02 and np.mean(relative < 0.1) >= 0.97


def test_unsupported_models_are_refused_clearly(cancer):
    X_train, _, y_train, _ = cancer
    X_cat = pd.DataFrame({"a": X_train[:, 0], "c": pd.Categorical(np.arange(len(X_train)) % 3)})
    hist = sk_ensemble.HistGradientBoostingClassifier(max_iter=3, categorical_features="from_dtype")
    hist.fit(X_cat, y_train)
    with pytest.raises(ValueError, match="categorical splits"):
        HistGradientBoostingClassifier.from_sklearn_model(hist, X_cat.to_numpy(dtype=float))
    with pytest.raises(ValueError, match="init estimator LinearRegression"):
        GradientBoostingRegressor(n_estimators=3, init=LinearRegression()).fit(X_train, y_train.astype(float))
    lgbm = lightgbm.LGBMClassifier(n_estimators=3, verbose=-1).fit(X_cat, y_train)
    with pytest.raises(ValueError, match="categorical"):
        LGBMClassifier.from_sklearn_model(lgbm, X_cat.to_numpy(dtype=float))
    with pytest.raises(ValueError, match="objective 'cross_entropy'"):
        LGBMRegressor(objective="cross_entropy", n_estimators=3).fit(X_train, y_train.astype(float))
    with pytest.raises(ValueError, match="Input X contains NaN"):
        HistGradientBoostingClassifier(max_iter=3).fit(X_train, y_train).predict(np.full((1, X_train.shape[1]), np.nan))


@pytest.mark.parametrize(("cls", "params"), [CLASSIFIERS[2], REGRESSORS[3]], ids=ids)
def test_dump_load(cls, params, cancer, diabetes):
    X_train, X_test, y_train, _ = cancer if cls is HistGradientBoostingClassifier else diabetes
    model = cls(**params).fit(X_train, y_train)
    loaded = fhe_sklearn.loads(model.dumps())
    np.testing.assert_array_equal(loaded.predict(X_test), model.predict(X_test))


@pytest.mark.fhe_execute
@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (GradientBoostingClassifier, {"n_estimators": 3, "max_depth": 2, "n_bits": 4, "random_state": 0}),
        (HistGradientBoostingClassifier, {"max_iter": 3, "max_depth": 2, "n_bits": 4, "random_state": 0}),
        (ExtraTreesClassifier, {"n_estimators": 3, "max_depth": 2, "n_bits": 4, "random_state": 0}),
        (LGBMClassifier, {"n_estimators": 3, "max_depth": 2, "num_leaves": 4, "n_bits": 4, "random_state": 0}),
    ],
    ids=ids,
)
def test_execute_equals_simulate(cls, params, wine):
    X_train, X_test, y_train, _ = wine
    model = cls(**params).fit(X_train, y_train)
    model.compile(X_train)
    x_q = model.quantize_input(X_test[:1])
    module = model.quantized_module_
    executed = module.quantized_forward(x_q, fhe="execute")
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q, fhe="simulate"))
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q))

"""Encrypted training (fit_encrypted=True): the integer SGD in the clear, simulated and
executed gives the same weights; it learns like float SGD; bad input gets clear errors."""

import warnings

import numpy as np
import pytest
from sklearn.datasets import make_classification, make_regression
from sklearn.linear_model import SGDClassifier as FloatSGDClassifier
from sklearn.linear_model import SGDRegressor as FloatSGDRegressor
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import fhe_sklearn
from fhe_sklearn import SGDClassifier, SGDRegressor
from fhe_sklearn.exceptions import InputRangeWarning


@pytest.fixture(scope="module")
def binary():
    X, y = make_classification(
        n_samples=80, n_features=3, n_informative=2, n_redundant=0, class_sep=1.5, random_state=0
    )
    return StandardScaler().fit_transform(X), y


def _classifier(**params):
    defaults = {"fit_encrypted": True, "parameters_range": (-4, 4), "batch_size": 4, "max_iter": 3, "random_state": 0}
    return SGDClassifier(**{**defaults, **params})


def test_learns_like_float_sgd_and_is_deterministic(binary):
    X, y = binary
    model = _classifier(max_iter=10).fit(X, y)
    float_model = FloatSGDClassifier(loss="log_loss", max_iter=10, tol=None, random_state=0).fit(X, y)
    assert model.sklearn_model_.score(X, y) >= float_model.score(X, y) - 0.05
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputRangeWarning)
        assert model.score(X, y) >= float_model.score(X, y) - 0.05  # the quantized prediction model
    assert model.coef_.shape == (1, 3) and model.n_iter_ == 10 and model.t_ == 10 * (80 // 4)
    again = _classifier(max_iter=10).fit(X, y)
    np.testing.assert_array_equal(again.coef_, model.coef_)
    other = _classifier(max_iter=10, random_state=1).fit(X, y)
    assert not np.array_equal(other.coef_, model.coef_)
    low, high = model.parameters_range
    assert low <= model._training_weights.min() * model._training_plan.weight_scale <= high


def test_simulate_is_disable_bit_for_bit_and_partial_fit_resumes(binary):
    X, y = binary[0][:16], binary[1][:16]
    disabled = _classifier(max_iter=2).fit(X, y)
    stepwise = _classifier()
    stepwise.partial_fit(X, y, classes=[0, 1], fhe="simulate")
    stepwise.partial_fit(X, y, fhe="disable")  # mixing modes: the same integers
    np.testing.assert_array_equal(stepwise._training_weights, disabled._training_weights)
    simulated = _classifier(max_iter=2).fit(X, y, fhe="simulate")  # the circuit is cached per plan
    np.testing.assert_array_equal(simulated._training_weights, disabled._training_weights)
    assert len(simulated.training_weights_history()) == 2


def test_multiclass_one_vs_rest_and_regression_track_float_sgd():
    X, y = make_classification(
        n_samples=150, n_features=4, n_informative=3, n_redundant=0, n_classes=3, class_sep=2.0, random_state=1
    )
    X = StandardScaler().fit_transform(X)
    model = _classifier(max_iter=5, batch_size=8).fit(X, y)
    assert model.coef_.shape == (3, 4) and list(model.classes_) == [0, 1, 2]
    float_acc = FloatSGDClassifier(loss="log_loss", max_iter=5, tol=None, random_state=0).fit(X, y).score(X, y)
    assert model.sklearn_model_.score(X, y) >= float_acc - 0.05

    X, y = make_regression(n_samples=120, n_features=3, noise=10.0, random_state=0)
    X = StandardScaler().fit_transform(X)
    regressor = SGDRegressor(
        fit_encrypted=True, parameters_range=(-2, 2), max_iter=5, random_state=0, encrypted_learning_rate=0.2
    ).fit(X, y)
    float_r2 = FloatSGDRegressor(max_iter=5, tol=None, random_state=0).fit(X, y).score(X, y)
    assert regressor.sklearn_model_.score(X, y) >= float_r2 - 0.1
    assert regressor.predict(X).shape == (120,)


def test_sklearn_tools_and_model_files(binary):
    X, y = binary
    pipeline = make_pipeline(StandardScaler(), _classifier()).fit(X, y)
    assert pipeline.score(X, y) > 0.8
    search = GridSearchCV(_classifier(), {"encrypted_learning_rate": [0.25, 0.5]}, cv=2).fit(X, y)
    assert search.best_params_["encrypted_learning_rate"] in (0.25, 0.5)
    model = _classifier().fit(X, y)
    loaded = fhe_sklearn.loads(model.dumps())
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    with pytest.raises(ValueError, match="no encrypted-training state"):
        loaded.partial_fit(X, y)
    # fit_encrypted=False is the float wrapper, as before
    float_model = SGDClassifier(random_state=0).fit(X, y)
    expected = FloatSGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    np.testing.assert_array_equal(float_model.coef_, expected.coef_)


@pytest.mark.parametrize(
    "params, fit, match",
    [
        ({"parameters_range": None}, {}, "needs parameters_range"),
        ({"parameters_range": (0, 1)}, {}, "low < 0 < high"),
        ({"early_stopping": True}, {}, "early_stopping"),
        ({"loss": "hinge"}, {}, "supports loss='log_loss'"),
        ({"training_bits": {"bogus": 3}}, {}, "training_bits"),
        ({"batch_size": 0}, {}, "batch_size"),
        ({}, {"fhe": "bogus"}, "fhe must be one of"),
        ({"fit_encrypted": False}, {"fhe": "simulate"}, "set fit_encrypted=True"),
        ({"batch_size": 200}, {}, "at least batch_size=200 rows"),
    ],
)
def test_bad_parameters_are_refused(binary, params, fit, match):
    with pytest.raises(ValueError, match=match):
        _classifier(**params).fit(*binary, **fit)


def test_bad_data_is_refused(binary):
    X, y = binary
    with pytest.raises(ValueError, match="NaN"):
        _classifier().fit(np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X), y)
    with pytest.raises(ValueError, match="classes must be passed"):
        _classifier().partial_fit(X, y)
    model = _classifier()
    model.partial_fit(X, y, classes=[0, 1])
    with pytest.raises(ValueError, match=r"labels \[7\] outside the classes"):
        model.partial_fit(X[:8], np.full(8, 7))
    with pytest.raises(ValueError, match="outside the range the encrypted training was set up on"):
        model.partial_fit(X * 10, y)
    with pytest.raises(ValueError, match="features"):
        model.partial_fit(X[:, :2], y)
    assert not hasattr(SGDClassifier(), "partial_fit")  # float SGD: as the float wrapper, no partial_fit

"""xgboost and LightGBM wrappers take every keyword their float classes take (``**kwargs``),
with get_params / set_params / clone / GridSearchCV working as in those libraries."""

import lightgbm
import numpy as np
import pytest
import xgboost
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from fhe_sklearn import LGBMClassifier, XGBClassifier, loads


@pytest.fixture(scope="module")
def small_cancer(cancer):
    X_train, X_test, y_train, y_test = cancer
    return X_train[:120, :6], X_test[:40, :6], y_train[:120], y_test[:40]


def test_lightgbm_keywords_reach_the_float_model(small_cancer):
    X, X_test, y, _ = small_cancer
    model = LGBMClassifier(verbose=-1, min_child_samples=5, n_estimators=5, max_depth=2, min_data_in_bin=2)
    assert model.get_params()["verbose"] == -1 and model.get_params()["min_data_in_bin"] == 2
    model.fit(X, y)
    float_params = model.sklearn_model_.get_params()
    assert float_params["verbose"] == -1 and float_params["min_child_samples"] == 5
    assert float_params["min_data_in_bin"] == 2
    reference = lightgbm.LGBMClassifier(verbose=-1, min_child_samples=5, n_estimators=5, max_depth=2, min_data_in_bin=2)
    reference.fit(X, y)
    np.testing.assert_allclose(model.sklearn_model_.predict_proba(X_test), reference.predict_proba(X_test))
    assert np.mean(model.predict(X_test) == reference.predict(X_test)) >= 0.9
    wrapped = LGBMClassifier.from_sklearn_model(reference, X)
    assert wrapped.kwargs == {"verbose": -1, "min_data_in_bin": 2} and wrapped.min_child_samples == 5


def test_xgboost_keywords_set_params_clone_and_grid_search(small_cancer):
    X, X_test, y, _ = small_cancer
    model = XGBClassifier(tree_method="hist", eval_metric="logloss", n_estimators=4, max_depth=2)
    assert model.get_params()["tree_method"] == "hist" and model.get_params()["eval_metric"] == "logloss"
    # a keyword xgboost takes through its own **kwargs (a booster parameter), as in xgboost
    model.set_params(disable_default_eval_metric=1, n_bits=5)
    assert model.kwargs == {"disable_default_eval_metric": 1} and model.n_bits == 5
    copy = clone(model)
    assert copy.get_params() == model.get_params() and copy.kwargs is not model.kwargs
    assert "disable_default_eval_metric=1" in repr(copy)
    model.fit(X, y)
    assert model.sklearn_model_.get_params()["disable_default_eval_metric"] == 1
    assert model.sklearn_model_.get_params()["eval_metric"] == "logloss"
    reference = xgboost.XGBClassifier(
        tree_method="hist", eval_metric="logloss", n_estimators=4, max_depth=2, disable_default_eval_metric=1
    ).fit(X, y)
    np.testing.assert_allclose(model.sklearn_model_.predict_proba(X_test), reference.predict_proba(X_test))
    with pytest.raises(ValueError, match="Invalid parameter 'nope' for estimator"):
        model.set_params(nope__x=1)

    search = GridSearchCV(clone(model), {"n_bits": [2, 5]}, cv=2).fit(X, y)
    assert search.best_params_["n_bits"] in (2, 5)
    best = search.best_estimator_
    assert best.kwargs == {"disable_default_eval_metric": 1}
    assert best.sklearn_model_.get_params()["tree_method"] == "hist"


def test_extra_keywords_survive_dump_and_load(small_cancer):
    X, X_test, y, _ = small_cancer
    model = LGBMClassifier(verbose=-1, min_child_samples=5, n_estimators=3, max_depth=2, extra_trees=True).fit(X, y)
    loaded = loads(model.dumps())
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(X_test), model.predict_proba(X_test))

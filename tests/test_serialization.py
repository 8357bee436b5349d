import io
import json

import numpy as np
import pytest

import fhe_sklearn
from fhe_sklearn import serialization

ALL = [name for name in fhe_sklearn.__all__ if name[0].isupper()]
SMALL = {"n_estimators": 3, "max_depth": 2}


def _fitted(name, cancer, scaled_wine, scaled_diabetes):
    cls = getattr(fhe_sklearn, name)
    params = {k: v for k, v in SMALL.items() if k in cls().get_params()}
    if name.endswith(("Classifier", "Regression", "SVC")) and name != "LinearRegression":
        X_train, X_test, y_train, _ = scaled_wine if "Tree" in name or "Forest" in name else cancer
    else:
        X_train, X_test, y_train, _ = scaled_diabetes
    if name in ("PoissonRegressor", "GammaRegressor"):
        y_train = np.abs(y_train) + 1
    return cls(**params).fit(X_train, y_train), X_train, X_test


@pytest.mark.parametrize("name", ALL)
def test_dump_load_predicts_identically(name, cancer, scaled_wine, scaled_diabetes, tmp_path):
    model, X_train, X_test = _fitted(name, cancer, scaled_wine, scaled_diabetes)
    path = tmp_path / "model.json"
    model.dump(path)
    loaded = fhe_sklearn.load(path)
    assert type(loaded) is type(model) and repr(loaded.get_params()) == repr(model.get_params())  # NaN-safe
    np.testing.assert_array_equal(loaded.predict(X_test), model.predict(X_test))
    if hasattr(model, "predict_proba"):
        np.testing.assert_array_equal(loaded.predict_proba(X_test), model.predict_proba(X_test))
    # a loaded model compiles again and simulates what the saved one computed
    loaded.compile(X_train)
    np.testing.assert_array_equal(loaded.predict(X_test[:15], fhe="simulate"), model.predict(X_test[:15]))
    with pytest.raises(AttributeError, match="float model was not saved"):
        _ = loaded.sklearn_model


def test_file_objects_and_strings(cancer):
    X_train, X_test, y_train, _ = cancer
    model = fhe_sklearn.DecisionTreeClassifier(max_depth=3).fit(X_train, y_train)
    buffer = io.StringIO()
    model.dump(buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(fhe_sklearn.load(buffer).predict(X_test), model.predict(X_test))
    np.testing.assert_array_equal(fhe_sklearn.loads(model.dumps()).predict(X_test), model.predict(X_test))
    assert "pickle" not in model.dumps() and json.loads(model.dumps())["format_version"] == 1


def test_bad_files_are_refused_clearly(cancer):
    X_train, _, y_train, _ = cancer
    text = fhe_sklearn.LogisticRegression().fit(X_train, y_train).dumps()
    data = json.loads(text)
    with pytest.raises(ValueError, match="format version 99"):
        fhe_sklearn.loads(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ValueError, match=r"saved by fhe_sklearn '0\.0\.1'"):
        fhe_sklearn.loads(json.dumps({**data, "library_version": "0.0.1"}))
    with pytest.raises(ValueError, match="invalid JSON"):
        fhe_sklearn.loads(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not a fhe_sklearn model file"):
        fhe_sklearn.loads(json.dumps({"hello": 1}))
    with pytest.raises(ValueError, match="only fhe_sklearn classes"):
        fhe_sklearn.loads(json.dumps({**data, "class": "os.system"}))
    with pytest.raises(ValueError, match="corrupted"):
        fhe_sklearn.loads(json.dumps({**data, "params": {"__dict__": {"no_such_param": 1}}}))


def test_values_round_trip():
    value = {1: (np.arange(3, dtype=np.int16), "a"), "x": [np.float32(2.5), None, {"y": np.zeros((2, 0))}]}
    back = serialization.decode(json.loads(json.dumps(serialization.encode(value))))
    assert back[1][0].dtype == np.int16 and back[1][0].tolist() == [0, 1, 2] and back[1][1] == "a"
    assert back["x"][0] == 2.5 and back["x"][1] is None and back["x"][2]["y"].shape == (2, 0)
    with pytest.raises(TypeError, match="cannot serialize"):
        serialization.encode(object())

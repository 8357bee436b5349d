import copy
import io
import json
import os
import pickle
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fhe_sklearn
from fhe_sklearn import serialization
from fhe_sklearn.serialization.allowed import estimator_class, estimator_names, quantization_classes

ALL = [name for name in fhe_sklearn.__all__ if name[0].isupper()]
SMALL = {"n_estimators": 3, "max_depth": 2, "max_epochs": 5, "random_state": 0}


def _fitted(name, cancer, scaled_wine, scaled_diabetes):
    cls = getattr(fhe_sklearn, name)
    params = {k: v for k, v in SMALL.items() if k in cls().get_params()}
    if name.endswith(("Classifier", "Regression", "SVC")) and name != "LinearRegression":
        X_train, X_test, y_train, _ = scaled_wine if "Tree" in name or "Forest" in name else cancer
    else:
        X_train, X_test, y_train, _ = scaled_diabetes
    if name in ("PoissonRegressor", "GammaRegressor"):
        y_train = np.abs(y_train) + 1
    if name.startswith("KNeighbors"):  # its circuit grows with the training set: 30 scaled points
        X_train, X_test, y_train, _ = scaled_wine
        X_train, y_train = X_train[:30], y_train[:30]
    return cls(**params).fit(X_train, y_train), X_train, X_test


def _objects(node):
    """Class names of every object in a model file's JSON."""
    if isinstance(node, list):
        return [name for v in node for name in _objects(v)]
    if not isinstance(node, dict):
        return []
    own = [node["__object__"]] if "__object__" in node else []
    return own + [name for v in node.values() for name in _objects(v)]


def test_every_public_estimator_is_allowed_and_nothing_else():
    assert estimator_names() == sorted(ALL)
    assert all(estimator_class(name) is getattr(fhe_sklearn, name) for name in ALL)
    assert estimator_class("dump") is None and estimator_class("FHEEstimatorMixin") is None
    assert all(isinstance(cls, type) for cls in quantization_classes().values())
    assert "FloatNetClassifier" not in quantization_classes() and "main" not in quantization_classes()


@pytest.mark.parametrize("name", ALL)
def test_dump_load_predicts_identically(name, cancer, scaled_wine, scaled_diabetes, tmp_path):
    model, X_train, X_test = _fitted(name, cancer, scaled_wine, scaled_diabetes)
    path = tmp_path / "model.json"
    model.dump(path)
    text = path.read_text()
    # plain arrays and allowed quantization objects only: no skorch/torch network, no pickle
    assert "skorch" not in text and "torch" not in text and "pickle" not in text
    assert set(_objects(json.loads(text))) <= set(quantization_classes())
    loaded = fhe_sklearn.load(path)
    assert type(loaded) is type(model) and repr(loaded.get_params()) == repr(model.get_params())  # NaN-safe
    np.testing.assert_array_equal(loaded.predict(X_test), model.predict(X_test))
    if hasattr(model, "predict_proba"):
        np.testing.assert_array_equal(loaded.predict_proba(X_test), model.predict_proba(X_test))
    # a loaded model compiles again and simulates what the saved one computed
    loaded.compile(X_train)
    rows = X_test[: 5 if name.startswith("KNeighbors") else 15]  # k-NN simulates slowly
    np.testing.assert_array_equal(loaded.predict(rows, fhe="simulate"), model.predict(rows))
    with pytest.raises(AttributeError, match="float model was not saved"):
        _ = loaded.sklearn_model


@pytest.mark.parametrize("labels", [np.array(["no", "yes"]), np.array(["no", "yes"], dtype=object)])
def test_string_labels_and_feature_names_round_trip(labels, cancer):
    pd = pytest.importorskip("pandas")
    X_train, X_test, y_train, _ = cancer
    frame = pd.DataFrame(X_train[:, :4], columns=["a", "b", "c", "d"])
    model = fhe_sklearn.LogisticRegression().fit(frame, labels[y_train])
    loaded = fhe_sklearn.loads(model.dumps())
    assert loaded.classes_.dtype == model.classes_.dtype and list(loaded.feature_names_in_) == ["a", "b", "c", "d"]
    test = pd.DataFrame(X_test[:, :4], columns=["a", "b", "c", "d"])
    np.testing.assert_array_equal(loaded.predict(test), model.predict(test))


def test_file_objects_and_strings(cancer):
    X_train, X_test, y_train, _ = cancer
    model = fhe_sklearn.DecisionTreeClassifier(max_depth=3).fit(X_train, y_train)
    buffer = io.StringIO()
    model.dump(buffer)
    buffer.seek(0)
    np.testing.assert_array_equal(fhe_sklearn.load(buffer).predict(X_test), model.predict(X_test))
    binary = io.BytesIO(model.dumps().encode())
    np.testing.assert_array_equal(fhe_sklearn.load(binary).predict(X_test), model.predict(X_test))
    np.testing.assert_array_equal(fhe_sklearn.loads(model.dumps()).predict(X_test), model.predict(X_test))
    assert json.loads(model.dumps())["format_version"] == serialization.FORMAT_VERSION == 2


def test_splits_quantization_round_trips(scaled_wine):
    X_train, X_test, y_train, _ = scaled_wine
    model = fhe_sklearn.XGBClassifier(n_estimators=3, max_depth=2, quantization="splits").fit(X_train, y_train)
    loaded = fhe_sklearn.loads(model.dumps())
    np.testing.assert_array_equal(loaded.predict_proba(X_test), model.predict_proba(X_test))


def test_values_round_trip():
    value = {1: (np.arange(3, dtype=np.int16), "a"), "x": [np.float32(2.5), None, {"y": np.zeros((2, 0))}]}
    back = serialization.decode(json.loads(json.dumps(serialization.encode(value))))
    assert back[1][0].dtype == np.int16 and back[1][0].tolist() == [0, 1, 2] and back[1][1] == "a"
    assert back["x"][0] == 2.5 and back["x"][1] is None and back["x"][2]["y"].shape == (2, 0)
    with pytest.raises(TypeError, match="cannot serialize"):
        serialization.encode(object())
    with pytest.raises(TypeError, match="only numbers and strings"):
        serialization.encode(np.array([None, 1.5], dtype=object))


def test_objects_that_are_not_allowed_are_not_saved(cancer):
    X_train, _, y_train, _ = cancer
    model = fhe_sklearn.LogisticRegression().fit(X_train, y_train)
    model.extra_ = object()
    with pytest.raises(TypeError, match=r"cannot save a builtins\.object"):
        model.dumps()


# -- files from an attacker: refused, with no side effect ----------------------------------
@pytest.fixture(scope="module")
def logistic_file():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return json.loads(fhe_sklearn.LogisticRegression(max_iter=1000).fit(X[:, :4], y).dumps())


@pytest.fixture(scope="module")
def network_file():
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return json.loads(fhe_sklearn.NeuralNetClassifier(max_epochs=3, random_state=0).fit(X[:, :4], y).dumps())


def _fields(data, *path):
    """The fields of a nested object: _fields(data, "quantized_module_", "input_quantizers", 0)."""
    node = data["state"][path[0]]
    for key in path[1:]:
        node = node["fields"][key] if isinstance(key, str) else node[key]
    return node["fields"]


def _loads(data):
    return fhe_sklearn.loads(json.dumps(data))


def test_a_subclass_outside_the_package_is_not_saved(cancer):
    class LogisticRegression(fhe_sklearn.LogisticRegression):  # same name, not the package's class
        pass

    X_train, _, y_train, _ = cancer
    with pytest.raises(TypeError, match="only fhe_sklearn estimators are saved"):
        LogisticRegression(n_bits=4).fit(X_train[:40], y_train[:40]).dumps()
    assert estimator_class("LogisticRegression") is fhe_sklearn.LogisticRegression


def test_cli_main_is_never_called(logistic_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "deployment"
    argv = ["compile", "breast_cancer", "--output", str(out), "--n-check", "1"]
    for name in ("fhe_sklearn.cli.main", "main", "fhe_sklearn.cli"):
        with pytest.raises(ValueError, match=r"class: .* is not a fhe_sklearn estimator"):
            _loads({**logistic_file, "class": name, "params": {"__dict__": {"argv": argv}}})
    nested = json.loads(json.dumps(logistic_file))
    nested["state"]["quantized_module_"] = {"__object__": "fhe_sklearn.cli.main", "fields": {"argv": argv}}
    with pytest.raises(ValueError, match=r"state\.quantized_module_: class 'fhe_sklearn.cli.main' is not allowed"):
        _loads(nested)
    nested["state"]["quantized_module_"] = {"__object__": "main", "fields": {"argv": argv}}
    with pytest.raises(ValueError, match="class 'main' is not allowed"):
        _loads(nested)
    assert not out.exists() and list(tmp_path.iterdir()) == []


class _Payload:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def test_pickle_payload_never_runs(network_file, tmp_path):
    """skorch's NeuralNet.__setstate__ unpickles its bytes: a crafted net must never be rebuilt."""
    marker = tmp_path / "payload_ran"
    blob = np.frombuffer(pickle.dumps({"x": _Payload(str(marker))}), dtype=np.uint8)
    state = {"device": "cpu", "__cuda_dependent_attributes__": serialization.encode(blob)}
    for name in ("FloatNetClassifier", "fhe_sklearn.neural_net.FloatNetClassifier", "NeuralNetClassifier"):
        net = {"__object__": name, "fields": state}
        as_attribute = json.loads(json.dumps(network_file))
        as_attribute["state"]["sklearn_model_"] = net
        with pytest.raises(ValueError, match=r"state\.sklearn_model_: not a fitted attribute name"):
            _loads(as_attribute)
        as_other_attribute = json.loads(json.dumps(network_file))
        as_other_attribute["state"]["net_"] = net
        with pytest.raises(ValueError, match=r"state\.net_: an object .* is not allowed here"):
            _loads(as_other_attribute)
        inside = json.loads(json.dumps(network_file))
        _fields(inside, "quantized_module_")["ops"][0] = net
        with pytest.raises(ValueError, match=r"ops\[0\]: class .* is not allowed"):
            _loads(inside)
        top_level = {**network_file, "class": name, "params": {"__dict__": state}}
        message = "has no parameter" if name == "NeuralNetClassifier" else "is not a fhe_sklearn estimator"
        with pytest.raises(ValueError, match=message):
            _loads(top_level)
    assert not marker.exists()


def test_bytes_dtype_is_refused_before_allocating(logistic_file):
    data = json.loads(json.dumps(logistic_file))
    data["state"]["coef_"] = {"__ndarray__": ["a"], "dtype": "|S100000000", "shape": [1]}
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"state\.coef_: dtype '\|S100000000' is not allowed"):
            _loads(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5e6, f"{peak / 1e6:.0f} MB allocated to refuse a 200-byte array"


def test_deep_nesting_is_refused_without_recursion_error(logistic_file):
    text = json.dumps(logistic_file)
    for opening, closing in (("[", "]"), ('{"a":', "}")):
        deep = text.replace('"params": {', '"params": {"x": ' + opening * 100_000 + "1" + closing * 100_000 + ", ", 1)
        with pytest.raises(ValueError, match="nested 100002 deep, the limit is 64"):
            fhe_sklearn.loads(deep)
    # brackets inside strings do not count
    assert serialization._json.nesting_depth('{"a": "[[[[{{\\"[[", "b": [[1]]}') == 3


def test_size_limits(logistic_file, tmp_path):
    text = json.dumps(logistic_file)
    with pytest.raises(ValueError, match="over the 100-byte limit"):
        fhe_sklearn.loads(text, max_bytes=100)
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(ValueError, match="over the 100-byte limit"):
        fhe_sklearn.load(path, max_bytes=100)
    assert fhe_sklearn.load(path, max_bytes=len(text)).n_features_in_ == 4
    with pytest.raises(ValueError, match="invalid JSON"):
        fhe_sklearn.loads(text.replace('"n_features_in_": 4', '"n_features_in_": ' + "9" * 5000))
    with pytest.raises(ValueError, match="not UTF-8"):
        fhe_sklearn.loads(b"\xff\xfe")


def _set(path, value):
    """A mutation of a model file: set ``value`` at ``path`` (top-level keys, params and
    state by key; other paths go through the fields of the objects of the state)."""

    def mutate(data):
        if path[0] in ("state", "params") or len(path) == 1:
            node = data
            for key in path[:-1]:
                node = node[key]
        else:  # through the state's objects: str keys are fields, int keys list positions
            node = data["state"][path[0]]
            for key in path[1:-1]:
                node = node["fields"][key] if isinstance(key, str) else node[key]
            node = node["fields"] if isinstance(path[-1], str) else node
        node[path[-1]] = value

    return mutate


def _array(values, dtype="<f8", shape=None):
    return {"__ndarray__": values, "dtype": dtype, "shape": [len(values)] if shape is None else shape}


MUTATIONS = {
    "unknown class": (_set(["class"], "fhe_sklearn.NoSuchModel"), r"class: 'fhe_sklearn.NoSuchModel' is not a"),
    "non-estimator class": (_set(["class"], "QuantizedModule"), r"class: 'QuantizedModule' is not a fhe_sklearn est"),
    "sklearn float class": (_set(["class"], "sklearn.linear_model.LogisticRegression"), "is not a fhe_sklearn"),
    "unknown nested class": (
        _set(["quantized_module_", "input_quantizers", 0], {"__object__": "NoSuchQuantizer", "fields": {}}),
        r"input_quantizers\[0\]: class 'NoSuchQuantizer' is not allowed",
    ),
    "input scale 0": (
        _set(["quantized_module_", "input_quantizers", 0, "scale"], _array([0.0, 1.0, 1.0, 1.0])),
        r"input_quantizers\[0\]: UniformQuantizer: quantization scale must be positive and finite",
    ),
    "input scale NaN": (
        _set(["quantized_module_", "input_quantizers", 0, "scale"], _array([float("nan")] * 4)),
        "quantization scale must be positive and finite",
    ),
    "fractional zero point": (
        _set(["quantized_module_", "input_quantizers", 0, "zero_point"], _array([0.5] * 4)),
        r"input_quantizers\[0\]: UniformQuantizer: quantization zero point must be integers",
    ),
    "n_bits=99 in a quantizer": (
        _set(["quantized_module_", "input_quantizers", 0, "options", "n_bits"], 99),
        r"options: QuantizationOptions: n_bits=99 is out of range",
    ),
    "n_bits=99 parameter": (_set(["params", "__dict__", "n_bits"], 99), r"params: n_bits=99 is out of range"),
    "unknown parameter": (_set(["params", "__dict__", "argv"], ["x"]), r"params: LogisticRegression has no param"),
    "invalid sklearn parameter": (_set(["params", "__dict__", "C"], -1.0), r"params: The 'C' parameter"),
    "object dtype": (_set(["state", "coef_"], _array([1, "a"], "|O")), r"state\.coef_: dtype '\|O' is not allowed"),
    "str dtype": (_set(["state", "coef_"], _array(["a"], "<U1")), r"state\.coef_: dtype '<U1' is not allowed"),
    "strings outside labels": (
        _set(["state", "coef_"], {"__strings__": ["a"], "dtype": "<U1", "shape": [1]}),
        r"state\.coef_: a string array is not allowed here",
    ),
    "void dtype": (_set(["state", "coef_"], _array([1], "|V8")), r"dtype '\|V8' is not allowed"),
    "text in a float array": (_set(["state", "coef_"], _array(["1.0"])), "holds numbers only"),
    "shape mismatch": (_set(["state", "coef_"], _array([1.0, 2.0], shape=[3])), r"shape \[3\] does not match"),
    "huge shape": (_set(["state", "coef_"], _array([], shape=[0, 2**40])), "shape must be a list of at most"),
    "huge input shape": (
        _set(["quantized_module_", "input_shapes"], [{"__tuple__": [2**40, 2**40]}]),
        r"input_shapes\[0\]: over 262144 values per sample",
    ),
    "int out of range": (_set(["state", "coef_"], _array([300], "|i1")), "out of the range of int8"),
    "weights shape": (
        _set(["quantized_module_", "ops", 0, "weight_q"], _array([1, 2], "<i8")),
        r"quantized_module_\.ops\[0\]: does not run on its input range \(ValueError: matmul",
    ),
    "weights over their declared range": (
        _set(["quantized_module_", "ops", 0, "weight_q"], _array([1000] * 4, "<i8", shape=[4, 1])),
        r"quantized_module_\.ops\[0\]: computes integers outside the range its output_spec declares",
    ),
    "spec lo > hi": (
        _set(["quantized_module_", "ops", 0, "output_spec", "lo"], _array([10**6], "<i8")),
        r"output_spec: TensorSpec: TensorSpec lo must not exceed hi",
    ),
    "spec over 16 bits": (
        _set(["quantized_module_", "ops", 0, "output_spec", "hi"], _array([2**20], "<i8")),
        r"ops\[0\]\.output_spec: QuantizedGemm 'linear' needs a 22-bit integer",
    ),
    "inconsistent input spec": (
        _set(["quantized_module_", "ops", 0, "input_specs", 0, "zero_point"], _array([1, 1, 1, 1], "<i8")),
        r"ops\[0\]\.input_specs\[0\]: differs from the spec of its input 'input'",
    ),
    "method overwritten": (
        _set(["quantized_module_", "ops", 0, "q_impl"], 1),
        r"ops\[0\]\.q_impl: cannot overwrite QuantizedGemm\.q_impl",
    ),
    "private field": (_set(["quantized_module_", "ops", 0, "__class__"], 1), "field names are public identifiers"),
    "op reads an unknown input": (
        _set(["quantized_module_", "ops", 0, "inputs"], ["elsewhere"]),
        r"quantized_module_: QuantizedModule: op 'linear' reads \['elsewhere'\]",
    ),
    "n_features_in_ mismatch": (_set(["state", "n_features_in_"], 7), r"state\.n_features_in_: is 7, the integer"),
    "classes_ duplicated": (_set(["state", "classes_"], _array([0, 0], "<i8")), r"state\.classes_: labels must be"),
    "too few classes for the scores": (
        _set(["state", "classes_"], _array([0], "<i8")),
        r"state: the fitted attributes do not fit the integer graph \(IndexError",
    ),
    "missing module": (_set(["state", "quantized_module_"], None), r"state\.quantized_module_: must be a Quantized"),
    "fitted attribute shadows a method": (_set(["state", "predict_"], 1), None),
    "sklearn_model_": (_set(["state", "sklearn_model_"], 1), r"state\.sklearn_model_: not a fitted attribute"),
    "single_target_ not a bool": (_set(["state", "single_target_"], "yes"), r"single_target_: must be true or false"),
    "list as a dict key": (
        _set(["params", "__dict__", "class_weight"], {"__items__": [[[1], 2.0]]}),
        r"params\.class_weight\[0\]\.key: a list cannot be a dict key",
    ),
    "two tags": (_set(["state", "coef_"], {"__tuple__": [], "__dict__": {}}), "expected one of"),
    "unknown top-level key": (_set(["extra"], 1), r"\(top level\): unknown keys \['extra'\]"),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_malformed_fields_are_refused_by_name(case, logistic_file):
    mutate, message = MUTATIONS[case]
    data = json.loads(json.dumps(logistic_file))
    mutate(data)
    if message is None:  # a plain new attribute is kept, but may not shadow the class
        assert _loads(data).predict_ == 1
        data["state"]["predict_proba"] = 1
        message = r"state\.predict_proba: not a fitted attribute name"
    with pytest.raises(ValueError, match=message):
        _loads(data)


def test_valid_file_still_loads(logistic_file):
    # the mutations above start from a file that loads
    assert _loads(logistic_file).n_features_in_ == 4


def test_module_post_processing_is_a_saved_field(logistic_file):
    assert _fields(logistic_file, "quantized_module_")["post_processing"] is None
    data = copy.deepcopy(logistic_file)
    _fields(data, "quantized_module_")["post_processing"] = "softmax"
    assert _loads(data).quantized_module_.post_processing == "softmax"
    _fields(data, "quantized_module_")["post_processing"] = "sigmoid"
    with pytest.raises(ValueError, match=r"quantized_module_.*post_processing must be None or one of"):
        _loads(data)
    del _fields(data, "quantized_module_")["post_processing"]  # a file written before the field
    assert _loads(data).quantized_module_.post_processing is None


def test_network_file_is_checked_too(network_file):
    data = json.loads(json.dumps(network_file))
    ops = data["state"]["quantized_module_"]["fields"]["ops"]
    lookup = next(i for i, op in enumerate(ops) if op["__object__"] == "TableLookup")  # after a truncation
    _fields(data, "quantized_module_", "ops", lookup)["tables"] = _array([1, 2, 3], "<i8")
    with pytest.raises(ValueError, match=rf"quantized_module_\.ops\[{lookup}\]: does not run on its input range"):
        _loads(data)
    data = json.loads(json.dumps(network_file))
    data["state"]["output_bias_"] = _array([float("inf"), 0.0])
    with pytest.raises(ValueError, match=r"state\.output_bias_: must be finite"):
        _loads(data)
    data = json.loads(json.dumps(network_file))
    data["params"]["__dict__"]["optimizer"] = "adagrad"
    with pytest.raises(ValueError, match="params: unknown optimizer 'adagrad'"):
        _loads(data)


def test_bad_versions_and_formats(logistic_file):
    text = json.dumps(logistic_file)
    with pytest.raises(ValueError, match="format version 99"):
        _loads({**logistic_file, "format_version": 99})
    with pytest.raises(ValueError, match=r"saved by fhe_sklearn '0\.0\.1'"):
        _loads({**logistic_file, "library_version": "0.0.1"})
    with pytest.raises(ValueError, match="invalid JSON"):
        fhe_sklearn.loads(text[: len(text) // 2])
    with pytest.raises(ValueError, match="not a fhe_sklearn model file"):
        fhe_sklearn.loads(json.dumps({"hello": 1}))


# -- any mutation: a clear ValueError, or a model that predicts ----------------------------
def _leaf_paths(node, prefix=()):
    """Paths to every value of a JSON tree (containers included)."""
    yield prefix
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from _leaf_paths(value, (*prefix, key))


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["__ndarray__", "dtype", "shape", "__object__", "fields", "a"]), inner)
    ),
    max_leaves=6,
)


def _at(node, path):
    for key in path:
        node = node[key]
    return node


@pytest.fixture(scope="module")
def tree_file():
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    return json.loads(fhe_sklearn.RandomForestClassifier(n_estimators=2, max_depth=2).fit(X, y).dumps())


@pytest.mark.parametrize("file_fixture", ["logistic_file", "tree_file"])
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_mutations_give_value_errors_only(file_fixture, data, request):
    original = request.getfixturevalue(file_fixture)
    paths = list(_leaf_paths(original))[1:]
    if data.draw(st.booleans()):  # any value replaced by any JSON
        path, replacement = data.draw(st.sampled_from(paths)), data.draw(_JSON)
    else:  # one number of an array or one scalar replaced by an extreme or odd number
        numbers = [p for p in paths if "__ndarray__" in p[-2:] or isinstance(_at(original, p), (int, float))]
        path = data.draw(st.sampled_from(numbers))
        replacement = data.draw(st.integers(-(2**64), 2**64) | st.floats() | st.sampled_from([0, -1, 0.5, 1e300]))
    mutated = json.loads(json.dumps(original))
    node = mutated
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = replacement
    try:
        model = _loads(mutated)
    except ValueError:
        return
    rows = np.random.default_rng(0).normal(size=(3, model.n_features_in_))
    model.predict(rows)


def test_model_from_dict_checks_depth_of_parsed_json(logistic_file):
    """Deployment files are parsed elsewhere: a deep dict must not reach the recursive decoder."""
    deep = json.loads(json.dumps(logistic_file))
    node = deep["state"]
    for _ in range(5000):
        node["x_"] = {"__dict__": {}}
        node = node["x_"]["__dict__"]
    with pytest.raises(ValueError, match="nested over 64 deep"):
        serialization.model_from_dict(deep)
    assert serialization.model_from_dict(logistic_file).n_features_in_ == 4

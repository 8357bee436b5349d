import numpy as np
import pandas as pd
import pytest
import xgboost
from sklearn import tree as sk_tree
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, cross_val_score

from fhe_sklearn import (
    DecisionTreeClassifier,
    DecisionTreeRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
    XGBClassifier,
    XGBRegressor,
)
from fhe_sklearn._tree_lowering import FlatTree, lower_trees

CLASSIFIERS = [
    (DecisionTreeClassifier, {"max_depth": 5, "random_state": 0}),
    (RandomForestClassifier, {"n_estimators": 10, "max_depth": 4, "random_state": 0}),
    (XGBClassifier, {"n_estimators": 10, "max_depth": 3}),
]
REGRESSORS = [
    (DecisionTreeRegressor, {"max_depth": 4, "random_state": 0}),
    (RandomForestRegressor, {"n_estimators": 10, "max_depth": 4, "random_state": 0}),
    (XGBRegressor, {"n_estimators": 10, "max_depth": 3}),
]
ids = lambda p: getattr(p, "__name__", "")  # noqa: E731


@pytest.mark.parametrize("dataset", ["cancer", "wine"])
@pytest.mark.parametrize(("cls", "params"), CLASSIFIERS, ids=ids)
def test_classifiers(cls, params, dataset, request):
    X_train, X_test, y_train, _ = request.getfixturevalue(dataset)
    model = cls(n_bits=6, **params).fit(X_train, y_train)
    model.compile(X_train)
    simulated = model.predict(X_test, fhe="simulate")
    np.testing.assert_array_equal(simulated, model.predict(X_test))
    np.testing.assert_array_equal(model.predict_proba(X_test[:20], fhe="simulate"), model.predict_proba(X_test[:20]))
    assert np.mean(simulated == model.sklearn_model.predict(X_test)) >= 0.95
    proba = model.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert np.mean(np.abs(proba - model.sklearn_model.predict_proba(X_test))) < 0.05


@pytest.mark.parametrize(("cls", "params"), REGRESSORS, ids=ids)
def test_regressors(cls, params, diabetes):
    X_train, X_test, y_train, y_test = diabetes
    model = cls(n_bits=6, **params).fit(X_train, y_train)
    model.compile(X_train)
    simulated = model.predict(X_test, fhe="simulate")
    np.testing.assert_array_equal(simulated, model.predict(X_test))
    float_pred = model.sklearn_model.predict(X_test)
    # a mis-routed row moves a regression, where argmax absorbs it: compare accuracy instead
    assert r2_score(y_test, simulated) >= r2_score(y_test, float_pred) - 0.05
    assert r2_score(float_pred, simulated) > 0.9
    # with bins at the split points, every row takes the float model's path
    exact = cls(n_bits={"op_inputs": 8, "op_leaves": 10}, quantization="splits", **params).fit(X_train, y_train)
    assert np.mean(np.abs(exact.predict(X_test) - float_pred) <= 0.005 * np.ptp(y_train)) == 1.0


@pytest.mark.parametrize(("cls", "params"), CLASSIFIERS, ids=ids)
def test_split_quantization_is_exact(cls, params, cancer):
    X_train, X_test, y_train, _ = cancer
    model = cls(n_bits={"op_inputs": 6, "op_leaves": 8}, quantization="splits", **params).fit(X_train, y_train)
    np.testing.assert_array_equal(model.predict(X_test), model.sklearn_model.predict(X_test))
    # bins need only as many bits as the most-split feature
    assert model.quantized_module_.input_quantizer.options.n_bits <= 6
    model.compile(X_train)
    np.testing.assert_array_equal(model.predict(X_test, fhe="simulate"), model.predict(X_test))


def test_split_quantization_refuses_too_many_thresholds(cancer):
    X_train, _, y_train, _ = cancer
    with pytest.raises(ValueError, match=r"distinct thresholds.*raise op_inputs"):
        RandomForestClassifier(n_estimators=30, n_bits=2, quantization="splits", random_state=0).fit(X_train, y_train)
    with pytest.raises(ValueError, match="quantization must be one of"):
        DecisionTreeClassifier(quantization="quantiles").fit(X_train, y_train)


def test_pbs_are_shared_splits_plus_leaf_tables(cancer):
    X_train, _, y_train, _ = cancer
    model = XGBClassifier(n_bits=6, n_estimators=20, max_depth=3, input_encoding="rank").fit(X_train, y_train)
    circuit = model.compile(X_train)
    ops = {op.name: op for op in model.quantized_module_.ops}
    n_splits, n_tables = len(ops["splits"].ks), len(ops["leaves"].tables)
    # ranks: a comparison whose rank column holds one threshold is read without lookup, and
    # one per column of several is that rank minus the column's other comparisons
    splits = ops["splits"]
    looked_up = int(np.sum(splits.quantizer.column_max[splits.columns] > 1)) - int(splits.derived.sum())
    assert splits.derived.any() and 0 < looked_up < n_splits
    assert circuit.programmable_bootstrap_count == looked_up + n_tables
    trees = model._flat_trees()
    assert n_splits < sum(int((t.left >= 0).sum()) for t in trees)  # shared across trees
    # the score goes back in binary digit planes: one lookup per leaf adds its bits to the
    # planes, so no integer is wider than a plane's sum of 20 digits
    assert ops["tree_sum"].output_spec.blocks == 8
    assert n_tables <= sum(int((t.left < 0).sum()) for t in trees)
    # the reference circuit needs 1280 PBS for this model; aim was <= 0.2x
    assert circuit.programmable_bootstrap_count <= 0.2 * 1280
    assert circuit.graph.maximum_integer_bit_width() == 6


def test_deep_chain_reaches_leaves_through_nested_reach_lookups():
    # a chain 20 nodes deep, each with a leaf on its left: 41 lookups, so one 3-bit precision,
    # and a leaf lookup reads at most 3 terms: the deep ones start from reach bits of
    # ancestors, themselves nested (prefixes of 17 > 7 decisions), three levels
    depth, n_features = 20, 4
    inner = np.arange(depth)
    left = np.full(2 * depth + 1, -1)
    right = np.full(2 * depth + 1, -1)
    left[inner], right[inner] = depth + 1 + inner, inner + 1
    right[depth - 1] = depth  # the last inner node's right child is a leaf too
    feature = np.where(np.arange(2 * depth + 1) < depth, np.arange(2 * depth + 1) % n_features, -2)
    threshold = np.where(np.arange(2 * depth + 1) < depth, np.linspace(-2, 2, 2 * depth + 1), -2.0)
    value = np.arange(2 * depth + 1, dtype=np.float64)[:, None]
    chain = FlatTree(left, right, feature, threshold, value, columns=np.array([0]))
    X = np.random.default_rng(0).uniform(-2.5, 2.5, size=(4000, n_features))
    X[:, 0] = np.linspace(-2.5, 2.5, 4000)  # every depth is reached
    module = lower_trees([chain], 1, X, n_bits_inputs=8, n_bits_leaves=6, quantization="splits")  # exact bins
    lookups = [op.name for op in module.ops if op.op_type == "TableLookup"]
    assert lookups == ["reach_1", "reach_2", "reach_3", "leaves"]
    expected = chain.predict_float(X, 1)
    assert len(np.unique(chain.leaf_index(X))) > 10
    disabled = module.forward(X)
    np.testing.assert_allclose(disabled, expected, atol=0.5)
    circuit = module.compile(X)
    assert len(circuit.statistics["programmable_bootstrap_count_per_parameter"]) == 1
    x_q = module.quantize_input(X[::40])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))


@pytest.mark.fhe_execute
@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (DecisionTreeClassifier, {"max_depth": 3, "random_state": 0}),
        (XGBClassifier, {"n_estimators": 3, "max_depth": 2}),
    ],
    ids=ids,
)
def test_execute_equals_simulate(cls, params, wine):
    X_train, X_test, y_train, _ = wine
    model = cls(n_bits=4, **params).fit(X_train, y_train)
    model.compile(X_train)
    rows = X_test[:2]
    np.testing.assert_array_equal(model.predict_proba(rows, fhe="execute"), model.predict_proba(rows, fhe="simulate"))


def test_a_score_over_16_bits_goes_back_in_digit_planes(diabetes):
    # 40 trees of 12-bit leaves sum to 19 bits: binary planes of at most 40 digits each fit
    X_train, X_test, y_train, _ = diabetes
    model = RandomForestRegressor(
        n_estimators=40, max_depth=3, random_state=0, n_bits={"op_inputs": 6, "op_leaves": 12}
    ).fit(X_train, y_train)
    spec = model.quantized_module_.output_spec
    assert spec.blocks == 13 and max(op.output_spec.bit_width for op in model.quantized_module_.ops) == 6
    expected = model.sklearn_model.predict(X_test)
    assert r2_score(expected, model.predict(X_test)) > 0.95  # 6-bit inputs move a few rows' paths
    # one integer per output is refused with the width it would need
    model.set_params(output_encoding="sum")
    with pytest.raises(ValueError, match=r"'tree_sum' needs a 19-bit integer.*lower n_bits\['op_leaves'\]"):
        model.fit(X_train, y_train)


def test_boosted_trees_of_very_different_sizes_fit_16_bits(diabetes):
    X_train, X_test, y_train, _ = diabetes
    # late trees a thousand times smaller than the first: leaf multiples must stay bounded
    model = XGBRegressor(n_estimators=60, max_depth=2, learning_rate=0.9).fit(X_train, y_train)
    assert model.quantized_module_.output_spec.bit_width <= 16
    assert r2_score(model.sklearn_model.predict(X_test), model.predict(X_test)) > 0.8


def test_gridsearch_pandas_and_from_sklearn_model(cancer):
    X_train, X_test, y_train, _ = cancer
    search = GridSearchCV(DecisionTreeClassifier(max_depth=3, random_state=0), {"n_bits": [2, 4, 6]}, cv=3).fit(
        X_train, y_train
    )
    # each candidate is the estimator with that n_bits: same folds, same scores as by hand
    by_hand = cross_val_score(
        DecisionTreeClassifier(max_depth=3, n_bits=2, random_state=0), X_train, y_train, cv=3
    ).mean()
    assert search.cv_results_["mean_test_score"][0] == pytest.approx(by_hand)
    grid = search.best_estimator_.quantized_module_.input_quantizer.base  # under the threshold-rank encoding
    assert grid.options.n_bits == search.best_params_["n_bits"]
    columns = [f"c{i}" for i in range(X_train.shape[1])]
    frame_train, frame_test = pd.DataFrame(X_train, columns=columns), pd.DataFrame(X_test, columns=columns)
    model = XGBClassifier(n_estimators=5, max_depth=2).fit(frame_train, y_train)
    np.testing.assert_array_equal(
        model.predict(frame_test), XGBClassifier(n_estimators=5, max_depth=2).fit(X_train, y_train).predict(X_test)
    )
    booster_on_frame = xgboost.XGBClassifier(n_estimators=5, max_depth=2).fit(frame_train, y_train)
    wrapped = XGBClassifier.from_sklearn_model(booster_on_frame, frame_train)
    assert np.mean(wrapped.predict(frame_test) == booster_on_frame.predict(frame_test)) >= 0.95
    float_tree = sk_tree.DecisionTreeClassifier(max_depth=4, random_state=0).fit(X_train, y_train)
    wrapped_tree = DecisionTreeClassifier.from_sklearn_model(float_tree, X_train, n_bits=5)
    assert wrapped_tree.max_depth == 4
    assert np.mean(wrapped_tree.predict(X_test) == float_tree.predict(X_test)) >= 0.95


def test_string_labels_and_unsupported_objective(wine):
    X_train, X_test, y_train, _ = wine
    labels = np.array(["a", "b", "c"])[y_train]
    model = XGBClassifier(n_estimators=5, max_depth=2).fit(X_train, labels)
    assert set(model.predict(X_test)) <= {"a", "b", "c"}
    with pytest.raises(ValueError, match="not supported in FHE"):
        XGBClassifier(n_estimators=2, objective="binary:hinge").fit(X_train, y_train == 0)

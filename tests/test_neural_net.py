import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.exceptions import NotFittedError
from sklearn.metrics import r2_score
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from fhe_sklearn import NeuralNetClassifier, NeuralNetRegressor
from fhe_sklearn.quantization.qat import SparseQuantMLP

SMALL = {
    "module__n_hidden_neurons_multiplier": 1,
    "module__n_w_bits": 2,
    "module__n_a_bits": 2,
    "module__n_accum_bits": 5,
}


@pytest.fixture(scope="module")
def cancer_raw():
    X, y = load_breast_cancer(return_X_y=True)
    return train_test_split(X, y, test_size=0.2, random_state=0)


@pytest.fixture(scope="module")
def cancer_pipeline(cancer_raw):
    X_train, _, y_train, _ = cancer_raw
    # whole-accumulator lookups: the integer model is then exactly the trained torch network
    model = NeuralNetClassifier(
        module__n_w_bits=3, module__n_a_bits=3, module__n_accum_bits=8, rounding_threshold_bits=None, random_state=0
    )
    pipeline = Pipeline([("scaler", StandardScaler()), ("nn", model)]).fit(X_train, y_train)
    pipeline["nn"].compile(pipeline["scaler"].transform(X_train))
    return pipeline


def test_breast_cancer_3_bits_accuracy_and_accumulator(cancer_pipeline, cancer_raw):
    _, X_test, _, y_test = cancer_raw
    nn = cancer_pipeline["nn"]
    y_sim = cancer_pipeline.predict(X_test, fhe="simulate")
    assert (y_sim == y_test).mean() >= 0.95
    np.testing.assert_array_equal(y_sim, cancer_pipeline.predict(X_test))
    np.testing.assert_allclose(
        cancer_pipeline.predict_proba(X_test, fhe="simulate"), cancer_pipeline.predict_proba(X_test)
    )
    # the integer model computes what the fake-quantized torch network was trained to compute
    X_scaled = cancer_pipeline["scaler"].transform(X_test)
    np.testing.assert_allclose(
        nn.predict_proba(X_scaled), nn.sklearn_model_.predict_proba(X_scaled), rtol=1e-4, atol=1e-5
    )
    circuit = nn.fhe_circuit
    assert circuit.graph.maximum_integer_bit_width() <= 8
    assert nn.max_bit_width_ <= 8
    # one lookup per hidden neuron: bias, activation and re-quantization fused
    assert circuit.programmable_bootstrap_count == 2 * X_test.shape[1]


@pytest.mark.parametrize("n_accum_bits", [6, 8, 11])
def test_pruning_keeps_every_accumulator_within_n_accum_bits(scaled_wine, n_accum_bits):
    X_train, X_test, y_train, y_test = scaled_wine
    params = {"module__n_w_bits": 3, "module__n_a_bits": 2, "module__n_layers": 3, "max_epochs": 30}
    model = NeuralNetClassifier(**params, module__n_accum_bits=n_accum_bits, random_state=0).fit(X_train, y_train)
    for op in model.quantized_module_.ops:
        lo, hi = op.output_spec.lo, op.output_spec.hi
        assert np.all(lo >= -(2 ** (n_accum_bits - 1))) and np.all(hi < 2 ** (n_accum_bits - 1)), op.name
    kept = [float(linear.mask.mean()) for linear in model.sklearn_model_.module_.linears]
    if n_accum_bits == 6:
        assert min(kept) < 0.5  # a tight budget prunes most connections
    if n_accum_bits == 11:
        assert min(kept) == 1  # a loose one prunes nothing
    assert (model.predict(X_test) == y_test).mean() >= 0.7


def test_prune_keeps_the_largest_weights_that_fit():
    torch.manual_seed(0)
    net = SparseQuantMLP(4, 1, n_layers=1, n_w_bits=3, n_a_bits=2, n_accum_bits=5, input_range=([-1] * 4, [2] * 4))
    with torch.no_grad():
        net.linears[0].weight.copy_(torch.tensor([[3.0, -1.0, 2.0, 0.2]]))
    # codes 0..3 with zero point 1: integers in [-1, 2]; weights quantize to [3, -1, 2, 0]
    assert net.input_integer_range(0)[0].tolist() == [-1.0] * 4
    net.prune()
    # 3*2 + 2*2 = 10 fits [-16, 15]; adding -1 * [-1, 2] keeps it within; all fit
    assert net.linears[0].mask.tolist() == [[1.0, 1.0, 1.0, 1.0]]
    net = SparseQuantMLP(4, 1, n_layers=1, n_w_bits=4, n_a_bits=2, n_accum_bits=5, input_range=([-1] * 4, [2] * 4))
    with torch.no_grad():
        net.linears[0].weight.copy_(torch.tensor([[7.0, -1.0, 5.0, 3.0]]))
    net.prune()
    # integers 7, -1, 5, 3: 7*2 = 14 fits, + 5*2 = 24 does not, so only the largest is kept
    assert net.linears[0].mask.tolist() == [[1.0, 0.0, 0.0, 0.0]]
    assert net.linears[0].weight.tolist() == [[7.0, 0.0, 0.0, 0.0]]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_diabetes_regression_close_to_float_mlp():
    X, y = load_diabetes(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    hidden = 2 * X.shape[1]
    fhe_model = make_pipeline(StandardScaler(), NeuralNetRegressor(random_state=0)).fit(X_train, y_train)
    float_model = make_pipeline(
        StandardScaler(), MLPRegressor(hidden_layer_sizes=(hidden,), max_iter=5000, random_state=0)
    ).fit(X_train, y_train)
    fhe_model[-1].compile(fhe_model[0].transform(X_train))
    y_sim = fhe_model.predict(X_test, fhe="simulate")
    np.testing.assert_allclose(y_sim, fhe_model.predict(X_test))
    assert r2_score(y_test, y_sim) >= float_model.score(X_test, y_test) - 0.05


def test_multi_output_regression(scaled_diabetes):
    X_train, X_test, y_train, _ = scaled_diabetes
    Y = np.column_stack([y_train, -2 * y_train])
    model = NeuralNetRegressor(max_epochs=20, rounding_threshold_bits=None, random_state=0).fit(X_train, Y)
    assert model.predict(X_test).shape == (len(X_test), 2)
    # the float network predicts the target in its own units, as the FHE model does
    np.testing.assert_allclose(model.sklearn_model.predict(X_test), model.predict(X_test), rtol=0.05, atol=5)
    np.testing.assert_array_equal(
        NeuralNetRegressor(max_epochs=20, random_state=0).fit(X_train, y_train).predict(X_test).shape, (len(X_test),)
    )


@pytest.mark.fhe_execute
def test_execute_matches_simulate_small_net(scaled_cancer):
    X_train, X_test, y_train, _ = scaled_cancer
    model = NeuralNetClassifier(**SMALL, random_state=0).fit(X_train, y_train)
    circuit = model.compile(X_train)
    assert circuit.graph.maximum_integer_bit_width() <= SMALL["module__n_accum_bits"]
    np.testing.assert_array_equal(
        model.predict_proba(X_test[:1], fhe="execute"), model.predict_proba(X_test[:1], fhe="simulate")
    )


def test_gridsearch_pipeline_pandas_clone(cancer_raw):
    X_train, X_test, y_train, _ = cancer_raw
    names = [f"f{i}" for i in range(X_train.shape[1])]
    frame = pd.DataFrame(X_train, columns=names)
    scaler = StandardScaler().set_output(transform="pandas")  # the network sees the column names
    pipeline = make_pipeline(scaler, NeuralNetClassifier(max_epochs=10, random_state=0))
    grid = {"neuralnetclassifier__module__n_w_bits": [2, 3], "neuralnetclassifier__module__n_a_bits": [2, 3]}
    search = GridSearchCV(pipeline, grid, cv=2).fit(frame, y_train)
    best = search.best_estimator_[-1]
    assert best.module__n_w_bits == search.best_params_["neuralnetclassifier__module__n_w_bits"]
    assert list(best.feature_names_in_) == names
    assert search.predict(pd.DataFrame(X_test, columns=names)).shape == (len(X_test),)
    model = clone(best).set_params(module__n_accum_bits=9, lr=0.01)
    assert model.get_params()["module__n_accum_bits"] == 9 and model.lr == 0.01


def test_float_network_predicts_original_labels(scaled_wine):
    X_train, X_test, y_train, _ = scaled_wine
    labels = np.array(["a", "b", "c"])[y_train]
    model = NeuralNetClassifier(max_epochs=20, rounding_threshold_bits=None, random_state=0).fit(X_train, labels)
    assert set(model.sklearn_model.predict(X_test)) <= {"a", "b", "c"}
    assert (model.sklearn_model.predict(X_test) == model.predict(X_test)).mean() == 1


def test_same_seed_same_model(scaled_wine):
    X_train, X_test, y_train, _ = scaled_wine
    a = NeuralNetClassifier(max_epochs=5, random_state=3).fit(X_train, y_train).predict_proba(X_test)
    b = NeuralNetClassifier(max_epochs=5, random_state=3).fit(X_train, y_train).predict_proba(X_test)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("params", "error", "match"),
    [
        ({"module__n_accum_bits": 5}, ValueError, "cannot hold even one product"),
        ({"module__n_accum_bits": 17}, ValueError, r"module__n_accum_bits must be an integer in \[2, 16\]"),
        ({"module__n_w_bits": 1}, ValueError, "module__n_w_bits"),
        ({"module__n_layers": 0}, ValueError, "module__n_layers"),
        ({"module__activation_function": "swish"}, ValueError, "unknown activation_function 'swish'"),
        ({"optimizer": "lbfgs"}, ValueError, "unknown optimizer 'lbfgs'"),
        ({"optimizer": 3}, TypeError, "optimizer must be"),
    ],
)
def test_bad_parameters_are_refused_before_training(scaled_wine, params, error, match):
    X_train, _, y_train, _ = scaled_wine
    with pytest.raises(error, match=match):
        NeuralNetClassifier(**params).fit(X_train, y_train)


def test_bad_input_errors(scaled_wine):
    X_train, X_test, y_train, _ = scaled_wine
    with pytest.raises(NotFittedError):
        NeuralNetClassifier().predict(X_test)
    model = NeuralNetClassifier(max_epochs=2, random_state=0).fit(X_train, y_train)
    with pytest.raises(ValueError, match="features"):
        model.predict(X_test[:, :5])
    bad = X_test.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        model.predict(bad)
    with pytest.raises(RuntimeError, match="compile"):
        model.predict(X_test, fhe="simulate")
    with pytest.raises(ValueError, match="fhe must be one of"):
        model.predict(X_test, fhe="encrypted")
    with pytest.raises(TypeError, match="sample_weight is not supported"):
        NeuralNetClassifier(max_epochs=1).fit(X_train, y_train, sample_weight=np.ones(len(y_train)))
    with pytest.raises(TypeError, match="must be trained with its own"):
        NeuralNetClassifier.from_sklearn_model(model.sklearn_model_, X_train)
    with pytest.raises(TypeError, match="cannot serialize"):
        NeuralNetClassifier(max_epochs=1, optimizer=torch.optim.Adam).fit(X_train, y_train).dumps()

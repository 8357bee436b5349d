"""Bad-input battery: every estimator class × every fhe mode × every malformed input.

Each case must end in a clear error naming the problem, or in a documented behaviour that the
case asserts (see README, "Limits"). A case that returns an answer without either is a silent
wrong answer: the case fails. ``test_tally`` prints cases tried / clear errors / documented
behaviours / silent wrong answers.

Each estimator is fitted (on a small DataFrame) and compiled once per session; "execute" runs
for the linear families only, whose keys are tiny.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from sklearn.base import is_classifier

import fhe_sklearn
from fhe_sklearn.agreement import MIN_LABEL_AGREEMENT, MIN_R2
from fhe_sklearn.exceptions import InputRangeWarning, QuantizationAgreementWarning

LINEAR = [
    "LinearRegression",
    "Ridge",
    "Lasso",
    "ElasticNet",
    "SGDRegressor",
    "LogisticRegression",
    "SGDClassifier",
    "PoissonRegressor",
    "GammaRegressor",
    "TweedieRegressor",
    "LinearSVC",
    "LinearSVR",
]
TREES = [
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "XGBClassifier",
    "XGBRegressor",
]
NETWORKS = ["NeuralNetClassifier", "NeuralNetRegressor"]
ESTIMATORS = LINEAR + TREES + NETWORKS
PARAMS = {
    "Lasso": {"alpha": 0.01},
    "ElasticNet": {"alpha": 0.01},
    "SGDRegressor": {"random_state": 0},
    "SGDClassifier": {"random_state": 0},
    "LinearSVR": {"max_iter": 10000, "random_state": 0},
    "LinearSVC": {"random_state": 0},
    "DecisionTreeClassifier": {"max_depth": 3, "random_state": 0},
    "DecisionTreeRegressor": {"max_depth": 3, "random_state": 0},
    "RandomForestClassifier": {"n_estimators": 3, "max_depth": 2, "random_state": 0},
    "RandomForestRegressor": {"n_estimators": 3, "max_depth": 2, "random_state": 0},
    "XGBClassifier": {"n_estimators": 3, "max_depth": 2},
    "XGBRegressor": {"n_estimators": 3, "max_depth": 2},
    "NeuralNetClassifier": {"max_epochs": 3, "module__n_hidden_neurons_multiplier": 1, "random_state": 0},
    # no accumulator truncation: the constant-target case compares the circuit with the float
    # (fake-quantized) network, which truncation would move by a quantization step
    "NeuralNetRegressor": {
        "max_epochs": 3,
        "module__n_hidden_neurons_multiplier": 1,
        "random_state": 0,
        "rounding_threshold_bits": None,
    },
}
COLUMNS = ["a", "b", "c", "d"]

PREDICT_CASES = [
    "nan",
    "inf",
    "-inf",
    "wrong_n_features",
    "df_missing_column",
    "df_reordered_columns",
    "df_extra_column",
    "strings",
    "empty",
    "1d",
    "3d",
    "one_row",
    "beyond_range_1e6",
    "unfitted",
    "not_compiled",
    "unknown_fhe_mode",
]
FIT_CASES = [
    "n_bits_0",
    "n_bits_1",
    "n_bits_17",
    "n_bits_negative",
    "n_bits_float",
    "n_bits_unknown_key",
    "y_nan",
    "single_class_or_constant_y",
]
CASES = PREDICT_CASES + FIT_CASES

#: outcome of every case run: "error", "documented" or "silent"
TALLY: Counter = Counter()
UNCLEAR: list[str] = []


def _data(classifier: bool) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(120, 4)) * [1.0, 2.0, 0.5, 3.0] + [0.0, 5.0, -1.0, 2.0], columns=COLUMNS)
    score = X["a"] - 0.5 * X["b"] + X["d"] / 3
    if classifier:
        return X, (score > score.median()).astype(int).to_numpy()
    # positive targets: Poisson/Gamma need them
    return X, np.exp(0.3 * (score - score.mean()) / score.std()) * 10


def _modes(name: str) -> list[str]:
    return ["disable", "simulate", "execute"] if name in LINEAR else ["disable", "simulate"]


def _new(name: str, **params):
    return getattr(fhe_sklearn, name)(**{**PARAMS.get(name, {}), **params})


class _Fitted:
    """Each estimator fitted once (compiled, and a second copy left uncompiled) per session."""

    def __init__(self) -> None:
        self.models: dict[tuple[str, bool], object] = {}
        self.fit_outcomes: dict[tuple[str, str], tuple] = {}

    def get(self, name: str, compiled: bool = True):
        key = (name, compiled)
        if key not in self.models:
            model = _new(name)
            X, y = _data(is_classifier(model))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", QuantizationAgreementWarning)
                model.fit(X, y)
            if compiled:
                model.compile(X)
            self.models[key] = model
        return self.models[key]


@pytest.fixture(scope="session")
def fitted() -> _Fitted:
    return _Fitted()


@pytest.fixture(autouse=True)
def _arrays_to_named_models():
    # the array cases (1-D, 3-D, strings...) go to models fitted on a DataFrame: sklearn says so
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "X does not have valid feature names")
        yield


def _predict(model, X, mode):
    return model.predict(X, fhe=mode)


def _expect_error(fn, pattern: str) -> str:
    """Run ``fn``: "error" if it raises an exception whose message matches ``pattern``,
    "unclear" if its message does not, "silent" if it answers."""
    try:
        fn()
    except Exception as err:  # any error: its message is what is checked
        message = f"{type(err).__name__}: {err}"
        if re.search(pattern, message, flags=re.IGNORECASE | re.DOTALL):
            return "error"
        UNCLEAR.append(f"expected /{pattern}/, got {message[:400]}")
        return "unclear"
    return "silent"


def _row_at_edges(model, X: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A calibration row with feature a 1e6 above its maximum and b 1e6 below its minimum,
    and the same row with a and b at those extremes."""
    beyond, edge = X.iloc[[0]].copy(), X.iloc[[0]].copy()
    beyond["a"], edge["a"] = X["a"].max() + 1e6, X["a"].max()
    beyond["b"], edge["b"] = X["b"].min() - 1e6, X["b"].min()
    return beyond, edge


def _predict_case(name: str, mode: str, case: str, fitted: _Fitted) -> str:
    model = fitted.get(name, compiled=case != "not_compiled")
    X, _ = _data(is_classifier(model))
    good = X.iloc[:3]
    if case == "nan":
        bad = good.copy()
        bad.iloc[1, 2] = np.nan
        return _expect_error(lambda: _predict(model, bad, mode), r"NaN")
    if case in ("inf", "-inf"):
        bad = good.copy()
        bad.iloc[0, 1] = np.inf if case == "inf" else -np.inf
        return _expect_error(lambda: _predict(model, bad, mode), r"infinity")
    if case == "wrong_n_features":
        return _expect_error(lambda: _predict(model, good.to_numpy()[:, :3], mode), r"3 features.*expecting 4")
    if case == "df_missing_column":
        return _expect_error(lambda: _predict(model, good.drop(columns="c"), mode), r"missing.*- c")
    if case == "df_reordered_columns":
        return _expect_error(lambda: _predict(model, good[["b", "a", "c", "d"]], mode), r"same order")
    if case == "df_extra_column":
        return _expect_error(lambda: _predict(model, good.assign(e=1.0), mode), r"unseen at fit time.*- e")
    if case == "strings":
        bad = np.array([["x", "y", "z", "w"]], dtype=object)
        return _expect_error(lambda: _predict(model, bad, mode), r"could not convert string to float")
    if case == "empty":
        return _expect_error(lambda: _predict(model, good.iloc[:0], mode), r"0 sample")
    if case == "1d":
        return _expect_error(lambda: _predict(model, good.to_numpy()[0], mode), r"Expected 2D array, got 1D")
    if case == "3d":
        return _expect_error(lambda: _predict(model, good.to_numpy()[None], mode), r"dim 3")
    if case == "unknown_fhe_mode":
        return _expect_error(lambda: model.predict(good, fhe="gpu"), r"fhe must be one of")
    if case == "unfitted":
        return _expect_error(lambda: _predict(_new(name), good, mode), r"not fitted")
    if case == "not_compiled":
        if mode != "disable":
            return _expect_error(lambda: _predict(model, good, mode), r"compile")
        # documented: fhe="disable" runs the integer model in the clear, no circuit needed
        np.testing.assert_array_equal(_predict(model, good, mode), _predict(fitted.get(name), good, mode))
        return "documented"
    if case == "one_row":
        # documented: one row is a batch of one, same answer as within a batch
        one = _predict(model, good.iloc[[1]], mode)
        assert one.shape == (1, *_predict(model, good, "disable").shape[1:])
        np.testing.assert_array_equal(one, _predict(model, good, "disable")[1:2])
        return "documented"
    if case == "beyond_range_1e6":
        return _beyond_range(name, model, X, mode)
    raise AssertionError(case)  # pragma: no cover


def _beyond_range(name: str, model, X: pd.DataFrame, mode: str) -> str:
    beyond, edge = _row_at_edges(model, X)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        answer = _predict(model, beyond, mode)
    range_warnings = [w for w in caught if issubclass(w.category, InputRangeWarning)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputRangeWarning)
        at_edge = _predict(model, edge, mode)
    # documented for every family: inputs are clipped to the quantization range
    np.testing.assert_array_equal(answer, at_edge)
    if name in LINEAR:
        # a linear float model extrapolates: the clipping is announced, value by value
        assert len(range_warnings) == 1, [str(w.message) for w in caught]
        message = str(range_warnings[0].message)
        assert "2 input value(s)" in message and "a: 1 outside" in message and "b: 1 outside" in message
    else:
        # trees: beyond the extreme splits every value takes the same path; networks: the
        # float network clips to the same input grid. So the float model saturates too.
        assert not range_warnings
        np.testing.assert_array_equal(model._float_predict(beyond.to_numpy()), model._float_predict(edge.to_numpy()))
    return "documented"


def _fit_case(name: str, case: str) -> tuple:
    """Run a fit-time case once per estimator: ("error", None) or ("documented", model)."""
    network = name in NETWORKS
    classifier = is_classifier(_new(name))
    X, y = _data(classifier)
    bad_bits = {
        "n_bits_0": (0, r"out of range|must be an integer"),
        "n_bits_1": (1, None),
        "n_bits_17": (17, r"out of range|must be an integer"),
        "n_bits_negative": (-3, r"out of range|must be an integer"),
        "n_bits_float": (4.5, r"must be an integer"),
        "n_bits_unknown_key": ({"op_inputs": 4, "op_bits": 4}, r"exactly the keys.*unknown: \['op_bits'\]"),
    }
    if case in bad_bits:
        value, pattern = bad_bits[case]
        if network:
            # networks take their bit-widths as module__n_a_bits / module__n_w_bits (2..8)
            param, pattern = "module__n_a_bits", r"module__n_a_bits must be an integer in \[2, 8\]"
            if isinstance(value, dict):
                param, pattern = "n_bits", r"unexpected keyword argument 'n_bits'"
            return _expect_error(lambda: _new(name, **{param: value}).fit(X, y), pattern), None
        if pattern is not None:
            return _expect_error(lambda: _new(name, n_bits=value).fit(X, y), pattern), None
        # n_bits=1 is valid: documented, the agreement check warns when the 1-bit model
        # departs from the float one
        model = _new(name, n_bits=1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model.fit(X, y)
        warned = any(issubclass(w.category, QuantizationAgreementWarning) for w in caught)
        tolerance = MIN_LABEL_AGREEMENT if classifier else MIN_R2
        assert warned == (model.quantization_agreement_ < tolerance)
        model.compile(X)
        return "documented", model
    if case == "y_nan":
        bad_y = y.astype(np.float64)
        bad_y[5] = np.nan
        return _expect_error(lambda: _new(name).fit(X, bad_y), r"Input y contains NaN"), None
    if case == "single_class_or_constant_y":
        constant = np.zeros(len(y), dtype=int) if classifier else np.full(len(y), 3.0)
        model = _new(name)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", QuantizationAgreementWarning)
                model.fit(X, constant)
        except Exception as err:  # any error: its message is what is checked
            message = f"{type(err).__name__}: {err}"
            if classifier and re.search(r"(one|1) class|at least 2 classes|greater than one", message, re.I):
                return "error", None
            UNCLEAR.append(f"{'single class' if classifier else 'constant y'}: {message[:400]}")
            return "unclear", None
        # documented: the float model accepts it, and so does the FHE one
        model.compile(X)
        return "documented", model
    raise AssertionError(case)  # pragma: no cover


def _after_fit_case(name: str, mode: str, case: str, outcome: tuple) -> str:
    kind, model = outcome
    if kind != "documented":
        return kind
    X, _ = _data(is_classifier(model))
    rows = X.iloc[:5]
    answer = _predict(model, rows, mode)
    np.testing.assert_array_equal(answer, _predict(model, rows, "disable"))
    if case == "single_class_or_constant_y":
        # the float model predicts the single class / the constant; so does the FHE one
        float_answer = model._float_predict(rows.to_numpy())
        if is_classifier(model):
            np.testing.assert_array_equal(answer, float_answer)
        else:
            np.testing.assert_allclose(answer, float_answer, rtol=1e-2, atol=1e-2)
    return "documented"


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    ("name", "mode"),
    [
        pytest.param(name, mode, marks=[pytest.mark.fhe_execute] if mode == "execute" else [], id=f"{name}-{mode}")
        for name in ESTIMATORS
        for mode in _modes(name)
    ],
)
def test_bad_input(name: str, mode: str, case: str, fitted: _Fitted) -> None:
    outcome = "unclear"
    try:
        if case in FIT_CASES:
            key = (name, case)
            if key not in fitted.fit_outcomes:
                fitted.fit_outcomes[key] = _fit_case(name, case)
            outcome = _after_fit_case(name, mode, case, fitted.fit_outcomes[key])
        else:
            outcome = _predict_case(name, mode, case, fitted)
    except AssertionError:
        outcome = "silent"  # a documented behaviour did not hold
        raise
    except Exception as err:  # recorded as unclear, then re-raised
        UNCLEAR.append(f"{name} / {mode} / {case}: {type(err).__name__}: {str(err)[:400]}")
        raise
    finally:
        TALLY[outcome] += 1
        TALLY["tried"] += 1
    assert outcome in ("error", "documented"), f"{name} / fhe={mode!r} / {case}: {outcome}" + (
        f" ({UNCLEAR[-1]})" if outcome == "unclear" else ""
    )


def test_tally(capsys) -> None:
    """Runs after the battery (same module, declared last): print the tally."""
    if not TALLY["tried"]:
        pytest.skip("the battery did not run in this session")
    line = (
        f"bad-input battery: {TALLY['tried']} cases tried / {TALLY['error']} clear errors / "
        f"{TALLY['documented']} documented behaviours / {TALLY['silent']} silent wrong answers"
        f" / {TALLY['unclear']} unclear errors"
    )
    with capsys.disabled():
        print(f"\n{line}")
    assert TALLY["silent"] == 0 and TALLY["unclear"] == 0, line

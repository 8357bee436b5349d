"""Prototypes for k-NN in FHE: a small training set standing for a large one."""

import numpy as np
import pytest
from sklearn import neighbors as sk_neighbors
from sklearn.metrics import r2_score

from fhe_sklearn import KNeighborsClassifier, KNeighborsRegressor
from fhe_sklearn.prototypes import select_prototypes


@pytest.mark.parametrize("method", ["kmeans", "random"])
def test_fifty_prototypes_keep_the_full_sets_decisions(method, scaled_cancer):
    X_train, X_test, y_train, _ = scaled_cancer
    X_p, y_p = select_prototypes(X_train, y_train, 50, method=method, random_state=0)
    assert X_p.shape == (50, X_train.shape[1]) and set(y_p) == set(y_train)
    # the class shares follow the training set's (largest remainders)
    assert abs(np.mean(y_p) - np.mean(y_train)) <= 1 / 50
    full = sk_neighbors.KNeighborsClassifier(n_neighbors=5).fit(X_train, y_train).predict(X_test)
    model = KNeighborsClassifier(n_neighbors=5).fit(X_p, y_p)  # the integer circuit (disable)
    assert np.mean(model.predict(X_test) == full) >= 0.94  # 0.956 both; the first 50 points: 0.930


def test_regression_prototypes_average_their_cluster(scaled_diabetes):
    X_train, X_test, y_train, y_test = scaled_diabetes
    X_p, y_p = select_prototypes(X_train, y_train, 50, task="regression", random_state=0)
    assert X_p.shape == (50, X_train.shape[1]) and y_train.min() <= y_p.min() and y_p.max() <= y_train.max()
    first = KNeighborsRegressor(n_neighbors=5).fit(X_train[:50], y_train[:50])
    model = KNeighborsRegressor(n_neighbors=5).fit(X_p, y_p)
    # averaged targets smooth the noise: R² 0.277 against 0.205 for the first 50 points
    assert r2_score(y_test, model.predict(X_test)) > r2_score(y_test, first.predict(X_test)) + 0.05


def test_small_sets_and_bad_arguments(scaled_wine):
    X_train, _, y_train, _ = scaled_wine
    X_p, y_p = select_prototypes(X_train[:5], y_train[:5], 50, random_state=0)  # fewer rows: the rows
    assert sorted(zip(map(tuple, X_p), y_p)) == sorted(zip(map(tuple, X_train[:5]), y_train[:5]))
    assert np.array_equal(select_prototypes(X_train, y_train, 3, random_state=0)[1], [0, 1, 2])
    # one point of a rare class still leaves the total at n_prototypes
    rare = np.r_[np.zeros(40, dtype=int), [1]]
    assert np.array_equal(np.bincount(select_prototypes(X_train[:41], rare, 4, random_state=0)[1]), [3, 1])
    with pytest.raises(ValueError, match="n_prototypes=2 is fewer than the 3 classes"):
        select_prototypes(X_train, y_train, 2)
    with pytest.raises(ValueError, match="n_prototypes must be a positive integer, got 0"):
        select_prototypes(X_train, y_train, 0)
    with pytest.raises(ValueError, match="task must be 'classification' or 'regression'"):
        select_prototypes(X_train, y_train, 10, task="auto")
    with pytest.raises(ValueError, match="method must be 'kmeans' or 'random'"):
        select_prototypes(X_train, y_train, 10, method="condensed")

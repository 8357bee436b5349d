"""A smaller training set for k-NN in FHE: prototypes.

A k-NN circuit compares the query with every training point, so its lookups, keys and latency
grow linearly with the training set (``benchmarks/neighbors.py``). Fitting on a few dozen
prototypes that stand for the training set keeps most of the full set's decisions at the cost
of a circuit of that size:

- ``"kmeans"``: k-means centres per class for a classifier (each class gets a share of the
  prototypes proportional to its size, at least one), k-means centres of the features with the
  mean target of their members for a regressor;
- ``"random"``: a random subset, stratified by class for a classifier.

Measured in ``benchmarks/prototypes.py``: on diabetes the k-means centres, whose targets are
averages, beat a random subset and the whole training set up to 100 points; on breast_cancer
they agree best with the whole set's k-NN at 50–100 points, a random subset at 20.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.utils import check_random_state, resample
from sklearn.utils.validation import check_X_y


def _class_shares(counts: np.ndarray, n_prototypes: int) -> np.ndarray:
    """Prototypes per class: proportional to its size (largest remainders), at least one, at
    most the class's own size."""
    exact = n_prototypes * counts / counts.sum()
    shares = np.maximum(np.floor(exact).astype(int), 1)
    for i in np.argsort(exact - np.floor(exact))[::-1]:
        if shares.sum() >= n_prototypes:
            break
        shares[i] += 1
    while shares.sum() > n_prototypes:  # the small classes' minimum of one came from the large ones
        shares[np.argmax(np.where(shares > 1, shares - exact, -np.inf))] -= 1
    return np.minimum(shares, counts)


def _centres(X: np.ndarray, n: int, random_state: Any) -> tuple[np.ndarray, np.ndarray]:
    """k-means centres of ``X`` and each row's cluster (``X`` itself when n covers it)."""
    if n >= len(np.unique(X, axis=0)):
        unique, labels = np.unique(X, axis=0, return_inverse=True)
        return unique, labels.ravel()
    kmeans = KMeans(n_clusters=n, n_init=4, random_state=random_state).fit(X)
    return kmeans.cluster_centers_, kmeans.labels_


def select_prototypes(
    X: Any,
    y: Any,
    n_prototypes: int,
    *,
    task: str = "classification",
    method: str = "kmeans",
    random_state: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``n_prototypes`` points (and their labels or targets) standing for ``(X, y)``.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
        The (standardized) training features.
    y : array-like of shape (n_samples,)
        Class labels or regression targets.
    n_prototypes : int
        How many points to return (at most; fewer when ``X`` has fewer distinct rows). A
        classifier gets at least one per class, so at least as many as there are classes.
    task : {"classification", "regression"}
        For a KNeighborsClassifier or a KNeighborsRegressor (integer targets such as counts are
        still regression targets, so it is not guessed from ``y``).
    method : {"kmeans", "random"}
        Cluster centres, or a random subset of the training points (stratified by class).
    random_state : int, RandomState instance or None
        Seeds k-means or the subset.

    Returns
    -------
    X_prototypes : ndarray of shape (n, n_features)
    y_prototypes : ndarray of shape (n,)
        Each prototype's class (classification) or the mean target of its cluster (regression).

    Examples
    --------
    >>> from fhe_sklearn import KNeighborsClassifier
    >>> model = KNeighborsClassifier(n_neighbors=5).fit(*select_prototypes(X_train, y_train, 50))  # doctest: +SKIP
    """
    X, y = check_X_y(X, y, dtype=np.float64, y_numeric=False)
    if isinstance(n_prototypes, bool) or not isinstance(n_prototypes, (int, np.integer)) or n_prototypes < 1:
        raise ValueError(f"n_prototypes must be a positive integer, got {n_prototypes!r}")
    if task not in ("classification", "regression"):
        raise ValueError(f"task must be 'classification' or 'regression', got {task!r}")
    if method not in ("kmeans", "random"):
        raise ValueError(f"method must be 'kmeans' or 'random', got {method!r}")
    rng = check_random_state(random_state)
    if method == "random":
        if n_prototypes >= len(X):
            return X, np.asarray(y)
        if task == "classification" and n_prototypes < len(np.unique(y)):
            raise ValueError(f"n_prototypes={n_prototypes} is fewer than the {len(np.unique(y))} classes")
        stratify = y if task == "classification" else None
        return tuple(resample(X, y, n_samples=int(n_prototypes), replace=False, stratify=stratify, random_state=rng))
    if task == "regression":
        y = np.asarray(y, dtype=np.float64)
        centres, labels = _centres(X, int(n_prototypes), rng)
        return centres, np.array([y[labels == c].mean() for c in range(len(centres))])
    classes, counts = np.unique(y, return_counts=True)
    if n_prototypes < len(classes):
        raise ValueError(f"n_prototypes={n_prototypes} is fewer than the {len(classes)} classes")
    parts = [
        _centres(X[y == label], int(share), rng)[0]
        for label, share in zip(classes, _class_shares(counts, int(n_prototypes)))
    ]
    return np.concatenate(parts), np.concatenate([np.full(len(p), label) for p, label in zip(parts, classes)])


__all__ = ["select_prototypes"]

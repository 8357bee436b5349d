"""k-NN on a capped training set: which n points to keep (fhe_sklearn.prototypes).

    python -m benchmarks.prototypes   # writes benchmarks/results/prototypes.{json,md}

The whole standardized training set (breast_cancer 455 rows, diabetes 353) against n points
of it: the first n rows, a random subset (stratified by class for the classifier), k-means
prototypes. k=5, default n_bits, the integer circuit in the clear (which simulate equals, see
tests/test_neighbors.py). A circuit on n points costs what the n_train rows of
benchmarks/results/neighbors.md say (50 points: 169 MB of keys, 44 s per query).
"""

from __future__ import annotations

from functools import partial

import numpy as np
from sklearn import neighbors as sk_neighbors
from sklearn.metrics import r2_score

from benchmarks.common import markdown_table, write_results
from benchmarks.run import load

SIZES = (20, 50, 100, 200)
SEEDS = (0, 1, 2)


def subsets(X: np.ndarray, y: np.ndarray, n: int, task: str, seed: int) -> dict[str, tuple]:
    from fhe_sklearn.prototypes import select_prototypes

    return {
        "first n": (X[:n], y[:n]),
        "random": select_prototypes(X, y, n, task=task, method="random", random_state=seed),
        "k-means": select_prototypes(X, y, n, task=task, method="kmeans", random_state=seed),
    }


def run() -> list[dict]:
    import fhe_sklearn

    rows = []
    for dataset, task in (("breast_cancer", "classification"), ("diabetes", "regression")):
        X_train, X_test, y_train, y_test = load(dataset)
        if task == "classification":
            full = sk_neighbors.KNeighborsClassifier().fit(X_train, y_train).predict(X_test)
            cls, metric = fhe_sklearn.KNeighborsClassifier, "agreement with the whole set's scikit-learn k-NN"
        else:
            full = sk_neighbors.KNeighborsRegressor().fit(X_train, y_train).predict(X_test)
            cls, metric = fhe_sklearn.KNeighborsRegressor, "test R²"
        whole = None if task == "classification" else float(r2_score(y_test, full))  # agreement: 1 by definition
        for n in SIZES:
            scores: dict[str, list[float]] = {}
            for seed in SEEDS:
                for name, (X_p, y_p) in subsets(X_train, y_train, n, task, seed).items():
                    pred = cls(n_neighbors=5).fit(X_p, y_p).predict(X_test)
                    score = np.mean(pred == full) if task == "classification" else r2_score(y_test, pred)
                    scores.setdefault(name, []).append(float(score))
            row = {"dataset": dataset, "metric": metric, "n": n, "whole set (scikit-learn)": whole}
            row.update({name: float(np.mean(v)) for name, v in scores.items()})
            rows.append(row)
            print(row, flush=True)
    return rows


def write(rows: list[dict]) -> str:
    """``results/prototypes.json`` and ``.md``; returns the markdown table."""
    notes = f"Mean over seeds {list(SEEDS)} (the first n rows: one value). k=5, default n_bits."
    return write_results(
        "prototypes",
        "k-NN on n points of the training set",
        rows,
        notes,
        extra={"notes": notes},
        table=partial(markdown_table, float_format=".3f", missing="–"),
    )


if __name__ == "__main__":
    print(write(run()))

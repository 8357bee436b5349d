"""KNeighborsClassifier in FHE: cost vs training-set size.

    python -m benchmarks.neighbors                # writes benchmarks/results/neighbors.{json,md}
    N_TRAIN=50,100 python -m benchmarks.neighbors  # only those training-set sizes

breast_cancer, standardized, the first n_train training rows (50, 100, 200), k=5, default
n_bits; agreement with scikit-learn's KNN on the test set in the clear (the integer circuit)
and on simulated rows, then key generation and one encrypted query. Also the number of
compare-exchanges (one PBS each) of the two selection networks considered for the k-th
smallest distance.
"""

from __future__ import annotations

import os
import time
from functools import partial

import numpy as np
from sklearn import neighbors as sk_neighbors

from benchmarks.common import markdown_table, write_results
from benchmarks.run import load

N_TRAIN = (50, 100, 200)
N_SIMULATE = 20


def bubble_comparators(n: int, k: int) -> int:
    """Compare-exchanges of k bubble passes (the network fhe_sklearn uses)."""
    return sum(n - 1 - rank for rank in range(k))


def pruned_batcher_comparators(n: int, k: int) -> int:
    """Compare-exchanges of Batcher's odd-even merge sort on n keys (padded to a power of
    two), keeping only those the k-th output depends on."""
    size = 1 << max(0, (n - 1).bit_length())
    network = []
    p = 1
    while p < size:
        step = p
        while step >= 1:
            for j in range(step % p, size - step, 2 * step):
                for i in range(min(step, size - j - step)):
                    if (i + j) // (2 * p) == (i + j + step) // (2 * p):
                        network.append((i + j, i + j + step))
            step //= 2
        p *= 2
    live, kept = {k - 1}, 0
    for a, b in reversed(network):
        if a in live or b in live:
            live |= {a, b}
            kept += b < n  # a comparator against padding (+inf) is free
    return kept


def run(n_train: int, n_execute: int = 1) -> dict:
    import fhe_sklearn
    from fhe_sklearn.evaluation import measure_fhe_model

    X_train, X_test, y_train, y_test = load("breast_cancer")
    X_train, y_train = X_train[:n_train], y_train[:n_train]
    model = fhe_sklearn.KNeighborsClassifier().fit(X_train, y_train)
    reference = sk_neighbors.KNeighborsClassifier().fit(X_train, y_train).predict(X_test)
    result = measure_fhe_model(model, X_train, X_test, y_test, n_execute=n_execute, n_simulate=N_SIMULATE)
    return {
        "n_train": n_train,
        "agreement_with_sklearn": float(np.mean(model.predict(X_test) == reference)),
        "simulate_agreement": float(
            np.mean(model.predict(X_test[:N_SIMULATE], fhe="simulate") == reference[:N_SIMULATE])
        ),
        "bubble_comparators": bubble_comparators(n_train, 5),
        "pruned_batcher_comparators": pruned_batcher_comparators(n_train, 5),
        **{k: result[k] for k in ("pbs_count", "max_bit_width", "complexity", "compile_s", "keygen_s")},
        "execute_s_per_query": None
        if result["execute_ms_per_sample"] is None
        else result["execute_ms_per_sample"] / 1e3,
        "execute_equals_simulate": result["execute_equals_simulate"],
        "evaluation_keys_mb": result["evaluation_keys_mb"],
    }


def main() -> None:
    rows = []
    sizes = [int(n) for n in os.environ.get("N_TRAIN", ",".join(map(str, N_TRAIN))).split(",")]
    for n in sizes:
        start = time.perf_counter()
        rows.append(run(n, n_execute=int(os.environ.get("N_EXECUTE", "1"))))
        print(rows[-1], f"({time.perf_counter() - start:.0f} s)", flush=True)
    notes = (
        "k=5, n_bits default (3 input bits, distances cut to a 4-bit window). PBS: the compiled circuit's count; "
        "bubble / pruned Batcher: compare-exchanges of each selection network (one PBS each in this "
        "circuit); fhe_sklearn uses bubble passes. Execute: one encrypted query, sequential."
    )
    print(write(rows, notes))


def write(rows: list[dict], notes: str) -> str:
    """``results/neighbors.json`` and ``.md``; returns the markdown table."""
    return write_results(
        "neighbors",
        "KNeighborsClassifier in FHE vs n_train (breast_cancer)",
        rows,
        notes,
        extra={"notes": notes},
        table=partial(markdown_table, float_format=".4g", missing="–"),
    )


if __name__ == "__main__":
    main()
    os._exit(0)  # concrete's runtime resets the exit status once a circuit ran

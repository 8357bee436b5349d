"""Linear-model benchmark: LogisticRegression(n_bits=8) on breast_cancer (test_size=0.2,
random_state=0), raw and standardized features.

    python -m benchmarks.linear        # writes benchmarks/results/linear.{json,md}
"""

from __future__ import annotations

import argparse

from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from benchmarks.common import write_results
from fhe_sklearn import LogisticRegression
from fhe_sklearn.evaluation import measure_fhe_model

TARGETS = {"simulate_score": 0.938, "pbs_count": 0, "compile_s": 2.3, "execute_ms_per_sample": 13.0}


def run(n_execute: int) -> list[dict]:
    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(X_train)
    cases = {
        "raw features": (X_train, X_test),
        "standardized": (scaler.transform(X_train), scaler.transform(X_test)),
    }
    rows = []
    for label, (train, test) in cases.items():
        model = LogisticRegression(n_bits=8, max_iter=10000).fit(train, y_train)
        result = measure_fhe_model(model, train, test, y_test, n_execute=n_execute)
        rows.append({"model": f"LogisticRegression(n_bits=8), {label}", **result})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-execute", type=int, default=50, help="rows run with real encryption")
    args = parser.parse_args()
    targets = ", ".join(f"{k} {'≥' if k == 'simulate_score' else '≤'} {v}" for k, v in TARGETS.items())
    print(
        write_results(
            "linear",
            "Linear models: breast_cancer, test_size=0.2, random_state=0",
            run(args.n_execute),
            notes=f"Targets: {targets}",
            extra={"targets": TARGETS},
        )
    )


if __name__ == "__main__":
    main()

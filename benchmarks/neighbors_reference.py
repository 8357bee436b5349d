"""Concrete ML 1.9's KNeighborsClassifier on the cases of benchmarks/neighbors.py.

    python -m benchmarks.neighbors_reference [--cml-python /tmp/cml/bin/python]

breast_cancer (standardized, test_size=0.2, random_state=0), the first ``n_train`` training
points, k=5, ``n_bits`` as given. Each case runs in Concrete ML's interpreter (its own
virtualenv, built by ``../shared/reference/setup_concrete_ml.sh``); a case that does not compile
is written with concrete's message. Writes ``benchmarks/results/neighbors_reference.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: (n_train, n_bits): 50 points at our default 3 input bits, then smaller cases
CASES = ((50, 3), (50, 2), (20, 3), (20, 2))


def reference_case(n_train: int, n_bits: int) -> dict:
    """One case, in Concrete ML's interpreter: compile, key generation, one encrypted query."""
    import numpy as np
    from concrete.ml.sklearn import KNeighborsClassifier
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.neighbors import KNeighborsClassifier as Reference
    from sklearn.preprocessing import StandardScaler

    X, y = datasets.load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train)[:n_train], scaler.transform(X_test)
    y_train = y_train[:n_train]
    model = KNeighborsClassifier(n_bits=n_bits, n_neighbors=5).fit(X_train, y_train)
    row = {"n_train": n_train, "n_bits": n_bits}
    reference = Reference(n_neighbors=5).fit(X_train, y_train).predict(X_test)
    row["agreement_with_sklearn"] = float(np.mean(model.predict(X_test) == reference))
    start = time.perf_counter()
    try:
        model.compile(X_train)
    except RuntimeError as err:  # concrete's optimizer finds no parameters
        row["compiles"] = f"no ({str(err).strip().splitlines()[-1][:80]})"
        return row
    circuit = model.fhe_circuit
    row.update(compiles="yes", compile_s=round(time.perf_counter() - start, 1))
    row.update(pbs_count=circuit.programmable_bootstrap_count, max_bit_width=circuit.graph.maximum_integer_bit_width())
    start = time.perf_counter()
    circuit.keygen(force=True)
    row["keygen_s"] = round(time.perf_counter() - start, 1)
    row["evaluation_keys_mb"] = round(len(circuit.keys.evaluation.serialize()) / 1e6, 1)
    start = time.perf_counter()
    encrypted = model.predict(X_test[:1], fhe="execute")
    row["execute_s_per_query"] = round(time.perf_counter() - start, 1)
    row["execute_equals_disable"] = bool(encrypted[0] == model.predict(X_test[:1])[0])
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--cml-python", default="/tmp/cml/bin/python")
    args = parser.parse_args()
    if args.case:
        print(json.dumps(reference_case(*json.loads(args.case))))
        sys.stdout.flush()
        os._exit(0)
    from benchmarks.common import markdown_table, write_results

    rows = []
    root = Path(__file__).resolve().parents[1]
    for case in CASES:
        done = subprocess.run(
            [args.cml_python, "-m", "benchmarks.neighbors_reference", "--case", json.dumps(case)],
            capture_output=True,
            text=True,
            cwd=root,
            env={**os.environ, "PYTHONPATH": str(root)},
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            raise SystemExit(f"Concrete ML case {case} failed:\n{done.stderr[-2000:]}")
        rows.append(json.loads(lines[-1]))
        print(rows[-1], flush=True)
    notes = (
        "Concrete ML 1.9's `KNeighborsClassifier(n_neighbors=5)` on breast_cancer (30 features), the "
        "first n_train training points, in its own virtualenv. fhe_sklearn's figures on the same "
        "cases: `benchmarks/results/neighbors.md` (50 points, 3 input bits: 97 MB of keys, 27 s per query)."
    )
    table = write_results(
        "neighbors_reference",
        "Concrete ML 1.9 k-NN on breast_cancer",
        rows,
        notes,
        table=lambda r: markdown_table(r, ".3f"),
    )
    print(table)
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()

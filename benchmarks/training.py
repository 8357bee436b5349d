"""Encrypted training benchmark (issue 25), side by side with Concrete ML 1.9.

    python -m benchmarks.training [--cml-python /tmp/cml/bin/python] [--cml-log FILE]

Accuracy: breast_cancer (binary), wine (3 classes, one-vs-rest) and diabetes (regression),
standardized, test_size=0.2, random_state=0, 5 epochs, random_state 0..2: the encrypted
training's integers (``fhe="disable"``, the same integers as the circuit) against
scikit-learn's float SGD with the same epochs. Exactness: ``fhe="simulate"`` == ``"disable"``
on the weights (one epoch on 64 rows), and one full step executed on ciphertexts ==
simulated. Cost: the per-step circuit (batch 8, breast_cancer's 30 features): PBS,
complexity, evaluation keys, keygen, seconds per encrypted step; Concrete ML's
``SGDClassifier(fit_encrypted=True, parameters_range=(-1, 1))`` measured the same way in its
own virtualenv (``--cml-python``), or read from the log of such a run (``--cml-log``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.linear_model import SGDClassifier as FloatSGDClassifier
from sklearn.linear_model import SGDRegressor as FloatSGDRegressor
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from benchmarks.common import markdown_table, write_results
from fhe_sklearn import SGDClassifier, SGDRegressor
from fhe_sklearn.exceptions import InputRangeWarning

EPOCHS = 5
SEEDS = (0, 1, 2)
#: the configuration the acceptance numbers use (README)
CLASSIFIER = {"parameters_range": (-1, 1), "input_range": (1, 99), "batch_size": 8}
REGRESSOR = {"parameters_range": (-1, 1), "batch_size": 8}

CML_SCRIPT = r"""
import json, os, time
import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from concrete.ml.sklearn import SGDClassifier
X, y = load_breast_cancer(return_X_y=True)
Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
sc = StandardScaler().fit(Xtr); Xtr, Xte = sc.transform(Xtr), sc.transform(Xte)
m = SGDClassifier(random_state=0, max_iter=2, fit_encrypted=True, parameters_range=(-1, 1), verbose=True)
t = time.time(); m.fit(Xtr, ytr, fhe="execute"); total = time.time() - t
c = m.training_quantized_module.fhe_circuit
print(json.dumps({"total": total, "pbs": c.programmable_bootstrap_count, "complexity": c.complexity,
  "evk": len(c.keys.evaluation.serialize()), "p_error": c.p_error}))
os._exit(0)
"""


def _split(loader, stratify: bool) -> tuple:
    X, y = loader(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.2, random_state=0, stratify=y if stratify else None
    )
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def accuracy_rows() -> list[dict]:
    rows = []
    cases = [
        ("breast_cancer", load_breast_cancer, True),
        ("wine (3 classes)", load_wine, True),
        ("diabetes (R²)", load_diabetes, False),
    ]
    for name, loader, classification in cases:
        X_train, X_test, y_train, y_test = _split(loader, classification)
        ours, theirs = [], []
        for seed in SEEDS:
            if classification:
                model = SGDClassifier(fit_encrypted=True, max_iter=EPOCHS, random_state=seed, **CLASSIFIER)
                reference = FloatSGDClassifier(loss="log_loss", max_iter=EPOCHS, tol=None, random_state=seed)
            else:
                model = SGDRegressor(fit_encrypted=True, max_iter=EPOCHS, random_state=seed, **REGRESSOR)
                reference = FloatSGDRegressor(max_iter=EPOCHS, tol=None, random_state=seed)
            model.fit(X_train, y_train)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InputRangeWarning)
                ours.append(model.sklearn_model_.score(X_test, y_test))
            theirs.append(reference.fit(X_train, y_train).score(X_test, y_test))
        rows.append(
            {
                "dataset": name,
                "float SGD (sklearn)": round(float(np.mean(theirs)), 3),
                "encrypted training": round(float(np.mean(ours)), 3),
                "difference": round(float(np.mean(ours) - np.mean(theirs)), 3),
                "per seed (ours)": [round(float(v), 3) for v in ours],
                "effective learning rate": round(model._training_plan.effective_learning_rate, 4),
            }
        )
    return rows


def exactness_and_cost(execute: bool) -> dict:
    X_train, _, y_train, _ = _split(load_breast_cancer, True)
    X, y = X_train[:64], y_train[:64]
    disabled = SGDClassifier(fit_encrypted=True, max_iter=1, random_state=0, **CLASSIFIER).fit(X, y)
    simulated = SGDClassifier(fit_encrypted=True, max_iter=1, random_state=0, **CLASSIFIER)
    start = time.perf_counter()
    simulated.fit(X, y, fhe="simulate")
    result = {
        "simulate == disable (weights, 8 steps)": bool(
            np.array_equal(simulated._training_weights, disabled._training_weights)
        ),
        "simulate s (8 steps, with compile)": round(time.perf_counter() - start, 1),
    }
    if not execute:
        return result
    circuit = disabled.training_circuit()
    result.update(circuit.statistics())
    result["compile s"] = round(circuit.timings["compile"], 1)
    result["keygen s"] = round(circuit.keygen(), 1)
    result["evaluation keys MB"] = round(circuit.evaluation_key_bytes() / 2**20, 1)
    plan = disabled._training_plan
    rng = np.random.default_rng(0)
    x, yb = disabled._features(X[:8]), y[:8, None].astype(np.int64)
    v = disabled._training_weights
    u = plan.draw_dither(rng)
    v_enc = circuit.encrypt_weights(v)
    x_enc, y_enc, u_clear = circuit.encrypt_batch(x, yb, u)
    start = time.perf_counter()
    out = circuit.run(x_enc, y_enc, v_enc, u_clear)
    result["s per encrypted step"] = round(time.perf_counter() - start, 1)
    result["execute == simulate (one full step)"] = bool(
        np.array_equal(circuit.decrypt_weights(out), plan.step(x, yb, v, u))
    )
    return result


def concrete_ml(python: str | None, log: str | None) -> dict | None:
    """Concrete ML's training circuit figures: run in its virtualenv, or parsed from a log."""
    if log is None and python is None:
        return None
    if log is None:
        with tempfile.TemporaryDirectory() as tmp:
            script = Path(tmp) / "cml_training.py"
            script.write_text(CML_SCRIPT)
            text = subprocess.run([python, str(script)], capture_output=True, text=True, cwd=tmp).stdout
    else:
        text = Path(log).read_text()
    steps = [float(s) for s in re.findall(r"Iteration \d+ took ([0-9.]+) seconds", text)]
    keygen = re.findall(r"Key generation took ([0-9.]+) seconds", text)
    last = text.strip().splitlines()[-1] if text.strip() else ""
    figures = json.loads(last) if last.startswith("{") else {"pbs": None, "complexity": None, "evk": 0}
    return {
        "pbs": figures["pbs"],
        "complexity": figures["complexity"],
        "evaluation keys MB": round(figures["evk"] / 2**20, 1) if figures["evk"] else None,
        "keygen s": round(float(keygen[0]), 1) if keygen else None,
        "s per encrypted step": round(float(np.mean(steps)), 1) if steps else None,
        "steps s": [round(v, 1) for v in steps],
        "p_error (per PBS)": figures.get("p_error"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cml-python", default=None, help="Concrete ML's virtualenv python")
    parser.add_argument("--cml-log", default=None, help="read Concrete ML's figures from a log of CML_SCRIPT")
    parser.add_argument("--no-execute", action="store_true", help="skip key generation and the encrypted step")
    parser.add_argument(
        "--reuse-ours", default=None, help="take our step figures from a previous results/training.json"
    )
    args = parser.parse_args()
    accuracy = accuracy_rows()
    if args.reuse_ours:
        previous = json.loads(Path(args.reuse_ours).read_text())["rows"][0]
        cost = {k: v for k, v in previous.items() if k}
    else:
        cost = exactness_and_cost(not args.no_execute)
    cml = concrete_ml(args.cml_python, args.cml_log)
    rows = [{"": "fhe_sklearn", **cost}]
    if cml:
        rows.append({"": "Concrete ML 1.9", **cml})
        ratios = {
            k: round(cost[k] / cml[k], 3)
            for k in ("pbs", "complexity", "keygen s", "evaluation keys MB", "s per encrypted step")
            if cost.get(k) and cml.get(k)
        }
        rows.append({"": "ratio (ours / CML)", **ratios})
    notes = (
        f"Accuracy: mean over random_state {list(SEEDS)}, {EPOCHS} epochs, test set; ours with {CLASSIFIER} "
        f"(classifiers) / {REGRESSOR} (regressor).\n\n" + markdown_table(accuracy) + "\n\nCost of one step (batch 8, "
        "30 features):"
    )
    print(
        write_results(
            "training",
            "Encrypted training: SGD on encrypted data, labels and weights",
            rows,
            notes=notes,
            extra={"accuracy": accuracy},
            table=markdown_table,
        )
    )
    print(markdown_table(accuracy))
    os._exit(0)  # concrete's runtime resets the exit status at interpreter exit


if __name__ == "__main__":
    main()

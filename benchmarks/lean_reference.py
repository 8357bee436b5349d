"""One case of benchmarks/lean.py through Concrete ML, in Concrete ML's own virtualenv:

    /tmp/cml/bin/python benchmarks/lean_reference.py '{"dataset": ..., "class": "xgb", ...}'

Prints one JSON line with the figures benchmarks/lean.py reports. Standalone on purpose: it
imports neither fhe_sklearn nor its dependencies, only scikit-learn and concrete-ml, with
Concrete ML's defaults apart from ``n_bits=6``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np


def load(dataset: str) -> tuple:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def network(spec: dict) -> dict:
    """A network row: the trained torch weights of benchmarks/lean_networks.py, compiled by
    Concrete ML's ``compile_torch_model`` with the same bits (architectures as there)."""
    import torch
    from concrete.ml.torch.compile import compile_torch_model
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, _, y_test = train_test_split(X / 16.0, y, test_size=0.2, random_state=0)
    if spec["network"] == "mlp":
        net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    else:
        layers = [torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten()]
        net = torch.nn.Sequential(*layers, torch.nn.Linear(36, 10))
        X_train, X_test = X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8)
    net.load_state_dict(torch.load(spec["weights"]))
    net.eval()
    module = compile_torch_model(net, X_train.astype(np.float32), **spec["params"])
    circuit = module.fhe_circuit
    simulated = module.forward(X_test.astype(np.float32), fhe="simulate")
    start = time.perf_counter()
    circuit.keygen(force=True)
    keygen_s = time.perf_counter() - start
    x_q = module.quantize_input(X_test[: 1 + spec["n_execute"]].astype(np.float32))
    encrypted = circuit.encrypt(x_q[:1])
    result = circuit.run(encrypted)  # warm-up, as for fhe_sklearn
    n = spec["n_execute"]
    start = time.perf_counter()
    for i in range(1, 1 + n):
        circuit.decrypt(circuit.run(circuit.encrypt(x_q[i : i + 1])))
    execute_s = (time.perf_counter() - start) / n
    return {
        "simulate_score": float(np.mean(simulated.argmax(1) == y_test)),
        **figures(circuit),
        "keygen_s": keygen_s,
        "execute_s_per_row": execute_s,
        "input_bytes": len(encrypted.serialize()),
        "output_bytes": len(result.serialize()),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def figures(circuit) -> dict:
    return {
        "pbs_count": int(circuit.programmable_bootstrap_count),
        "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
        "pbs_precisions": len(circuit.statistics["programmable_bootstrap_count_per_parameter"]),
        "complexity": float(circuit.complexity),
        "evaluation_keys_mb": len(circuit.keys.evaluation.serialize()) / 1e6,
    }


def imported(spec: dict) -> dict:
    """Concrete ML's ``from_sklearn_model`` on a float model fitted on the raw (standardized)
    inputs, as fhe_sklearn's estimators fit theirs: its accuracy in simulation, next to the
    float model's (the same trees as fhe_sklearn's where the scikit-learn versions agree)."""
    import sklearn.ensemble
    import sklearn.tree
    import xgboost
    from concrete.ml import sklearn as cml

    X_train, X_test, y_train, y_test = load(spec["dataset"])
    regressor = spec["dataset"] == "diabetes"
    kind = "Regressor" if regressor else "Classifier"
    name = {"tree": "DecisionTree", "rf": "RandomForest", "xgb": "XGB"}[spec["class"]] + kind
    module = {"tree": sklearn.tree, "rf": sklearn.ensemble, "xgb": xgboost}[spec["class"]]
    float_model = getattr(module, name)(**spec["params"]).fit(X_train, y_train)
    model = getattr(cml, name).from_sklearn_model(float_model, X_train, n_bits=6)
    model.compile(X_train)
    score = _scorer(regressor, y_test)
    return {
        "imported_float_score": score(float_model.predict(X_test)),
        "imported_simulate_score": score(model.predict(X_test, fhe="simulate")),
    }


def _scorer(regressor: bool, y_test: np.ndarray):
    from sklearn.metrics import r2_score

    def score(y_pred: np.ndarray) -> float:
        return float(r2_score(y_test, y_pred) if regressor else np.mean(y_pred == y_test))

    return score


def main(spec: dict) -> dict:
    if "network" in spec:
        return network(spec)
    if spec.get("imported"):
        return imported(spec)
    from concrete.ml import sklearn as cml

    X_train, X_test, y_train, y_test = load(spec["dataset"])
    regressor = spec["dataset"] == "diabetes"
    names = {"tree": "DecisionTree", "rf": "RandomForest", "xgb": "XGB"}
    cls = getattr(cml, names[spec["class"]] + ("Regressor" if regressor else "Classifier"))
    model = cls(n_bits=6, **spec["params"]).fit(X_train, y_train)
    circuit = model.compile(X_train)
    score = _scorer(regressor, y_test)

    simulated = model.predict(X_test, fhe="simulate")
    start = time.perf_counter()
    circuit.keygen(force=True)
    keygen_s = time.perf_counter() - start
    x_q = model.quantize_input(X_test[:1])
    encrypted = circuit.encrypt(x_q)
    output = circuit.run(encrypted)  # warm-up, as for fhe_sklearn
    n = spec["n_execute"]
    start = time.perf_counter()
    model.predict(X_test[1 : 1 + n], fhe="execute")
    execute_s = (time.perf_counter() - start) / n
    return {
        "simulate_score": score(simulated),
        "pbs_count": int(circuit.programmable_bootstrap_count),
        "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
        "pbs_precisions": len(circuit.statistics["programmable_bootstrap_count_per_parameter"]),
        "complexity": float(circuit.complexity),
        "evaluation_keys_mb": len(circuit.keys.evaluation.serialize()) / 1e6,
        "keygen_s": keygen_s,
        "execute_s_per_row": execute_s,
        "input_bytes": len(encrypted.serialize()),
        "output_bytes": len(output.serialize()),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))), flush=True)
    os._exit(0)  # concrete's runtime resets the exit status at interpreter exit

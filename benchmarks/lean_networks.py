"""Imported networks in the lean benchmark (issue 28): the digits MLP 64-32-10 and the PTQ
CNN of benchmarks/byo_network.py, through ``compile_torch_model`` with ``n_bits=6`` and
``rounding_threshold_bits=5``, next to Concrete ML 1.9's ``compile_torch_model`` on the same
trained network and bits (benchmarks/lean_reference.py).

    python -m benchmarks.lean --cases net        # only these rows
"""

from __future__ import annotations

import json
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

#: (label, architecture, compile parameters): the benchmark's network rows
NETWORK_CASES: list[tuple[str, str, dict]] = [
    ("torch MLP 64-32-10 (digits)", "mlp", {"n_bits": 6, "rounding_threshold_bits": 5}),
    ("PTQ CNN conv4-pool-fc (digits)", "cnn", {"n_bits": 6, "rounding_threshold_bits": 5}),
]
EPOCHS = 150


def digits() -> tuple:
    """sklearn digits scaled to [0, 1], test_size=0.2, random_state=0 (as byo_network)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return tuple(train_test_split(X / 16.0, y, test_size=0.2, random_state=0))


def build(architecture: str) -> Any:
    """The untrained network (seed 0); the same definition is in lean_reference.py."""
    import torch

    torch.manual_seed(0)
    if architecture == "mlp":
        return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(36, 10)
    )


def shaped(architecture: str, X: np.ndarray) -> np.ndarray:
    """Rows for ``architecture``: images (n, 1, 8, 8) for the CNN."""
    return X.reshape(-1, 1, 8, 8) if architecture == "cnn" else X


def run_network_case(label: str, architecture: str, params: dict, n_execute: int, weights: str) -> dict[str, Any]:
    """One row (in a fresh process): train, compile, simulate the test set, keys, execute;
    the trained weights are saved to ``weights`` for the Concrete ML run."""
    import torch

    from benchmarks.byo_network import train
    from benchmarks.lean import circuit_figures, key_and_run_figures
    from fhe_sklearn.torch import compile_torch_model

    X_train, X_test, y_train, y_test = digits()
    X_train, X_test = shaped(architecture, X_train), shaped(architecture, X_test)
    net = train(build(architecture), X_train, y_train, EPOCHS)
    torch.save(net.state_dict(), weights)
    with torch.no_grad():
        float_pred = net(torch.tensor(X_test, dtype=torch.float32)).argmax(1).numpy()
    start = time.perf_counter()
    module = compile_torch_model(net, X_train, **params)
    module.fhe_circuit.enable_fhe_execution()  # built on first use: part of the compile time
    compile_s = time.perf_counter() - start
    x_q = module.quantize_input(X_test)
    disabled = module.quantized_forward(x_q, fhe="disable")
    simulated = module.quantized_forward(x_q, fhe="simulate")

    def score(q: np.ndarray) -> float:
        return float(np.mean(module.dequantize_output(q).argmax(1) == y_test))

    rows = [(x_q[i : i + 1],) for i in range(n_execute + 1)]
    run = key_and_run_figures(module.fhe_circuit, rows, n_execute)
    executed = run.pop("executed")
    return {
        "case": label,
        "model": f"compile_torch_model ({architecture})",
        "params": params,
        "dataset": "digits",
        "metric": "accuracy",
        "float_score": float(np.mean(float_pred == y_test)),
        "disable_score": score(disabled),
        "simulate_score": score(simulated),
        "simulate_equals_disable": bool(np.array_equal(disabled, simulated)),
        "execute_equals_simulate": all(
            np.array_equal(np.asarray(e).reshape(-1), simulated[i + 1].reshape(-1)) for i, e in enumerate(executed)
        ),
        "n_execute": len(executed),
        "compile_s": compile_s,
        "weight_bits": [op.weight_bits for op in module.ops if hasattr(op, "weight_bits")],
        **circuit_figures(module.fhe_circuit),
        **run,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_network_reference(
    python: str, label: str, architecture: str, params: dict, n_execute: int, weights: str
) -> dict:
    """Concrete ML 1.9 on the same trained network, in its own interpreter."""
    from benchmarks.lean import reference_run

    spec = {"network": architecture, "weights": weights, "params": params, "n_execute": n_execute, "dataset": "digits"}
    return reference_run(python, label, spec)


def network_rows(reference: str | None, n_execute: int, in_fresh_process: Any) -> list[dict]:
    """Every network row, each in its own process, with Concrete ML's figures if asked."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, architecture, params in NETWORK_CASES:
            print(f"{label}...", flush=True)
            weights = str(Path(tmp) / f"{architecture}.pt")
            row = in_fresh_process(run_network_case, label, architecture, params, n_execute, weights)
            if reference:
                print(f"{label}: Concrete ML...", flush=True)
                row["reference"] = run_network_reference(reference, label, architecture, params, n_execute, weights)
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "params"}), flush=True)
    return rows

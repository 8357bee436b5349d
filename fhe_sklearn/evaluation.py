"""Measure a fitted FHE estimator: float vs FHE score, circuit cost, and FHE timings."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from sklearn.base import is_classifier
from sklearn.metrics import accuracy_score, r2_score
from tqdm import tqdm


def measure_fhe_model(
    model: Any,
    X_train: Any,
    X_test: Any,
    y_test: Any,
    n_execute: int = 5,
    n_simulate: int | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Compile ``model`` on ``X_train``, then report accuracy (or R²) and FHE costs.

    Returns
    -------
    dict
        ``float_score``, ``disable_score``, ``simulate_score`` (on at most ``n_simulate`` test
        rows), ``metric``, ``execute_equals_simulate`` (the decrypted integer outputs of
        ``n_execute`` rows equal their simulation), ``compile_s``,
        ``keygen_s``, ``execute_ms_per_sample``, ``pbs_count``, ``complexity``,
        ``max_bit_width``, ``evaluation_keys_mb``. With ``n_execute=0`` there is no key
        generation and the execute and key figures are None.
    """
    score, metric = (accuracy_score, "accuracy") if is_classifier(model) else (r2_score, "r2")
    X_sim = X_test[:n_simulate] if n_simulate else X_test
    y_sim = y_test[:n_simulate] if n_simulate else y_test
    rows = X_test[:n_execute]
    with tqdm(total=4, desc=type(model).__name__, disable=not progress, leave=False) as bar:
        bar.set_postfix_str("compile")
        start = time.perf_counter()
        circuit = model.compile(X_train)
        circuit.enable_fhe_execution()  # built on first use: part of the compile time
        compile_s = time.perf_counter() - start
        bar.update()
        bar.set_postfix_str("simulate")
        simulated = model.predict(X_sim, fhe="simulate")
        bar.update()
        keygen_s = execute_s = executed = None
        if n_execute > 0:
            bar.set_postfix_str("keygen")
            keygen_s = model.quantized_module_.keygen()
            bar.update()
            bar.set_postfix_str(f"execute {len(rows)} rows")
            module = model.quantized_module_
            x_q = model.quantize_input(rows)
            start = time.perf_counter()
            executed = module.quantized_forward(x_q, fhe="execute")
            execute_s = time.perf_counter() - start
            # the circuit's own outputs, before any rounding post-processing could hide a difference
            executed_equals_simulated = np.array_equal(executed, module.quantized_forward(x_q, fhe="simulate"))
            bar.update()
    return {
        "metric": metric,
        "float_score": float(score(y_test, model.sklearn_model.predict(X_test))),
        "disable_score": float(score(y_test, model.predict(X_test))),
        "simulate_score": float(score(y_sim, simulated)),
        "execute_equals_simulate": None if executed is None else bool(executed_equals_simulated),
        "n_execute": len(rows),
        "compile_s": compile_s,
        "keygen_s": keygen_s,
        "execute_ms_per_sample": None if execute_s is None else 1000 * execute_s / len(rows),
        "pbs_count": int(circuit.programmable_bootstrap_count),
        "complexity": float(circuit.complexity),
        "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
        "evaluation_keys_mb": None if executed is None else len(circuit.keys.evaluation.serialize()) / 1e6,
    }

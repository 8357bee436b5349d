"""Lean circuits: what each tree and network circuit costs the user, next to Concrete ML.

    python -m benchmarks.lean                                   # writes results/lean.{json,md}
    python -m benchmarks.lean --reference /tmp/cml/bin/python   # + Concrete ML 1.9, same run
    python -m benchmarks.lean --compress no --output DIR        # concrete's default configuration

Cases (issue 13): breast_cancer (diabetes for the regressor), standardized, test_size=0.2,
random_state=0, n_bits=6 for trees, the README's network, k-NN (k=5, default n_bits and error
budget) on the first 50 or 200 training rows. Each case runs in its own process
(peak memory is its own, see benchmarks/run.py), one case at a time. Per case: accuracy of
the float model, of ``fhe="disable"`` and of ``fhe="simulate"`` on the whole test set (and
whether they agree), PBS, widest integer, distinct PBS precisions (parameter sets), the
compiler's ``complexity``, serialized evaluation keys, key generation time, execution time per
encrypted row (mean over ``--n-execute`` rows after one untimed warm-up row, which also
expands compressed keys), one encrypted input and output in bytes, and peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, machine
from benchmarks.lean_networks import NETWORK_CASES, network_rows
from benchmarks.run import _in_fresh_process, load

# (label, estimator, parameters, dataset, Concrete ML class or None)
CASES: list[tuple[str, str, dict, str, str | None]] = [
    ("DT depth 5", "DecisionTreeClassifier", {"max_depth": 5, "random_state": 0}, "breast_cancer", "tree"),
    ("XGB 20x3", "XGBClassifier", {"n_estimators": 20, "max_depth": 3}, "breast_cancer", "xgb"),
    (
        "RF 20x4",
        "RandomForestClassifier",
        {"n_estimators": 20, "max_depth": 4, "random_state": 0},
        "breast_cancer",
        "rf",
    ),
    ("XGBRegressor 20x3", "XGBRegressor", {"n_estimators": 20, "max_depth": 3}, "diabetes", "xgb"),
    (
        "RF 20x4 digits",
        "RandomForestClassifier",
        {"n_estimators": 20, "max_depth": 4, "random_state": 0},
        "digits",
        "rf",
    ),
    ("RF 20x4 wine", "RandomForestClassifier", {"n_estimators": 20, "max_depth": 4, "random_state": 0}, "wine", "rf"),
    ("NeuralNet (README)", "NeuralNetClassifier", {"random_state": 0}, "breast_cancer", None),
    # "dataset:n": the first n training rows. Concrete ML 1.9 finds no parameters for these
    # (benchmarks/neighbors_reference.py), so no reference side
    ("k-NN 50 points", "KNeighborsClassifier", {"n_neighbors": 5}, "breast_cancer:50", None),
    ("k-NN 200 points", "KNeighborsClassifier", {"n_neighbors": 5}, "breast_cancer:200", None),
]
#: estimators whose rows run at the tree settings below
TREE_MODELS = ("DecisionTree", "RandomForest", "XGB")
TREE_N_BITS = 6
#: Concrete ML figures on this machine and split when it cannot run here (issue 13)
REFERENCE_FALLBACK = {
    "DT depth 5": {"complexity": 6.6e9, "execute_s_per_row": 2.5},
    "XGB 20x3": {"complexity": 6.5e10, "execute_s_per_row": 9.6},
    "RF 20x4": {"complexity": 1.4e11, "execute_s_per_row": 17.1},
}


def circuit_figures(circuit: Any) -> dict[str, Any]:
    """Deterministic figures of a compiled circuit (no keys needed)."""
    stats = circuit.statistics
    return {
        "pbs_count": int(circuit.programmable_bootstrap_count),
        "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
        "pbs_precisions": len(stats["programmable_bootstrap_count_per_parameter"]),
        "complexity": float(circuit.complexity),
    }


def key_and_run_figures(circuit: Any, rows: list[tuple], n_execute: int) -> dict[str, Any]:
    """Key generation, evaluation-key and ciphertext bytes, and execute time per row."""
    start = time.perf_counter()
    circuit.keygen(force=True)
    keygen_s = time.perf_counter() - start
    encrypted = circuit.encrypt(*rows[0])
    result = circuit.run(encrypted)  # warm-up: compressed keys are expanded here
    outputs, times = [], []
    for row in rows[1 : 1 + n_execute]:
        start = time.perf_counter()
        outputs.append(circuit.decrypt(circuit.run(circuit.encrypt(*row))))
        times.append(time.perf_counter() - start)
    return {
        "evaluation_keys_mb": len(circuit.keys.evaluation.serialize()) / 1e6,
        "keygen_s": keygen_s,
        "execute_s_per_row": float(np.mean(times)) if times else None,
        "input_bytes": len(encrypted.serialize()),
        "output_bytes": len(result.serialize()),
        "executed": outputs,
    }


def run_case(label: str, name: str, params: dict, dataset: str, n_execute: int, compress: str) -> dict[str, Any]:
    """One row: fit, compile, simulate the test set, keys, execute; in a fresh process."""
    from concrete import fhe
    from sklearn.metrics import r2_score

    import fhe_sklearn

    dataset, _, n_train = dataset.partition(":")
    X_train, X_test, y_train, y_test = load(dataset)
    if n_train:
        X_train, y_train = X_train[: int(n_train)], y_train[: int(n_train)]
    tree = name.startswith(TREE_MODELS)
    if tree:
        # the upload of one integer per feature (the default keeps the thresholds private)
        params = {**params, "n_bits": TREE_N_BITS, "input_encoding": "rank"}
    model = getattr(fhe_sklearn, name)(**params).fit(X_train, y_train)
    # "default": the library's; "yes"/"no": compressed keys and inputs or not, explicitly
    configuration = {
        "default": None,
        "yes": fhe.Configuration(compress_evaluation_keys=True, compress_input_ciphertexts=True),
        "no": fhe.Configuration(),
    }[compress]
    start = time.perf_counter()
    # trees at Concrete ML's side's budget; the others at their own default (k-NN: looser)
    circuit = model.compile(X_train, configuration=configuration, global_p_error=1e-7 if tree else None)
    circuit.enable_fhe_execution()  # built on first use by default: part of the compile time
    compile_s = time.perf_counter() - start
    regressor = "Regressor" in name

    def score(y_pred: np.ndarray) -> float:
        return float(r2_score(y_test, y_pred) if regressor else np.mean(y_pred == y_test))

    disabled, simulated = model.predict(X_test), model.predict(X_test, fhe="simulate")
    module = model.quantized_module_
    x_q = module.quantize_input(X_test)
    rows = [(x_q[i : i + 1],) for i in range(min(len(x_q), n_execute + 1))]
    run = key_and_run_figures(circuit, rows, n_execute)
    executed = run.pop("executed")
    expected = [np.asarray(circuit.simulate(*row)) for row in rows[1 : 1 + n_execute]]
    return {
        "case": label,
        "model": name,
        "params": params,
        "dataset": dataset,
        "n_train": len(X_train),
        "metric": "r2" if regressor else "accuracy",
        "float_score": score(model.sklearn_model.predict(X_test)),
        "disable_score": score(disabled),
        "simulate_score": score(simulated),
        "simulate_equals_disable": bool(np.array_equal(disabled, simulated)),
        "execute_equals_simulate": all(np.array_equal(a, b) for a, b in zip(executed, expected)),
        "n_execute": len(executed),
        "compile_s": compile_s,
        **circuit_figures(circuit),
        **run,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_reference(python: str, label: str, dataset: str, cml_class: str, params: dict, n_execute: int) -> dict:
    """The same case through Concrete ML in its own interpreter (benchmarks/lean_reference.py):
    its own estimator (fitted on quantized inputs), and its import of a float model fitted as
    ours are (``imported_*``: the accuracy of each library's quantization of one float model)."""
    spec = {"dataset": dataset, "class": cml_class, "params": params, "n_execute": n_execute}
    return {**reference_run(python, label, spec), **reference_run(python, label, {**spec, "imported": True})}


def reference_run(python: str, label: str, spec: dict) -> dict:
    """benchmarks/lean_reference.py on ``spec`` in Concrete ML's interpreter: its last JSON line."""
    script = Path(__file__).with_name("lean_reference.py")
    done = subprocess.run(
        [python, str(script), json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": ""},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"Concrete ML run of {label} failed:\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def _dates_note(rows: list[dict]) -> str:
    dates = sorted({r["run_date"] for r in rows if r.get("run_date")})
    if len(dates) < 2:
        return ""
    return f" Rows come from runs on {', '.join(dates)} (`run_date` in lean.json): each row's ratios are from one run."


def merged_rows(previous: Path, rows: list[dict]) -> list[dict]:
    """``rows`` in place of the rows of the same case in ``previous`` (a lean.json), the
    others kept, in the benchmark's order of cases."""
    if not previous.exists():
        return rows
    by_case = {r["case"]: r for r in json.loads(previous.read_text())["rows"]}
    by_case.update((r["case"], r) for r in rows)
    order = [label for label, *_ in CASES] + [label for label, *_ in NETWORK_CASES]
    return sorted(by_case.values(), key=lambda r: order.index(r["case"]) if r["case"] in order else len(order))


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def markdown(rows: list[dict], info: dict) -> str:
    lines = [
        "# Lean circuits (issues 13, 28)",
        "",
        f"Machine: {info['machine']}; {info['date']}. One run, one case at a time, each in its own "
        "process. Datasets standardized, test_size=0.2, random_state=0; trees n_bits=6. Scores on the "
        "whole test set (accuracy, R² for the regressor). Execute: mean seconds per encrypted row "
        f"over {info['n_execute']} rows after a warm-up row. Keys: serialized evaluation keys. "
        "Input/output B: one encrypted row as serialized (compressed inputs). "
        "`ref` columns: Concrete ML 1.9 on the same case"
        + (" in the same run." if info["reference"] else " (issue's figures: it did not run here).")
        + _dates_note(rows),
        "",
        "| case | float | disable | simulate | sim == dis | exec == sim | PBS | max bits | precisions "
        "| complexity (ref, ratio) | keys MB (ref) | keygen s (ref) | execute s/row (ref, ratio) "
        "| input B (ref) | output B (ref) | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = r.get("reference") or {}
        cx_ratio = r["complexity"] / ref["complexity"] if ref.get("complexity") else None
        ex_ratio = (
            r["execute_s_per_row"] / ref["execute_s_per_row"]
            if ref.get("execute_s_per_row") and r["execute_s_per_row"]
            else None
        )
        lines.append(
            f"| {r['case']} | {r['float_score']:.3f} | {r['disable_score']:.3f} | {r['simulate_score']:.3f} "
            f"| {r['simulate_equals_disable']} | {r['execute_equals_simulate']} ({r['n_execute']}) "
            f"| {r['pbs_count']} | {r['max_bit_width']} | {r['pbs_precisions']} "
            f"| {r['complexity']:.2e} ({_fmt(ref.get('complexity'), '.2e')}, {_fmt(cx_ratio, '.2f')}x) "
            f"| {r['evaluation_keys_mb']:.0f} ({_fmt(ref.get('evaluation_keys_mb'), '.0f')}) "
            f"| {r['keygen_s']:.1f} ({_fmt(ref.get('keygen_s'), '.1f')}) "
            f"| {_fmt(r['execute_s_per_row'], '.3f')} ({_fmt(ref.get('execute_s_per_row'), '.2f')}, "
            f"{_fmt(ex_ratio, '.2f')}x) | {r['input_bytes']} ({_fmt(ref.get('input_bytes'), 'd')}) "
            f"| {r['output_bytes']} ({_fmt(ref.get('output_bytes'), 'd')}) | {r['peak_memory_mb']:.0f} |"
        )
    refs = [r for r in rows if r.get("reference")]
    if refs:
        lines += [
            "",
            "Concrete ML on the same cases (its estimators fit their float model on quantized inputs; "
            "`imported`: its `from_sklearn_model` of a float model fitted on the raw inputs, as ours, "
            "and that model's own score, the same trees as ours where the scikit-learn versions agree):",
            "",
            "| case | simulate | imported: float | imported: simulate | PBS | max bits | precisions | peak MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in refs:
            ref = r["reference"]
            lines.append(
                f"| {r['case']} | {_fmt(ref.get('simulate_score'), '.3f')} "
                f"| {_fmt(ref.get('imported_float_score'), '.3f')} | {_fmt(ref.get('imported_simulate_score'), '.3f')} "
                f"| {_fmt(ref.get('pbs_count'), 'd')} "
                f"| {_fmt(ref.get('max_bit_width'), 'd')} | {_fmt(ref.get('pbs_precisions'), 'd')} "
                f"| {_fmt(ref.get('peak_memory_mb'), '.0f')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", help="python of a Concrete ML 1.9 virtualenv, to run the cases side by side")
    parser.add_argument("--n-execute", type=int, default=3, help="encrypted rows timed per case")
    parser.add_argument("--cases", help="comma-separated case indices, 'net' for the network rows (default: all)")
    parser.add_argument("--compress", choices=("default", "yes", "no"), default="default", help="keys and inputs")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    tokens = args.cases.split(",") if args.cases else [*map(str, range(len(CASES))), "net"]
    chosen = [CASES[int(i)] for i in tokens if i != "net"]
    rows = []
    for label, name, params, dataset, cml_class in chosen:
        print(f"{label}...", flush=True)
        row = _in_fresh_process(run_case, label, name, params, dataset, args.n_execute, args.compress)
        if args.reference and cml_class:
            print(f"{label}: Concrete ML...", flush=True)
            row["reference"] = run_reference(args.reference, label, dataset, cml_class, params, args.n_execute)
        elif label in REFERENCE_FALLBACK:
            row["reference"] = {**REFERENCE_FALLBACK[label], "source": "issue 13"}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "params"}), flush=True)
    if "net" in tokens:  # imported networks (benchmarks/lean_networks.py)
        rows += network_rows(args.reference, args.n_execute, _in_fresh_process)
    info = {
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "n_execute": args.n_execute,
        "reference": bool(args.reference),
        "compress": args.compress,
    }
    for row in rows:
        row["run_date"] = info["date"]
    if args.cases:  # a rerun of some cases replaces those rows of the last results
        rows = merged_rows(args.output / "lean.json", rows)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "lean.json").write_text(json.dumps({**info, "rows": rows}, indent=2))
    (args.output / "lean.md").write_text(markdown(rows, info))
    print(markdown(rows, info))
    return rows


if __name__ == "__main__":
    status = 0
    try:
        main()
    except SystemExit as err:
        status = err.code if isinstance(err.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # concrete's runtime resets the exit status at interpreter exit

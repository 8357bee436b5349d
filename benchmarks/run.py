"""Benchmark suite: every estimator family on several scikit-learn datasets.

    python -m benchmarks            # full run: writes benchmarks/results/benchmarks.{json,md} + PNG plots
    python -m benchmarks --quick    # smoke test: one small case per family (CI runs it)

Each case of a full run runs in its own process (fit, compile, FHE simulation of the test set, key
generation and real encrypted execution of a few rows), so its peak memory is its own. All
datasets are standardized and split with test_size=0.2, random_state=0. Times are from one
run on the machine recorded in the JSON.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import machine

RESULTS = Path(__file__).resolve().parent / "results"

FAMILIES = {
    "LogisticRegression": "linear",
    "LinearRegression": "linear",
    "LinearSVC": "linear",
    "DecisionTreeClassifier": "tree",
    "DecisionTreeRegressor": "tree",
    "RandomForestClassifier": "forest",
    "ExtraTreesClassifier": "forest",
    "ExtraTreesRegressor": "forest",
    "GradientBoostingClassifier": "boosting",
    "GradientBoostingRegressor": "boosting",
    "HistGradientBoostingClassifier": "boosting",
    "HistGradientBoostingRegressor": "boosting",
    "LGBMClassifier": "boosting",
    "LGBMRegressor": "boosting",
    "KNeighborsClassifier": "neighbors",
    "KNeighborsRegressor": "neighbors",
    "XGBClassifier": "boosting",
    "XGBRegressor": "boosting",
    "NeuralNetClassifier": "neural net",
    "NeuralNetRegressor": "neural net",
}

# (model, parameters, dataset, rows run with real encryption)
FULL_CASES: list[tuple[str, dict, str, int]] = [
    ("LogisticRegression", {"n_bits": 8}, "breast_cancer", 10),
    ("LogisticRegression", {"n_bits": 8}, "wine", 10),
    ("LogisticRegression", {"n_bits": 8}, "digits", 10),
    ("LogisticRegression", {"n_bits": 8}, "make_classification", 10),
    ("LinearSVC", {"n_bits": 8}, "breast_cancer", 10),
    ("LinearRegression", {"n_bits": 8}, "diabetes", 10),
    ("DecisionTreeClassifier", {"max_depth": 5, "random_state": 0}, "breast_cancer", 2),
    ("DecisionTreeClassifier", {"max_depth": 5, "random_state": 0}, "wine", 2),
    ("DecisionTreeClassifier", {"max_depth": 5, "random_state": 0}, "digits", 2),
    ("DecisionTreeClassifier", {"max_depth": 5, "random_state": 0}, "make_classification", 2),
    ("DecisionTreeRegressor", {"max_depth": 5, "random_state": 0}, "diabetes", 2),
    ("RandomForestClassifier", {"n_estimators": 20, "max_depth": 4, "random_state": 0}, "breast_cancer", 1),
    ("RandomForestClassifier", {"n_estimators": 20, "max_depth": 4, "random_state": 0}, "make_classification", 1),
    ("XGBClassifier", {"n_estimators": 20, "max_depth": 3}, "breast_cancer", 1),
    ("XGBClassifier", {"n_estimators": 20, "max_depth": 3}, "wine", 1),
    ("XGBClassifier", {"n_estimators": 20, "max_depth": 3}, "make_classification", 1),
    ("XGBRegressor", {"n_estimators": 20, "max_depth": 3}, "diabetes", 1),
    ("ExtraTreesClassifier", {"n_estimators": 20, "max_depth": 4, "random_state": 0}, "breast_cancer", 1),
    ("ExtraTreesRegressor", {"n_estimators": 20, "max_depth": 4, "random_state": 0}, "diabetes", 1),
    ("GradientBoostingClassifier", {"n_estimators": 20, "max_depth": 3, "random_state": 0}, "breast_cancer", 1),
    ("GradientBoostingClassifier", {"n_estimators": 20, "max_depth": 3, "random_state": 0}, "wine", 1),
    ("GradientBoostingRegressor", {"n_estimators": 20, "max_depth": 3, "random_state": 0}, "diabetes", 1),
    ("HistGradientBoostingClassifier", {"max_iter": 20, "max_depth": 3, "random_state": 0}, "breast_cancer", 1),
    ("HistGradientBoostingRegressor", {"max_iter": 20, "max_depth": 3, "random_state": 0}, "diabetes", 1),
    ("LGBMClassifier", {"n_estimators": 20, "max_depth": 3, "num_leaves": 8, "random_state": 0}, "breast_cancer", 1),
    ("LGBMRegressor", {"n_estimators": 20, "max_depth": 3, "num_leaves": 8, "random_state": 0}, "diabetes", 1),
    ("KNeighborsClassifier", {}, "wine", 1),
    # 353 training points: the largest k-NN circuit here (~15 min a query); latency vs n_train: neighbors.md
    ("KNeighborsRegressor", {}, "diabetes", 0),
    ("NeuralNetClassifier", {"random_state": 0}, "breast_cancer", 1),
    ("NeuralNetClassifier", {"random_state": 0}, "wine", 1),
    ("NeuralNetClassifier", {"random_state": 0}, "make_classification", 1),
    ("NeuralNetRegressor", {"random_state": 0}, "diabetes", 1),
]

QUICK_CASES: list[tuple[str, dict, str, int]] = [
    ("LogisticRegression", {"n_bits": 8}, "breast_cancer", 2),
    ("DecisionTreeClassifier", {"max_depth": 3, "n_bits": 4, "random_state": 0}, "wine", 0),
    ("XGBRegressor", {"n_estimators": 3, "max_depth": 2, "n_bits": 4}, "diabetes", 0),
    (
        "NeuralNetClassifier",
        {"max_epochs": 30, "module__n_hidden_neurons_multiplier": 1, "module__n_accum_bits": 6, "random_state": 0},
        "breast_cancer",
        0,
    ),
]

# accuracy vs bit-width on breast_cancer, FHE simulation (no keys): model → values
FULL_SWEEP = {
    "LogisticRegression": [2, 3, 4, 5, 6, 7, 8],
    "DecisionTreeClassifier": [2, 3, 4, 5, 6, 7, 8],
    "XGBClassifier": [2, 3, 4, 5, 6, 7, 8],
    "NeuralNetClassifier": [2, 3, 4],
}
QUICK_SWEEP = {"LogisticRegression": [3, 6], "DecisionTreeClassifier": [3]}


def load(dataset: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn import datasets
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if dataset == "make_classification":
        X, y = datasets.make_classification(
            n_samples=1000, n_features=20, n_informative=10, n_classes=2, random_state=0
        )
    else:
        X, y = getattr(datasets, f"load_{dataset}")(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def sweep_params(name: str, bits: int) -> dict[str, Any]:
    """Parameters of ``name`` at ``bits``: n_bits, or weights and activations of a network
    (accumulator kept at 8 bits)."""
    if name == "NeuralNetClassifier":
        return {"module__n_w_bits": bits, "module__n_a_bits": bits, "module__n_accum_bits": 8, "random_state": 0}
    extra = {
        "DecisionTreeClassifier": {"max_depth": 5, "random_state": 0},
        "XGBClassifier": {"n_estimators": 20, "max_depth": 3},
    }
    return {"n_bits": bits, **extra.get(name, {})}


def run_case(name: str, params: dict, dataset: str, n_execute: int) -> dict[str, Any]:
    """One benchmark row; runs in a fresh process."""
    import fhe_sklearn
    from fhe_sklearn.evaluation import measure_fhe_model

    X_train, X_test, y_train, y_test = load(dataset)
    start = time.perf_counter()
    model = getattr(fhe_sklearn, name)(**params).fit(X_train, y_train)
    fit_s = time.perf_counter() - start
    result = measure_fhe_model(model, X_train, X_test, y_test, n_execute=n_execute)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "model": name,
        "family": FAMILIES[name],
        "params": params,
        "dataset": dataset,
        "n_features": int(X_train.shape[1]),
        "n_test": len(X_test),
        "fit_s": fit_s,
        **result,
        "peak_memory_mb": peak_mb,
    }


def run_sweep(name: str, values: list[int]) -> list[dict[str, Any]]:
    """Float and FHE-simulated accuracy of ``name`` on breast_cancer at each bit-width."""
    import fhe_sklearn

    X_train, X_test, y_train, y_test = load("breast_cancer")
    rows = []
    for bits in values:
        model = getattr(fhe_sklearn, name)(**sweep_params(name, bits)).fit(X_train, y_train)
        model.compile(X_train)
        rows.append(
            {
                "model": name,
                "bits": bits,
                "float_accuracy": float(np.mean(model.sklearn_model.predict(X_test) == y_test)),
                "simulate_accuracy": float(np.mean(model.predict(X_test, fhe="simulate") == y_test)),
                "pbs_count": int(model.fhe_circuit.programmable_bootstrap_count),
            }
        )
    return rows


def _in_fresh_process(fn: Any, *args: Any) -> Any:
    # spawn, one task per process: peak memory is the case's own, and no state leaks
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context, max_tasks_per_child=1) as pool:
        return pool.submit(fn, *args).result()


def _in_this_process(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def _dates_note(rows: list[dict]) -> str:
    dates = sorted({r["run_date"] for r in rows if r.get("run_date")})
    if len(dates) < 2:
        return ""
    return (
        f" Rows come from runs on {', '.join(dates)} (`run_date` in benchmarks.json; "
        "`--only` reruns some cases): compare times within one run."
    )


def markdown(rows: list[dict], sweep: list[dict], machine: dict, quick: bool) -> str:
    lines = [
        "# fhe_sklearn benchmarks" + (" (quick smoke run)" if quick else ""),
        "",
        f"Machine: {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}; "
        f"{machine['date']}. One run; times in seconds unless noted. Datasets standardized, "
        "test_size=0.2, random_state=0. FHE score: simulation of the compiled circuit on the whole "
        "test set; execute: real encryption, sequential, on the first rows (`exec == sim`: same "
        "outputs). Peak memory: resident set of the case's own process (fit, compile, keys)." + _dates_note(rows),
        "",
        "| family | model | dataset | metric | float | FHE | PBS | max bits | complexity | compile | keygen "
        "| execute ms/row | exec == sim | eval. keys MB | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['model']} | {r['dataset']} | {r['metric']} | {r['float_score']:.3f} "
            f"| {r['simulate_score']:.3f} | {r['pbs_count']} | {r['max_bit_width']} | {r['complexity']:.2e} "
            f"| {r['compile_s']:.2f} | {_fmt(r['keygen_s'], '.1f')} | {_fmt(r['execute_ms_per_sample'], '.1f')} "
            f"| {_fmt(r['execute_equals_simulate'], '')} ({r['n_execute']}) "
            f"| {_fmt(r['evaluation_keys_mb'], '.0f')} | {r['peak_memory_mb']:.0f} |"
        )
    lines += [
        "",
        "Parameters: " + "; ".join(sorted({f"{r['model']} {r['params']}" for r in rows})) + ".",
        "",
        "## Accuracy vs bit-width (breast_cancer, FHE simulation)",
        "",
        "`n_bits` for linear models and trees (inputs and weights/leaves); for the neural network, "
        "weights and activations (`module__n_w_bits = module__n_a_bits`) with an 8-bit accumulator.",
        "",
        "| model | bits | float acc | FHE acc | PBS |",
        "|---|---|---|---|---|",
    ]
    for s in sweep:
        lines.append(
            f"| {s['model']} | {s['bits']} | {s['float_accuracy']:.3f} | {s['simulate_accuracy']:.3f} "
            f"| {s['pbs_count']} |"
        )
    lines += ["", "![accuracy vs n_bits](accuracy_vs_n_bits.png)", "", "![latency vs PBS](latency_vs_pbs.png)", ""]
    return "\n".join(lines)


def plot(rows: list[dict], sweep: list[dict], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name in dict.fromkeys(s["model"] for s in sweep):
        points = [s for s in sweep if s["model"] == name]
        line = ax.plot([p["bits"] for p in points], [p["simulate_accuracy"] for p in points], "o-", label=name)
        ax.plot(
            [p["bits"] for p in points],
            [p["float_accuracy"] for p in points],
            ":",
            color=line[0].get_color(),
            alpha=0.6,
        )
    ax.set_xlabel("bits (n_bits; NN: weights = activations)")
    ax.set_ylabel("test accuracy (FHE simulation; dotted: float)")
    ax.set_title("breast_cancer: accuracy vs bit-width")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    paths.append(out / "accuracy_vs_n_bits.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    executed = [r for r in rows if r["execute_ms_per_sample"] is not None]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for family in dict.fromkeys(r["family"] for r in executed):
        points = [r for r in executed if r["family"] == family]
        # 0-PBS linear models sit at x=0.5 on the log axis
        ax.scatter(
            [max(r["pbs_count"], 0.5) for r in points], [r["execute_ms_per_sample"] for r in points], label=family
        )
        for r in points:
            ax.annotate(r["dataset"], (max(r["pbs_count"], 0.5), r["execute_ms_per_sample"]), fontsize=6, alpha=0.7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("programmable bootstraps per prediction (0 shown at 0.5)")
    ax.set_ylabel("execute ms per encrypted row")
    ax.set_title("latency vs PBS count (2 CPUs)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    paths.append(out / "latency_vs_pbs.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def _merge_into(previous: Path, fresh: list[dict]) -> tuple[list[dict], list[dict]]:
    """The previous run's rows with ``fresh`` in place of the same (model, params, dataset),
    new cases appended in suite order; the previous sweep."""
    if not previous.exists():
        return fresh, []
    old = json.loads(previous.read_text())

    def key(r: dict) -> str:
        return json.dumps([r["model"], r["params"], r["dataset"]], sort_keys=True)

    by_key = {key(r): r for r in old.get("rows", [])}
    date = old.get("machine", {}).get("date")
    for r in by_key.values():
        r.setdefault("run_date", date)
    by_key.update({key(r): r for r in fresh})
    order = [key({"model": m, "params": p, "dataset": d}) for m, p, d, _ in FULL_CASES]
    rank = {k: i for i, k in enumerate(order)}
    rows = sorted(by_key.values(), key=lambda r: rank.get(key(r), len(order)))
    return rows, old.get("bit_width_sweep", [])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one small case per family, no plots of note")
    parser.add_argument("--output", type=Path, default=None, help="default: benchmarks/results (quick: results/quick)")
    parser.add_argument(
        "--only",
        help="comma-separated model names: rerun just their full-suite cases and merge them into the "
        "existing results (the other rows and the sweep keep their earlier run)",
    )
    args = parser.parse_args(argv)
    out = args.output or (RESULTS / "quick" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    cases = QUICK_CASES if args.quick else FULL_CASES
    if args.only:
        if args.quick:
            parser.error("--only reruns full-suite cases; drop --quick")
        names = set(args.only.split(","))
        unknown = names - {case[0] for case in FULL_CASES}
        if unknown:
            parser.error(f"--only: no full-suite case for {sorted(unknown)}")
        cases = [case for case in FULL_CASES if case[0] in names]
    date = time.strftime("%Y-%m-%d")
    # the smoke run shares one process (each spawn re-imports concrete and torch: ~6 s), so its
    # peak memory is the run's so far, not each case's own
    run = _in_this_process if args.quick else _in_fresh_process
    rows = []
    for index, case in enumerate(cases, 1):
        print(f"[{index}/{len(cases)}] {case[0]} on {case[2]}...", flush=True)
        rows.append({**run(run_case, *case), "run_date": date})
        r = rows[-1]
        print(
            f"    {r['metric']} float {r['float_score']:.3f} FHE {r['simulate_score']:.3f}, {r['pbs_count']} PBS, "
            f"execute {_fmt(r['execute_ms_per_sample'], '.1f')} ms/row, peak {r['peak_memory_mb']:.0f} MB",
            flush=True,
        )
    sweep = []
    if args.only:
        rows, sweep = _merge_into(out / "benchmarks.json", rows)
    else:
        for name, values in (QUICK_SWEEP if args.quick else FULL_SWEEP).items():
            print(f"bit-width sweep: {name} {values}...", flush=True)
            sweep += run(run_sweep, name, values)
    machine_info = {**machine(), "date": date}
    payload = {"machine": machine_info, "quick": args.quick, "rows": rows, "bit_width_sweep": sweep}
    (out / "benchmarks.json").write_text(json.dumps(payload, indent=2))
    (out / "benchmarks.md").write_text(markdown(rows, sweep, machine_info, args.quick))
    plot(rows, sweep, out)
    print(f"results written to {out}")
    return payload

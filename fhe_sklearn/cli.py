"""Command line: ``python -m fhe_sklearn demo`` (fit, compile, real encrypted predictions)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Any

import numpy as np
import pandas as pd
from sklearn import datasets
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.utils.multiclass import type_of_target

from .evaluation import measure_fhe_model

DATASETS = {
    "breast_cancer": datasets.load_breast_cancer,
    "wine": datasets.load_wine,
    "diabetes": datasets.load_diabetes,
}


def _models() -> dict[str, Any]:
    from . import LinearRegression, LogisticRegression, XGBClassifier, XGBRegressor

    return {
        "LogisticRegression": LogisticRegression,
        "XGBClassifier": XGBClassifier,
        "LinearRegression": LinearRegression,
        "XGBRegressor": XGBRegressor,
    }


#: small boosted models keep the demo's encrypted predictions to seconds
_DEMO_PARAMS = {
    "XGBClassifier": {"n_estimators": 20, "max_depth": 3},
    "XGBRegressor": {"n_estimators": 20, "max_depth": 3},
}


def load_dataset(name: str, target: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A dataset shipped with scikit-learn, or a CSV (target: ``target`` column, else the last)."""
    if name in DATASETS:
        return DATASETS[name](return_X_y=True)
    try:
        frame = pd.read_csv(name)
    except FileNotFoundError:
        raise SystemExit(f"unknown dataset {name!r}: use one of {sorted(DATASETS)} or a CSV path") from None
    target = target or frame.columns[-1]
    if target not in frame:
        raise SystemExit(f"column {target!r} is not in {name}")
    return frame.drop(columns=[target]).to_numpy(dtype=np.float64), frame[target].to_numpy()


def demo(args: argparse.Namespace) -> list[dict[str, Any]]:
    X, y = load_dataset(args.dataset, args.target)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    models = _models()
    if args.model == "all":
        is_classification = type_of_target(y) in ("binary", "multiclass")
        names = ["LogisticRegression", "XGBClassifier"] if is_classification else ["LinearRegression", "XGBRegressor"]
    else:
        names = [args.model]
    rows = []
    for name in names:
        params = dict(_DEMO_PARAMS.get(name, {}))
        if args.n_bits is not None:
            params["n_bits"] = args.n_bits
        model = models[name](**params).fit(X_train, y_train)
        print(f"{name}: compiling, generating keys, running {args.n_samples} encrypted predictions...")
        rows.append({"model": name, **measure_fhe_model(model, X_train, X_test, y_test, n_execute=args.n_samples)})
    print(format_table(rows))
    return rows


def _serve(args: argparse.Namespace) -> None:
    from .deployment.server import serve

    serve(args.deployment_dir, args.host, args.port, args.key_dir, args.max_request_mb)


def format_table(rows: list[dict[str, Any]]) -> str:
    columns = [
        ("model", "model", "{}"),
        ("metric", "metric", "{}"),
        ("float_score", "float", "{:.3f}"),
        ("simulate_score", "FHE simulate", "{:.3f}"),
        ("execute_equals_simulate", "execute == simulate", "{}"),
        ("pbs_count", "PBS", "{}"),
        ("compile_s", "compile s", "{:.2f}"),
        ("keygen_s", "keygen s", "{:.3f}"),
        ("execute_ms_per_sample", "ms / encrypted prediction", "{:.1f}"),
    ]
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[key]) for key, _, fmt in columns) + " |")
    return "\n".join(lines)


def run() -> None:
    """Console entry point: ``main`` with a trustworthy exit status.

    concrete's runtime sets the process exit status to 0 at interpreter exit once a circuit
    has run, so leave with the real status explicitly.
    """
    status = 0
    try:
        main()
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            status = 1
        else:
            status = exc.code or 0
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(prog="fhe-sklearn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="fit, compile and run real encrypted predictions")
    p.add_argument("--model", default="all", choices=["all", *_models()])
    p.add_argument("--dataset", default="breast_cancer", help=f"{sorted(DATASETS)} or a CSV path")
    p.add_argument("--target", default=None, help="target column of a CSV (default: the last)")
    p.add_argument("--n-bits", type=int, default=None, help="default: each model's own (linear 8, trees 6)")
    p.add_argument("--n-samples", type=int, default=5, help="rows predicted with real encryption")
    p.set_defaults(func=demo)
    s = commands.add_parser("serve", help="serve a deployment directory over HTTP")
    s.add_argument("deployment_dir")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--key-dir", default="server_keys", help="where clients' evaluation keys are stored")
    s.add_argument("--max-request-mb", type=float, default=2048, help="evaluation keys can be hundreds of MB")
    s.set_defaults(func=_serve)
    args = parser.parse_args(argv)
    return args.func(args)

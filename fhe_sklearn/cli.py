"""Command line (``python -m fhe_sklearn`` or ``fhe-sklearn``).

- ``demo``: fit, compile and run real encrypted predictions, with a table of scores and costs;
- ``compile DATA.csv --output DIR``: fit a model on a CSV and write a deployment directory;
- ``predict DIR DATA.csv --output predictions.csv``: encrypted predictions for a CSV;
- ``serve DIR``: the HTTP server of a deployment directory;
- ``encrypt-frame``, ``merge-frames``, ``groupby-frame``, ``decrypt-frame``: encrypted
  data-frames (:mod:`fhe_sklearn.pandas`) from and to CSV files, merged and grouped without any key.
- ``deploy DIR --out CONTEXT``: the build context of a container image serving it.
"""

from __future__ import annotations

import argparse
import ast
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

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
    import fhe_sklearn

    return {name: getattr(fhe_sklearn, name) for name in fhe_sklearn.__all__ if name[0].isupper()}


#: small ensembles keep the demo's encrypted predictions to seconds
_DEMO_PARAMS = {
    "XGBClassifier": {"n_estimators": 20, "max_depth": 3},
    "XGBRegressor": {"n_estimators": 20, "max_depth": 3},
    "RandomForestClassifier": {"n_estimators": 20, "max_depth": 4},
    "RandomForestRegressor": {"n_estimators": 20, "max_depth": 4},
    "DecisionTreeClassifier": {"max_depth": 5},
    "DecisionTreeRegressor": {"max_depth": 5},
}


def read_csv(path: str, target: str | None = None, require_target: bool = True) -> tuple[pd.DataFrame, Any]:
    """Features (a DataFrame: models keep the column names) and target of a CSV file.

    The target is the ``target`` column, else the last one; with ``require_target=False``
    a missing target column is allowed (prediction data) and None is returned for it.
    """
    try:
        frame = pd.read_csv(path)
    except (FileNotFoundError, IsADirectoryError):
        raise SystemExit(f"no such CSV file: {path}") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise SystemExit(f"cannot read {path} as CSV: {err}") from None
    if require_target:
        target = target or frame.columns[-1]
        if target not in frame:
            raise SystemExit(f"column {target!r} is not in {path}")
    if target is None or target not in frame:
        return frame, None
    return frame.drop(columns=[target]), frame[target].to_numpy()


def load_dataset(name: str, target: str | None = None) -> tuple[Any, np.ndarray]:
    """A dataset shipped with scikit-learn, or a CSV (target: ``target`` column, else the last)."""
    if name in DATASETS:
        return DATASETS[name](return_X_y=True)
    if not name.endswith(".csv") and not os.path.exists(name):
        raise SystemExit(f"unknown dataset {name!r}: use one of {sorted(DATASETS)} or a CSV path")
    return read_csv(name, target)


def _parse_params(items: list[str]) -> dict[str, Any]:
    params = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--param takes KEY=VALUE, got {item!r}")
        try:
            params[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            params[key] = text  # a bare string, e.g. activation names
    return params


def _make_model(name: str, n_bits: int | None, params: dict[str, Any]) -> Any:
    models = _models()
    if name not in models:
        raise SystemExit(f"unknown model {name!r}; known: {sorted(models)}")
    params = {**_DEMO_PARAMS.get(name, {}), **params}
    if n_bits is not None:
        params["n_bits"] = n_bits
    try:
        return models[name](**params)
    except TypeError as err:
        raise SystemExit(f"bad parameters for {name}: {err}") from None


def demo(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Fit, compile and run real encrypted predictions for the demo models; one result row per model."""
    if args.n_samples < 1:
        raise SystemExit("--n-samples must be at least 1: the demo runs real encrypted predictions")
    X, y = load_dataset(args.dataset, args.target)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    scaler = StandardScaler().fit(X_train)
    X_train, X_test = scaler.transform(X_train), scaler.transform(X_test)
    if args.model == "all":
        is_classification = type_of_target(y) in ("binary", "multiclass")
        names = ["LogisticRegression", "XGBClassifier"] if is_classification else ["LinearRegression", "XGBRegressor"]
    else:
        names = [args.model]
    rows = []
    for name in names:
        model = _make_model(name, args.n_bits, {}).fit(X_train, y_train)
        print(f"{name}: compiling, generating keys, running {args.n_samples} encrypted predictions...")
        result = measure_fhe_model(model, X_train, X_test, y_test, n_execute=args.n_samples, progress=True)
        rows.append({"model": name, **result})
    print(format_table(rows))
    return rows


def compile_command(args: argparse.Namespace) -> dict[str, Any]:
    """Fit on a CSV, report held-out float vs FHE-simulated scores, save a deployment."""
    from .deployment import FHEModelDev

    X, y = load_dataset(args.data, args.target)
    model = _make_model(args.model, args.n_bits, _parse_params(args.param))
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=args.test_size, random_state=0)
    model.fit(X_train, y_train)
    print(f"{args.model}: compiling on {len(X_train)} rows...")
    model.compile(X_train)
    report = {
        "model": args.model,
        "metric": "accuracy" if hasattr(model, "classes_") else "r2",
        "float_score": float(model.sklearn_model.score(np.asarray(X_test, dtype=np.float64), y_test)),
        "simulate_score": float(model.score(X_test, y_test)),
        "pbs_count": int(model.fhe_circuit.programmable_bootstrap_count),
        "max_bit_width": int(model.fhe_circuit.graph.maximum_integer_bit_width()),
        "deployment": str(FHEModelDev(args.output, model).save()),
    }
    # score() predicts without FHE; the simulated circuit computes the same integers
    simulated = model.predict(X_test[: args.n_check], fhe="simulate")
    if not np.array_equal(simulated, model.predict(X_test[: args.n_check])):
        raise SystemExit("internal error: FHE simulation differs from the integer model")
    report["estimator"] = model
    print(
        f"held-out {report['metric']} ({len(X_test)} rows): float {report['float_score']:.3f}, "
        f"FHE {report['simulate_score']:.3f}; {report['pbs_count']} PBS, "
        f"{report['max_bit_width']}-bit integers\ndeployment written to {report['deployment']} "
        "(server.zip for the server, client.json for clients)"
    )
    return report


def predict_command(args: argparse.Namespace) -> pd.DataFrame:
    """Encrypted predictions for every row of a CSV: keygen, encrypt, run, decrypt."""
    from tqdm import tqdm

    from .deployment import FHEModelClient, FHEModelServer, HTTPClient

    X, _ = read_csv(args.data, args.target, require_target=False)
    key_dir = Path(args.key_dir) if args.key_dir else default_key_dir()
    if args.server:
        api_key = Path(args.api_key_file).read_text().strip() if args.api_key_file else None
        remote = HTTPClient(args.server, work_dir=key_dir, api_key=api_key)
        client, run = remote.fhe, remote.run_encrypted
        print(f"uploading evaluation keys to {args.server}...")
        remote.upload_keys()
    else:
        client = FHEModelClient(args.deployment, key_dir=key_dir)
        server = FHEModelServer(args.deployment).load()
        print(f"generating keys (cached in {key_dir})...")
        client.generate_private_and_evaluation_keys()
        keys = server.load_evaluation_keys(client.get_serialized_evaluation_keys())

        def run(encrypted: bytes) -> bytes:
            return server.run(encrypted, keys)

    names = getattr(client.model, "feature_names_in_", None)
    if names is not None:
        missing = [c for c in names if c not in X]
        if missing:
            raise SystemExit(f"{args.data} lacks the model's columns {missing}")
        X = X[list(names)]  # extra columns (e.g. the target) are ignored
    try:
        encrypted = client.quantize_encrypt_serialize(X)
    except ValueError as err:
        raise SystemExit(f"bad input in {args.data}: {err}") from None
    results = [run(row) for row in tqdm(encrypted, desc="encrypted predictions")]
    predictions, scores = client.deserialize_decrypt_predict(results)
    out = pd.DataFrame(np.asarray(predictions).reshape(len(X), -1))
    out.columns = ["prediction"] if out.shape[1] == 1 else [f"prediction_{i}" for i in range(out.shape[1])]
    if scores is not None:
        scores = np.asarray(scores).reshape(len(X), -1)
        label = "proba" if hasattr(client.model, "predict_proba") else "score"
        classes = client.model.classes_ if scores.shape[1] == len(client.model.classes_) else ["positive"]
        for j, c in enumerate(classes):
            out[f"{label}_{c}"] = scores[:, j]
    out.to_csv(args.output, index=False)
    print(f"{len(out)} encrypted predictions written to {args.output}")
    return out


def _serve(args: argparse.Namespace) -> None:
    from .deployment.server import MB, ServerSettings, read_api_key
    from .deployment.serving import serve

    settings = ServerSettings(
        max_request_bytes=int(args.max_request_mb * MB),
        max_keys_bytes=int(args.max_keys_mb * MB),
        max_key_sets=args.max_key_sets,
        key_quota_bytes=int(args.key_quota_gb * 1024 * MB),
        workers=args.workers,
        max_queue=args.max_queue,
        timeout=args.timeout,
        deserialize_timeout=args.deserialize_timeout,
        key_cache=args.key_cache,
        api_key=read_api_key(args.api_key_file) if args.api_key_file else None,
        docs=args.docs,
        max_batch_bytes=int(args.max_batch_mb * MB),
        max_batch_rows=args.max_batch_rows,
        dask_scheduler=args.dask_scheduler,
    )
    try:
        serve(args.deployment_dir, args.host, args.port, args.key_dir, settings)
    except ValueError as err:  # an unreadable deployment directory
        raise SystemExit(str(err)) from None


def _key_file(path: str | None) -> bytes | None:
    return Path(path).read_bytes().strip() if path else None


def encrypt_frame_command(args: argparse.Namespace) -> Path:
    """Encrypt a CSV into an encrypted frame file with the keys of ``--keys-dir``."""
    from .pandas import ClientEngine

    frame = pd.read_csv(args.data) if Path(args.data).is_file() else None
    if frame is None:
        raise SystemExit(f"no such CSV file: {args.data}")
    schema = {}
    for spec in args.range:
        column, _, bounds = spec.partition("=")
        low, _, high = bounds.partition(":")
        try:
            number = float if "." in bounds else int
            schema[column] = {"min": number(low), "max": number(high)}
        except ValueError:
            raise SystemExit(f"--range takes COLUMN=MIN:MAX, got {spec!r}") from None
    for spec in args.categories:
        column, _, values = spec.partition("=")
        schema[column] = {"categories": values.split(",")}
    engine = ClientEngine(args.keys_dir or None)
    try:
        encrypted = engine.encrypt_from_pandas(frame, keys=args.key, schema=schema, key_matching=args.key_matching)
    except ValueError as err:
        raise SystemExit(f"cannot encrypt {args.data}: {err}") from None
    path = encrypted.save(args.output, signing_key=_key_file(args.signing_key_file))
    print(f"{len(frame)} rows x {frame.shape[1]} columns encrypted to {path} (key columns {args.key})")
    return path


def merge_frames_command(args: argparse.Namespace) -> Path:
    """The server side: merge two encrypted frame files, no key needed."""
    from .pandas import EncryptedDataFrame

    verify = _key_file(args.verify_key_file)
    try:
        left = EncryptedDataFrame.load(args.left, verify_key=verify)
        right = EncryptedDataFrame.load(args.right, verify_key=verify)
        merged = left.merge(right, how=args.how, on=args.on)
    except ValueError as err:
        raise SystemExit(f"cannot merge: {err}") from None
    path = merged.save(args.output, signing_key=_key_file(args.signing_key_file))
    print(f"{args.how} merge on {args.on!r}: {merged.shape[0]} rows x {merged.shape[1]} columns written to {path}")
    return path


def groupby_frame_command(args: argparse.Namespace) -> Path:
    """The server side: group an encrypted frame file on a key column, no key needed."""
    from .pandas import EncryptedDataFrame

    spec = {}
    for item in args.agg:
        column, sep, func = item.partition("=")
        if not sep:
            raise SystemExit(f"--agg takes COLUMN=FUNC (sum, count or mean), got {item!r}")
        spec[column] = func
    try:
        frame = EncryptedDataFrame.load(args.frame, verify_key=_key_file(args.verify_key_file))
        result = frame.groupby(args.by).agg(spec or "sum")
    except (ValueError, KeyError) as err:
        raise SystemExit(f"cannot group: {err}") from None
    path = result.save(args.output, signing_key=_key_file(args.signing_key_file))
    print(f"group-by {args.by!r} of {result.columns} written to {path}")
    return path


def decrypt_frame_command(args: argparse.Namespace) -> pd.DataFrame:
    """Decrypt an encrypted frame or aggregate file to CSV with the keys of ``--keys-dir``."""
    from .pandas import ClientEngine, load

    try:
        result = ClientEngine(args.keys_dir or None).decrypt_to_pandas(
            load(args.frame, verify_key=_key_file(args.verify_key_file))
        )
    except ValueError as err:
        raise SystemExit(f"cannot decrypt {args.frame}: {err}") from None
    keep_index = not isinstance(result.index, pd.RangeIndex)  # group keys, or column names
    result.to_csv(args.output, index=keep_index)
    print(f"{len(result)} rows decrypted to {args.output}")
    return result


def _frame_commands(commands: Any) -> None:
    keys_help = "key directory (default: a per-user cache directory, never the working directory)"
    e = commands.add_parser("encrypt-frame", help="encrypt a CSV into an encrypted data-frame file")
    e.add_argument("data", help="CSV file")
    e.add_argument("--key", action="append", default=[], help="a key column for merges and group-bys (repeatable)")
    e.add_argument("--keys-dir", default=None, help=keys_help)
    e.add_argument(
        "--key-matching",
        default="tags",
        choices=["tags", "fhe"],
        help="tags: fast merges, the server sees which keys are equal; fhe: keys compared in FHE (unique keys)",
    )
    e.add_argument(
        "--range",
        action="append",
        default=[],
        metavar="COLUMN=MIN:MAX",
        help="declared range of an integer or float column (repeatable; owners whose keys are compared in FHE "
        "give their key column the same)",
    )
    e.add_argument(
        "--categories",
        action="append",
        default=[],
        metavar="COLUMN=A,B,...",
        help="declared categories of a string column (repeatable; as --range, for string keys compared in FHE)",
    )
    e.add_argument("--output", required=True, help="encrypted frame file to write (.fhedf)")
    e.add_argument("--signing-key-file", default=None, help="sign the file with this shared HMAC key")
    e.set_defaults(func=encrypt_frame_command)
    m = commands.add_parser("merge-frames", help="merge two encrypted frames (server side, no key needed)")
    m.add_argument("left")
    m.add_argument("right")
    m.add_argument("--how", default="left", choices=["left", "right", "inner", "outer"])
    m.add_argument("--on", required=True, help="key column of both frames")
    m.add_argument("--output", required=True, help="merged encrypted frame file to write")
    m.add_argument("--verify-key-file", default=None, help="refuse inputs not signed with this HMAC key")
    m.add_argument("--signing-key-file", default=None, help="sign the merged file with this HMAC key")
    m.set_defaults(func=merge_frames_command)
    g = commands.add_parser("groupby-frame", help="group an encrypted frame on a key column (server side, no key)")
    g.add_argument("frame")
    g.add_argument("--by", required=True, help="key column to group on")
    g.add_argument("--agg", action="append", default=[], help="COLUMN=sum|count|mean (repeatable; default: sum all)")
    g.add_argument("--output", required=True, help="encrypted aggregate file to write")
    g.add_argument("--verify-key-file", default=None, help="refuse an input not signed with this HMAC key")
    g.add_argument("--signing-key-file", default=None, help="sign the result with this HMAC key")
    g.set_defaults(func=groupby_frame_command)
    d = commands.add_parser("decrypt-frame", help="decrypt an encrypted data-frame or aggregate file to CSV")
    d.add_argument("frame")
    d.add_argument("--keys-dir", default=None, help=keys_help)
    d.add_argument("--output", required=True, help="CSV file to write")
    d.add_argument("--verify-key-file", default=None, help="refuse a file not signed with this HMAC key")
    d.set_defaults(func=decrypt_frame_command)


def _deploy(args: argparse.Namespace) -> Path:
    from .deployment.image import write_image_context

    try:
        out = write_image_context(args.deployment_dir, args.out, python=args.python)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    print(f"image build context written to {out}: docker build -t IMAGE {out}")
    return out


def _positive(kind: type, zero: bool = False) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)
        if not (value >= 0 if zero else value > 0):  # NaN fails both
            raise argparse.ArgumentTypeError(f"must be {'non-negative' if zero else 'positive'}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error message
    return parse


def format_table(rows: list[dict[str, Any]]) -> str:
    """The demo result rows as a markdown table."""
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


def default_key_dir() -> Path:
    """Per-user key cache: private keys must not land in a working directory (or a repo)."""
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "fhe_sklearn" / "keys"


def exit_with_status(entry_point: Callable[[], Any]) -> NoReturn:
    """Call ``entry_point`` and leave the process with its real exit status.

    concrete's runtime sets the process exit status to 0 at interpreter exit once a circuit
    has run, so a failure after a circuit ran would look like success: leave explicitly.
    A ``SystemExit`` with a message prints it and exits 1; any other exception prints its
    traceback and exits 1.
    """
    status = 0
    try:
        entry_point()
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


def run() -> None:
    """Console entry point: ``main`` with a trustworthy exit status."""
    exit_with_status(main)


def main(argv: list[str] | None = None) -> Any:
    """Parse the command line (``argv``, default ``sys.argv[1:]``) and run the chosen command."""
    parser = argparse.ArgumentParser(prog="fhe-sklearn", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="fit, compile and run real encrypted predictions")
    p.add_argument("--model", default="all", choices=["all", *_models()])
    p.add_argument("--dataset", default="breast_cancer", help=f"{sorted(DATASETS)} or a CSV path")
    p.add_argument("--target", default=None, help="target column of a CSV (default: the last)")
    p.add_argument("--n-bits", type=int, default=None, help="default: each model's own (linear 8, trees 6)")
    p.add_argument("--n-samples", type=int, default=5, help="rows predicted with real encryption")
    p.set_defaults(func=demo)
    c = commands.add_parser("compile", help="fit a model on a CSV, compile it, write a deployment directory")
    c.add_argument("data", help=f"CSV file (or one of {sorted(DATASETS)})")
    c.add_argument("--model", default="LogisticRegression", help="an estimator of fhe_sklearn")
    c.add_argument("--target", default=None, help="target column (default: the last)")
    c.add_argument("--n-bits", type=int, default=None, help="default: the model's own")
    c.add_argument("--param", action="append", default=[], help="model parameter KEY=VALUE (repeatable)")
    c.add_argument("--test-size", type=float, default=0.2, help="held-out share for the printed scores")
    c.add_argument("--n-check", type=int, default=20, help="held-out rows checked in FHE simulation")
    c.add_argument("--output", required=True, help="deployment directory to create")
    c.set_defaults(func=compile_command)
    r = commands.add_parser("predict", help="encrypted predictions for a CSV with a deployment directory")
    r.add_argument("deployment", help="directory written by `compile` (its client.json is enough with --server)")
    r.add_argument("data", help="CSV with the model's feature columns (other columns are ignored)")
    r.add_argument("--output", required=True, help="predictions CSV to write")
    r.add_argument("--target", default=None, help="a column to ignore (for data without feature names)")
    r.add_argument(
        "--key-dir",
        default=None,
        help="where the private keys are kept (default: a per-user cache directory, "
        "$XDG_CACHE_HOME/fhe_sklearn/keys or ~/.cache/fhe_sklearn/keys, never the working directory)",
    )
    r.add_argument("--server", default=None, help="URL of a `serve` server; default: run the server side here")
    r.add_argument("--api-key-file", default=None, help="the --server's API key for key uploads, if it has one")
    r.set_defaults(func=predict_command)
    s = commands.add_parser(
        "serve", help="serve a deployment directory (or a HybridFHEModel's server copy, one app per module) over HTTP"
    )
    s.add_argument("deployment_dir")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--key-dir", default="server_keys", help="where clients' evaluation keys are stored (0700)")
    s.add_argument("--api-key-file", default=None, help="file holding a key that POST /keys must present")
    s.add_argument("--max-request-mb", type=_positive(float), default=64, help="largest ciphertext body")
    s.add_argument("--max-keys-mb", type=_positive(float), default=2048, help="largest evaluation-key upload")
    s.add_argument("--max-key-sets", type=_positive(int), default=100, help="key sets kept (LRU eviction)")
    s.add_argument("--key-quota-gb", type=_positive(float), default=20, help="disk for key sets (LRU eviction)")
    s.add_argument("--workers", type=_positive(int), default=2, help="worker processes running ciphertexts")
    s.add_argument("--max-queue", type=_positive(int, zero=True), default=16, help="requests waiting beyond, then 503")
    s.add_argument("--timeout", type=_positive(float), default=600, help="seconds per execution (504 beyond)")
    s.add_argument("--deserialize-timeout", type=_positive(float), default=10, help="seconds to deserialize an input")
    s.add_argument("--key-cache", type=_positive(int), default=2, help="key sets each worker keeps in memory")
    s.add_argument("--docs", action="store_true", help="serve /docs, /redoc and /openapi.json")
    s.add_argument("--max-batch-mb", type=_positive(float), default=256, help="largest /predict_batch body")
    s.add_argument("--max-batch-rows", type=_positive(int), default=1000, help="most rows per /predict_batch")
    s.add_argument(
        "--dask-scheduler", default=None, help="run batches on this Dask cluster (tcp://host:8786), not the local pool"
    )
    s.set_defaults(func=_serve)
    _frame_commands(commands)
    d = commands.add_parser("deploy", help="write the build context of a container image serving a deployment")
    d.add_argument("deployment_dir", help="directory written by `compile` or FHEModelDev")
    d.add_argument("--out", required=True, help="build context directory to create (Dockerfile, entrypoint.sh)")
    d.add_argument("--python", default="3.11", help="Python version of the base image (python:X-slim)")
    d.set_defaults(func=_deploy)
    args = parser.parse_args(argv)
    return args.func(args)

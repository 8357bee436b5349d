"""Scale-out benchmark: encrypted rows per second of XGBClassifier(20 × depth 3) on
breast_cancer (standardized, test_size=0.2, random_state=0) through
``predict_proba(X, fhe="execute", backend=..., n_jobs=...)``.

Concrete's runtime already spreads one row over the machine's cores (OpenMP loop
parallelism), so two baselines are measured: a plain loop of ``circuit.encrypt_run_decrypt``
with the default threads, and the same loop in a subprocess with ``OMP_NUM_THREADS=1`` (the
thread budget of one Dask worker, which Dask's nanny sets). Then threads, local processes, a
Dask ``LocalCluster`` with 1 and 2 single-threaded worker processes and 1 worker given every
core, and a circuit compiled for several rows per call. ``speedup_vs_1_worker``: against the
same backend with one worker of the same thread budget; ``overhead_vs_local_loop``: against the
local loop with the same thread budget. Every run's decrypted outputs are checked against
``simulate``.

    python -m benchmarks.scale_out            # writes benchmarks/results/scale_out.{json,md}
    python -m benchmarks.scale_out --batch-size 0   # without the batched circuit
    python -m benchmarks.scale_out --quick    # small tree, few rows: a smoke run (results/quick)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from concrete import fhe
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from benchmarks import common
from fhe_sklearn import DecisionTreeClassifier, XGBClassifier
from fhe_sklearn.cli import exit_with_status
from fhe_sklearn.deployment import batch
from fhe_sklearn.quantization.compile_options import DEFAULT_GLOBAL_P_ERROR


def _timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _row(backend: str, workers: int, n_rows: int, seconds: float, correct: bool, **extra: Any) -> dict:
    return {
        "backend": backend,
        "workers": workers,
        "rows": n_rows,
        "seconds": round(seconds, 2),
        "rows_per_s": round(n_rows / seconds, 3),
        "s_per_row": round(seconds / n_rows, 3),
        "correct": correct,
        **extra,
    }


LOOP = "local loop (encrypt_run_decrypt)"


def _case(quick: bool, n_rows: int) -> tuple[str, Any, np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    X_train, X_test, y_train, _ = train_test_split(X, y, test_size=0.2, random_state=0)
    if quick:
        label, model = "DecisionTreeClassifier(max_depth=2, n_bits=3)", DecisionTreeClassifier(max_depth=2, n_bits=3)
    else:
        label, model = "XGBClassifier(n_estimators=20, max_depth=3)", XGBClassifier(n_estimators=20, max_depth=3)
    model.fit(X_train, y_train)
    model.compile(X_train)
    return label, model, X_train, X_test[:n_rows]


def _local_loop(model: Any, rows: np.ndarray) -> dict:
    """A plain ``encrypt_run_decrypt`` loop in this process, after a warm-up row."""
    circuit = model.fhe_circuit
    circuit.keygen()
    x_q = model.quantize_input(rows)
    circuit.encrypt_run_decrypt(x_q[:1])
    outs, seconds = _timed(lambda: [circuit.encrypt_run_decrypt(x_q[i : i + 1]) for i in range(len(x_q))])
    local = model.post_processing(model.dequantize_output(np.concatenate(outs)))
    correct = bool(np.array_equal(local, model.predict_proba(rows, fhe="simulate")))
    return {"n_rows": len(x_q), "seconds": seconds, "correct": correct}


def _local_loop_subprocess(args: argparse.Namespace) -> dict:
    """The same loop with one OpenMP thread: the thread budget of one Dask worker."""
    cmd = [sys.executable, "-m", "benchmarks.scale_out", "--baseline-only", "--rows", str(args.rows)]
    cmd += ["--baseline-rows", str(args.baseline_rows)] + (["--quick"] if args.quick else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def batched_circuit(model: Any, X_train: np.ndarray, rows: np.ndarray, batch_size: int) -> dict:
    """Per-row latency of a circuit compiled for ``batch_size`` rows per call (concrete's
    loop parallelism on), against the row-at-a-time circuit in the same process."""
    module = model.quantized_module_
    x_q = model.quantize_input(X_train)
    qmin, qmax = module.input_quantizer.options.qmin, module.input_quantizer.options.qmax
    samples = [x_q[i : i + batch_size] for i in range(0, len(x_q) - batch_size, max(1, len(x_q) // 50))]
    samples += [np.full((batch_size, x_q.shape[1]), v, dtype=np.int64) for v in (qmin, qmax)]

    def circuit(x: Any) -> Any:
        return module._select(module._run([x], tracing=True))

    config = fhe.Configuration(loop_parallelize=True)
    compiled, compile_s = _timed(
        lambda: fhe.Compiler(circuit, {"x": "encrypted"}).compile(
            samples, configuration=config, global_p_error=DEFAULT_GLOBAL_P_ERROR
        )
    )
    _, keygen_s = _timed(compiled.keygen)
    rows_q = model.quantize_input(rows[: (len(rows) // batch_size) * batch_size])
    outs, seconds = _timed(
        lambda: [compiled.encrypt_run_decrypt(rows_q[i : i + batch_size]) for i in range(0, len(rows_q), batch_size)]
    )
    correct = np.array_equal(np.concatenate(outs), module.quantized_forward(rows_q))
    return {
        "batch_size": batch_size,
        "rows": len(rows_q),
        "s_per_row": round(seconds / len(rows_q), 3),
        "compile_s": round(compile_s, 2),
        "keygen_s": round(keygen_s, 2),
        "pbs_per_call": compiled.programmable_bootstrap_count,
        "correct": correct,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40, help="encrypted rows per configuration")
    parser.add_argument("--batch-size", type=int, default=4, help="rows per call of the batched circuit (0: skip)")
    parser.add_argument("--baseline-rows", type=int, default=20, help="rows of the plain local loop")
    parser.add_argument("--quick", action="store_true", help="small tree and few rows: a smoke run")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--baseline-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rows < 2 or args.baseline_rows < 1:
        parser.error("--rows must be at least 2 and --baseline-rows at least 1")
    import dask
    from distributed import Client, LocalCluster

    label, model, X_train, rows = _case(args.quick, args.rows)
    if args.baseline_only:
        print(json.dumps(_local_loop(model, rows[: args.baseline_rows])))
        return {}
    expected = model.predict_proba(rows, fhe="simulate")
    extra: dict[str, Any] = {"model": label, "dataset": "breast_cancer (standardized)", "rows": len(rows)}

    if args.batch_size > 1:  # before the row-at-a-time keys exist: one key set in memory at a time
        extra["batched_circuit"] = batched_circuit(model, X_train, rows, args.batch_size)
        gc.collect()

    circuit = model.fhe_circuit
    _, extra["keygen_s"] = _timed(model.quantized_module_.keygen)
    (_, keys, key_id), extra["serialize_keys_and_server_s"] = _timed(lambda: batch._circuit_parts(circuit))
    extra["evaluation_keys_mb"] = round(len(keys) / 2**20, 1)
    extra["pbs_count"] = circuit.programmable_bootstrap_count

    n_cpu = os.cpu_count() or 1
    local = _local_loop(model, rows[: args.baseline_rows])
    one_thread = _local_loop_subprocess(args)
    results = [
        _row(LOOP, 1, **local, threads=n_cpu),
        _row(LOOP, 1, **one_thread, threads=1),
    ]

    def measure(backend: str, workers: int, threads: int, client: Any = None, **kw: Any) -> dict:
        # warm-up: every worker loads the server and the keys once. Dask may give a short
        # warm-up batch to one worker, so it repeats until every worker holds the keys
        warm = 0.0
        for _ in range(3):
            _, seconds = _timed(
                lambda: model.predict_proba(rows[: 2 * workers], fhe="execute", backend=backend, n_jobs=workers)
            )
            warm += seconds
            if client is None or all(key_id in info["keys"] for info in client.run(batch.worker_cache_info).values()):
                break
        proba, seconds = _timed(lambda: model.predict_proba(rows, fhe="execute", backend=backend, n_jobs=workers))
        correct = bool(np.array_equal(proba, expected))
        return _row(backend, workers, len(rows), seconds, correct, threads=threads, warm_up_s=warm, **kw)

    results.append(measure("threads", 2, threads=n_cpu))
    results.append(measure("processes", 2, threads=max(1, n_cpu // 2)))
    batch.process_pool(2).shutdown(wait=True)  # frees the workers' keys
    batch._keys.clear()  # the thread backend's keys, loaded in this process
    # Dask's nanny gives each worker OMP_NUM_THREADS=1; the last cluster gives its one worker all cores
    own_omp = os.environ.get("OMP_NUM_THREADS")
    for workers, threads in ((1, 1), (2, 1), (1, n_cpu)):
        # the nanny's pre-spawn environment is what the worker's OpenMP runtime reads; the
        # nanny also copies it into this process's os.environ, where it would override the
        # config of the next cluster: set both
        os.environ["OMP_NUM_THREADS"] = str(threads)
        with (
            dask.config.set({"distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS": threads}),
            LocalCluster(
                n_workers=workers,
                threads_per_worker=1,
                processes=True,
                dashboard_address=None,
                memory_limit=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            from fhe_sklearn.deployment.dask_backend import scattered

            _, scatter_s = _timed(lambda: scattered(client, "keys", key_id, keys))
            results.append(measure("dask", workers, threads=threads, client=client, keys_scatter_s=round(scatter_s, 2)))
            seen = client.run(lambda: os.environ.get("OMP_NUM_THREADS"))
            results[-1]["worker_omp_threads"] = sorted(set(seen.values()))
            loads = client.run(batch.worker_cache_info)
            results[-1]["key_loads_per_worker"] = sorted(info["keys"].get(key_id, 0) for info in loads.values())
    if own_omp is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = own_omp

    columns = dict.fromkeys(k for r in results for k in r)
    results = [{k: r.get(k) for k in columns} for r in results]
    loops = {r["threads"]: r for r in results if r["backend"] == LOOP}
    by = {(r["backend"], r["workers"], r["threads"]): r for r in results}
    for r in results:
        one = by.get((r["backend"], 1, r["threads"]))
        r["speedup_vs_1_worker"] = None if one is None else round(one["s_per_row"] / r["s_per_row"], 2)
        # per-row overhead of the machinery: one worker against the loop with its thread budget
        same = loops.get(r["threads"]) if r["workers"] == 1 else None
        overhead = None if same is None else r["s_per_row"] / same["s_per_row"] - 1
        r["overhead_vs_local_loop"] = None if overhead is None else f"{100 * overhead:+.1f}%"
        r["rows_per_s_vs_local_loop_all_cores"] = round(loops[n_cpu]["s_per_row"] / r["s_per_row"], 2)
        r["warm_up_s"] = None if r["warm_up_s"] is None else round(r["warm_up_s"], 2)
    extra["summary"] = {
        "dask_speedup_2_workers_vs_1": by["dask", 2, 1]["speedup_vs_1_worker"],
        "dask_2_workers_vs_local_loop_all_cores": round(loops[n_cpu]["s_per_row"] / by["dask", 2, 1]["s_per_row"], 2),
        "dask_1_worker_overhead_per_row": by["dask", 1, 1]["overhead_vs_local_loop"],
        "dask_1_worker_all_cores_overhead_per_row": by["dask", 1, n_cpu]["overhead_vs_local_loop"],
        "key_distribution_s_2_workers": by["dask", 2, 1]["keys_scatter_s"],
        "warm_up_s_2_workers": by["dask", 2, 1]["warm_up_s"],
    }
    notes = (
        f"{label}, {len(rows)} encrypted rows per configuration, PBS {extra['pbs_count']}, evaluation keys "
        f"{extra['evaluation_keys_mb']} MB. Each configuration runs `predict_proba(X, fhe='execute', "
        "backend=..., n_jobs=workers)` after a warm-up of two rows per worker, repeated until every "
        "worker holds the keys (column warm_up_s: each worker loads the server and the evaluation "
        "keys, once); `keys_scatter_s` is the one-time "
        "copy of the keys to every Dask worker. `overhead_vs_local_loop` compares seconds per row with "
        "a plain loop of `circuit.encrypt_run_decrypt` in one process with the same threads per "
        "worker (`threads`: OpenMP threads per worker; concrete spreads one row over them). "
        "`correct`: decrypted outputs equal `simulate` for every row.\n\n"
        f"Summary: {extra['summary']}\n\nBatched circuit ({args.batch_size} rows per call): "
        f"{extra.get('batched_circuit')}; row-at-a-time local loop: {loops[n_cpu]['s_per_row']} s/row."
    )
    out = args.output or (common.RESULTS / "quick" if args.quick else common.RESULTS)
    table = common.write_results(
        "scale_out", "Scale-out: encrypted rows per second", results, notes, extra, out, common.markdown_table
    )
    print(table)
    print(notes)
    return {**extra, "rows": results}


if __name__ == "__main__":
    exit_with_status(main)

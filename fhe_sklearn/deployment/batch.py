"""Score many encrypted rows: :func:`run_many` on threads, local processes or a Dask cluster.

FHE runs one circuit call per row, seconds each for tree models, so a table of encrypted
rows is split into chunks that run in parallel. Every worker (thread pool, process or Dask
worker) loads the compiled server and the client's evaluation keys **once** and keeps them
in a per-process cache keyed by artifact id and key id; chunks then carry only ciphertexts.

What travels to a Dask worker: the server artifact (``server.zip``, kilobytes) and the
evaluation keys (hundreds of MB for tree models), each once per worker (scattered to every
worker, or read by the workers from shared storage when given as a path), then chunks of
ciphertexts; what comes back is encrypted results. No secret key is ever involved.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .workers import (
    WORKER_CACHE_SIZE,
    ServerBundle,
    fingerprint,
    progress_bar,
    score_chunk,
    split,
    worker_cache_info,
)

__all__ = ["BACKENDS", "ServerBundle", "execute_rows", "fingerprint", "run_many", "worker_cache_info"]

BACKENDS = ("threads", "processes", "dask")
_lock = threading.Lock()


# -- driver side ----------------------------------------------------------------------------
def run_many(
    artifact: ServerBundle,
    ciphertexts: Iterable[bytes],
    evaluation_keys: bytes | str | Path,
    *,
    key_id: str | None = None,
    backend: str = "processes",
    scheduler: Any = None,
    n_jobs: int | None = None,
    chunk_size: int | None = None,
    progress: bool | None = None,
    scatter_keys: bool = True,
) -> list[bytes]:
    """Encrypted results of many serialized ciphertexts, in input order.

    Parameters
    ----------
    artifact : ServerBundle
        The compiled server, e.g. ``ServerBundle.from_deployment("deployment")``.
    ciphertexts : iterable of bytes
        One serialized encrypted row each.
    evaluation_keys : bytes, str or Path
        The client's serialized evaluation keys, or the path of a file holding them (read
        by local workers; see ``scatter_keys`` for Dask).
    key_id : str, optional
        Id of the key set in the workers' caches; default: a hash of the keys.
    backend : {"processes", "threads", "dask"}
        ``"processes"``: a pool of local processes (joblib's loky, reused across calls);
        ``"threads"``: threads of this process; ``"dask"``: a Dask cluster (``scheduler``).
    scheduler : distributed.Client or str, optional
        For ``backend="dask"``: a client or a scheduler address (``"tcp://host:8786"``);
        default: the current client (``distributed.default_client()``).
    n_jobs : int, optional
        Local workers (``None`` or ``-1``: one per core). The size of a Dask cluster is its own.
    chunk_size : int, optional
        Rows per task; default: about four chunks per worker, at most 8 MB of ciphertexts.
    progress : bool, optional
        tqdm bar of rows done (default: when more than 4 rows).
    scatter_keys : bool, default=True
        ``backend="dask"`` only: send the keys to every worker once (a path is read here
        first, only when this client has not sent that key id yet). ``False``: the workers
        read the path themselves (shared storage), so the keys never cross the Dask network.

    Returns
    -------
    list of bytes
        One serialized encrypted result per ciphertext, in input order.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if scheduler is not None and backend != "dask":
        raise ValueError(f"scheduler= is for backend='dask', not {backend!r}")
    ciphertexts = list(ciphertexts)
    bad = next((i for i, c in enumerate(ciphertexts) if not isinstance(c, (bytes, bytearray))), None)
    if bad is not None:
        raise TypeError(f"ciphertexts must be serialized bytes; row {bad} is {type(ciphertexts[bad]).__name__}")
    if isinstance(evaluation_keys, Path):
        evaluation_keys = str(evaluation_keys)
    if isinstance(evaluation_keys, (bytes, bytearray)):
        evaluation_keys = bytes(evaluation_keys)
    elif not isinstance(evaluation_keys, str):
        raise TypeError(f"evaluation_keys must be bytes or a path, got {type(evaluation_keys).__name__}")
    elif not Path(evaluation_keys).is_file() and (backend != "dask" or scatter_keys):
        raise FileNotFoundError(f"no evaluation keys file {evaluation_keys}")
    if key_id is None and isinstance(evaluation_keys, str) and not Path(evaluation_keys).is_file():
        raise ValueError(f"key_id is needed when the keys file {evaluation_keys} is only on the workers")
    if key_id is None:
        data = evaluation_keys if isinstance(evaluation_keys, bytes) else Path(evaluation_keys).read_bytes()
        key_id = fingerprint(data)
    if not ciphertexts:
        return []
    if backend == "dask":
        from .dask_backend import run_on_dask

        keys: Any = evaluation_keys
        if isinstance(keys, str) and scatter_keys:
            path = keys
            keys = lambda: Path(path).read_bytes()  # noqa: E731
        return run_on_dask(artifact, ciphertexts, keys, key_id, scheduler, chunk_size, progress)
    n_workers = _n_workers(n_jobs)
    chunks = split(ciphertexts, chunk_size, n_workers)
    keys = evaluation_keys
    if backend == "processes" and isinstance(keys, bytes):
        keys = _spill_keys(key_id, keys)  # read once per process instead of pickled per chunk
    tasks = [(artifact.light(), key_id, keys, chunk, start) for start, chunk in chunks]
    with progress_bar(len(ciphertexts), progress) as bar:
        if backend == "threads":
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(n_workers) as pool:
                return _gather_local(pool, tasks, bar)
        return _gather_local(process_pool(n_workers), tasks, bar)


def process_pool(n_workers: int) -> Any:
    """The loky executor of ``backend="processes"``: reused across calls, so worker processes
    keep their loaded keys. Concrete's runtime spreads one row over OpenMP threads, so each
    worker gets its share of the cores instead of all of them (no oversubscription)."""
    from joblib.externals.loky import get_reusable_executor

    env = {"OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n_workers))}
    return get_reusable_executor(max_workers=n_workers, env=env)


def _n_workers(n_jobs: int | None) -> int:
    if n_jobs is None or n_jobs == -1:
        return os.cpu_count() or 1
    if not isinstance(n_jobs, int) or n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive int, -1 or None, got {n_jobs!r}")
    return n_jobs


def _gather_local(pool: Any, tasks: list[tuple], bar: Any) -> list[bytes]:
    from concurrent.futures import as_completed

    futures = {pool.submit(score_chunk, *task): task[-1] for task in tasks}
    done: dict[int, list[bytes]] = {}
    for future in as_completed(futures):
        done[futures[future]] = future.result()
        bar.update(len(done[futures[future]]))
    return list(itertools.chain.from_iterable(done[start] for start in sorted(done)))


_spilled: OrderedDict[str, str] = OrderedDict()
_spill_dir: list[str] = []


def _spill_keys(key_id: str, data: bytes) -> str:
    """Keys written once to a private temporary file (removed at exit) that local workers read."""
    with _lock:
        if not _spill_dir:
            _spill_dir.append(tempfile.mkdtemp(prefix="fhe_sklearn_keys_"))  # mode 0700
            atexit.register(shutil.rmtree, _spill_dir[0], ignore_errors=True)
        path = Path(_spill_dir[0]) / f"{key_id}.evaluation_keys"
        if not path.exists():
            path.write_bytes(data)
        _spilled[key_id] = str(path)
        _spilled.move_to_end(key_id)
        while len(_spilled) > WORKER_CACHE_SIZE:
            Path(_spilled.popitem(last=False)[1]).unlink(missing_ok=True)
        return str(path)


# -- the estimator's side: one process holds both the client and the server ----------------
_circuits: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _circuit_parts(circuit: Any) -> tuple[ServerBundle, bytes, str]:
    """The circuit's server saved once, and its serialized evaluation keys with their id."""
    if circuit not in _circuits:
        keys = circuit.keys.evaluation.serialize()
        _circuits[circuit] = (ServerBundle.from_circuit(circuit), keys, fingerprint(keys))
    return _circuits[circuit]


def forget_circuit(circuit: Any) -> None:
    """Drop what :func:`execute_rows` kept for ``circuit`` (e.g. after new keys)."""
    _circuits.pop(circuit, None)


def execute_rows(
    circuit: Any, rows: Sequence[tuple], backend: str, n_jobs: int | None, progress: bool | None
) -> list[Any]:
    """``circuit.encrypt_run_decrypt(*row)`` of every row (a tuple of inputs), the runs done
    by :func:`run_many`.

    Rows are encrypted and decrypted here; workers get the server, the evaluation keys (once)
    and ciphertexts. ``backend="dask"`` uses the current ``distributed.Client``.
    """
    if rows and len(rows[0]) != 1:
        raise ValueError(f"backend={backend!r} runs circuits of one encrypted input, this one has {len(rows[0])}")
    artifact, keys, key_id = _circuit_parts(circuit)
    encrypted = [circuit.encrypt(*row).serialize() for row in rows]
    results = run_many(artifact, encrypted, keys, key_id=key_id, backend=backend, n_jobs=n_jobs, progress=progress)
    from concrete import fhe

    return [circuit.decrypt(fhe.Value.deserialize(result)) for result in results]


@dataclass(frozen=True)
class EstimatorBackend:
    """A back-end of :mod:`fhe_sklearn.quantization.execution` for an estimator's
    ``predict(..., fhe="execute", backend=name)``: the rows go through :func:`run_many`."""

    name: str

    def run_rows(self, circuit: Any, rows: Sequence[tuple], n_jobs: int | None, progress: bool | None) -> list[Any]:
        """The rows encrypted here, run by :func:`run_many` on this back-end, decrypted here."""
        return execute_rows(circuit, rows, self.name, n_jobs, progress)

    def forget(self, circuit: Any) -> None:
        """Drop the circuit's saved server and keys (see :func:`forget_circuit`)."""
        forget_circuit(circuit)


#: named in setup.cfg's ``fhe_sklearn.row_backends`` entry points
PROCESSES = EstimatorBackend("processes")
DASK = EstimatorBackend("dask")

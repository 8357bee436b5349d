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
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

BACKENDS = ("threads", "processes", "dask")
#: key sets (and servers) a worker process keeps deserialized, least recently used dropped
WORKER_CACHE_SIZE = 4
#: a Dask task carries its ciphertexts; past ~10 MB Dask warns about large graphs
MAX_CHUNK_BYTES = 8 * 2**20
#: how many times a chunk is resubmitted after the whole cluster lost it (client.restart())
MAX_RESUBMITS = 3


@dataclass(frozen=True)
class ServerBundle:
    """What a worker needs to run a model, loaded once per worker process.

    ``kind="deployment"``: a deployment's files (``server.zip``, and ``client.json`` when
    present) run by :class:`~fhe_sklearn.deployment.FHEModelServer`; ``kind="circuit"``: the
    concrete server of a compiled circuit (the estimator's ``predict(..., backend=...)``).
    Workers on this machine (or with shared storage) load the files from ``directory``;
    remote Dask workers receive ``files`` once and write them to a temporary directory.
    """

    artifact_id: str
    kind: str
    directory: str
    files: dict[str, bytes] = field(repr=False, compare=False, hash=False)

    @classmethod
    def from_deployment(cls, path: str | Path) -> ServerBundle:
        """The server files of a deployment directory (or of the ``server.zip`` in it)."""
        from .fhe_model import CLIENT_FILE, SERVER_FILE

        directory = Path(path).parent if Path(path).is_file() else Path(path)
        names = [SERVER_FILE] + ([CLIENT_FILE] if (directory / CLIENT_FILE).exists() else [])
        files = {name: (directory / name).read_bytes() for name in names}
        return cls(fingerprint(b"".join(files.values())), "deployment", str(directory.resolve()), files)

    @classmethod
    def from_circuit(cls, circuit: Any) -> ServerBundle:
        """A compiled ``concrete.fhe.Circuit``'s server, saved to a temporary directory."""
        directory = tempfile.mkdtemp(prefix="fhe_sklearn_server_")
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        circuit.server.save(str(Path(directory) / "server.zip"))
        files = {"server.zip": (Path(directory) / "server.zip").read_bytes()}
        return cls(fingerprint(files["server.zip"]), "circuit", directory, files)

    def light(self) -> ServerBundle:
        """This artifact without its files, for workers that read ``directory``."""
        return replace(self, files={})


def fingerprint(data: bytes) -> str:
    """Content id of serialized keys or artifacts (128-bit BLAKE2b, hex)."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


# -- worker side: per-process caches ------------------------------------------------------
class _Runner:
    """A loaded server: deserializes keys and runs one serialized ciphertext."""

    def __init__(self, artifact: ServerBundle) -> None:
        self.kind = artifact.kind
        directory = Path(artifact.directory)
        if artifact.files:  # sent to this worker: never trust a same-named local directory
            directory = Path(tempfile.mkdtemp(prefix="fhe_sklearn_server_"))  # concrete loads files only
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            for name, data in artifact.files.items():
                (directory / name).write_bytes(data)
        if self.kind == "circuit":
            from concrete import fhe

            self.server = fhe.Server.load(str(directory / "server.zip"))
        else:
            from .fhe_model import FHEModelServer

            self.server = FHEModelServer(directory).load()

    def load_keys(self, data: bytes) -> Any:
        if self.kind != "circuit":
            return self.server.load_evaluation_keys(data)
        from concrete import fhe

        try:
            return fhe.EvaluationKeys.deserialize(data)
        except RuntimeError as err:
            raise ValueError(f"malformed evaluation keys: {err}") from err

    def run(self, ciphertext: bytes, keys: Any) -> bytes:
        if self.kind != "circuit":
            return self.server.run(ciphertext, keys)
        from concrete import fhe

        try:
            value = fhe.Value.deserialize(ciphertext)
        except RuntimeError as err:
            raise ValueError(f"malformed ciphertext: {err}") from err
        try:
            result = self.server.run(value, evaluation_keys=keys)
        except RuntimeError as err:
            raise ValueError(f"the ciphertext does not fit this model: {err}") from err
        if isinstance(result, tuple):
            raise ValueError(f"run_many scores circuits of one output, this one has {len(result)}")
        return result.serialize()


_lock = threading.Lock()
_servers: OrderedDict[str, _Runner] = OrderedDict()
_keys: OrderedDict[tuple[str, str], Any] = OrderedDict()
_loads: Counter = Counter()


def _cached(cache: OrderedDict, key: Any, load: Callable[[], Any], what: tuple[str, str]) -> Any:
    with _lock:  # one load per process even when threads start together
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        value = cache[key] = load()
        _loads[what] += 1
        while len(cache) > WORKER_CACHE_SIZE:
            cache.popitem(last=False)
        return value


def worker_cache_info() -> dict[str, dict[str, int]]:
    """Loads done by this process: ``{"server": {artifact_id: n}, "keys": {key_id: n}}``.

    Run it on every Dask worker with ``client.run(worker_cache_info)``.
    """
    info: dict[str, dict[str, int]] = {"server": {}, "keys": {}}
    for (what, ident), n in _loads.items():
        info[what][ident] = info[what].get(ident, 0) + n
    return info


def score_chunk(
    artifact: ServerBundle, key_id: str, keys: str | bytes, chunk: Sequence[bytes], start: int
) -> list[bytes]:
    """Run the server on each ciphertext of ``chunk`` (rows ``start...``), on a worker.

    ``keys`` is the serialized evaluation keys or a path the worker can read. The server
    and the keys are loaded once per process (by artifact id and key id) and reused by
    later chunks.
    """
    runner = _cached(_servers, artifact.artifact_id, lambda: _Runner(artifact), ("server", artifact.artifact_id))

    def load_keys() -> Any:
        return runner.load_keys(Path(keys).read_bytes() if isinstance(keys, str) else keys)

    evaluation_keys = _cached(_keys, (artifact.artifact_id, key_id), load_keys, ("keys", key_id))
    results = []
    for row, ciphertext in enumerate(chunk, start):
        try:
            results.append(runner.run(ciphertext, evaluation_keys))
        except ValueError as err:
            raise ValueError(f"row {row}: {err}") from None
    return results


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


def split(ciphertexts: list[bytes], chunk_size: int | None, n_workers: int) -> list[tuple[int, list[bytes]]]:
    """``(first row, rows)`` chunks: ~4 per worker for balance, at most ``MAX_CHUNK_BYTES``."""
    if chunk_size is None:
        row_bytes = max(len(c) for c in ciphertexts)
        chunk_size = max(1, min(-(-len(ciphertexts) // (4 * n_workers)), MAX_CHUNK_BYTES // row_bytes))
    elif not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return [(i, ciphertexts[i : i + chunk_size]) for i in range(0, len(ciphertexts), chunk_size)]


def progress_bar(total: int, progress: bool | None) -> Any:
    """A tqdm bar of rows done (shown for more than a few rows unless ``progress`` says)."""
    from tqdm import tqdm

    show = total > 4 if progress is None else progress
    return tqdm(total=total, desc="FHE rows", unit="row", disable=not show, leave=False)


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

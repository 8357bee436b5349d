"""The worker side of :func:`~fhe_sklearn.deployment.batch.run_many`: what a thread pool, a
local process or a Dask worker runs, and what it keeps loaded between chunks.

Every worker loads the compiled server and the client's evaluation keys **once** and keeps
them in a per-process cache keyed by artifact id and key id; chunks then carry only
ciphertexts.
"""

from __future__ import annotations

import atexit
import hashlib
import shutil
import tempfile
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .artifacts import CLIENT_FILE, SERVER_FILE
from .server_side import DeploymentServer

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
    present) run by :class:`~fhe_sklearn.deployment.server_side.DeploymentServer`; ``kind="circuit"``: the
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
            self.server = DeploymentServer(directory).load()

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

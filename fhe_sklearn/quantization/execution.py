"""Row back-ends: who runs a compiled circuit over many rows for ``fhe="execute"``.

:meth:`QuantizedModule.quantized_forward` encrypts, runs and decrypts row by row. ``"threads"``
(the default) runs the rows on threads of this process and lives here. Back-ends that need more
machinery (worker processes, a Dask cluster) belong to a higher layer: they are named in the
package's ``fhe_sklearn.row_backends`` entry points (``setup.cfg``) and imported on first use,
so this layer never imports the one that provides them. :func:`register_backend` adds one at
run time (e.g. a user's own cluster).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import metadata
from typing import Any, Protocol

#: the entry-point group naming the back-ends of other layers (and of other packages)
ENTRY_POINT_GROUP = "fhe_sklearn.row_backends"


class RowBackend(Protocol):
    """What runs ``circuit.encrypt_run_decrypt`` over rows, in order."""

    def run_rows(self, circuit: Any, rows: Sequence[tuple], n_jobs: int | None, progress: bool | None) -> list[Any]:
        """One result per row (a row is a tuple of the circuit's inputs)."""

    def forget(self, circuit: Any) -> None:
        """Drop what was kept for ``circuit`` (its keys were replaced)."""


class ThreadBackend:
    """Rows on ``n_jobs`` threads of this process: compiled circuits cannot be pickled to
    worker processes, and concrete releases the GIL while it runs."""

    def run_rows(self, circuit: Any, rows: Sequence[tuple], n_jobs: int | None, progress: bool | None) -> list[Any]:
        """``circuit.encrypt_run_decrypt`` of each row, on ``n_jobs`` threads."""
        return map_rows(lambda row: circuit.encrypt_run_decrypt(*row), list(rows), n_jobs, progress)

    def forget(self, circuit: Any) -> None:
        """Nothing to drop: threads keep nothing per circuit."""


def map_rows(fn: Callable, rows: list, n_jobs: int | None, progress: bool | None) -> list:
    """``fn`` of each row with a tqdm bar, on ``n_jobs`` threads (results in row order)."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    show = len(rows) > 4 if progress is None else progress
    it = tqdm(rows, desc="FHE execute", disable=not show, leave=False)
    if n_jobs in (None, 1):
        return [fn(r) for r in it]
    return Parallel(n_jobs=n_jobs, prefer="threads")(delayed(fn)(r) for r in it)


_registered: dict[str, RowBackend | Callable[[], RowBackend]] = {"threads": ThreadBackend()}
_loaded: dict[str, RowBackend] = {"threads": _registered["threads"]}


def register_backend(name: str, backend: RowBackend | Callable[[], RowBackend]) -> None:
    """Make ``backend`` (or a callable returning it, called on first use) available as
    ``backend=name`` of ``predict`` / ``quantized_forward``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a back-end needs a non-empty name, got {name!r}")
    _registered[name] = backend
    _loaded.pop(name, None)


def _entry_points() -> dict[str, metadata.EntryPoint]:
    return {ep.name: ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    """Every back-end name: the built-in one first, then the others sorted."""
    return ["threads", *sorted((set(_registered) | set(_entry_points())) - {"threads"})]


def get_backend(name: str | None) -> RowBackend:
    """The back-end called ``name`` (None: threads), loaded once.

    Raises
    ------
    ValueError
        If no back-end has that name (the message lists the known ones).
    """
    name = "threads" if name is None else name
    if isinstance(name, str) and name in _loaded:
        return _loaded[name]
    if isinstance(name, str) and name in _registered:
        found = _registered[name]
        backend = found() if not hasattr(found, "run_rows") and callable(found) else found
    elif isinstance(name, str) and name in (points := _entry_points()):
        backend = points[name].load()
    else:
        names = backend_names()
        listed = ", ".join(map(repr, names[:-1])) + f" or {names[-1]!r}" if len(names) > 1 else repr(names[0])
        raise ValueError(f"backend must be {listed}, got {name!r}")
    _loaded[name] = backend
    return backend


def forget_circuit(circuit: Any) -> None:
    """Tell every back-end in use that ``circuit`` has new keys."""
    for backend in _loaded.values():
        backend.forget(circuit)

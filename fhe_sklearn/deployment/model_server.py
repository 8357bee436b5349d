"""The server side of a deployment, as a user sees it: :class:`FHEModelServer`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .batch import ServerBundle, run_many
from .server_side import DeploymentServer


class FHEModelServer(DeploymentServer):
    """Server side: runs the compiled model on ciphertexts with a client's evaluation keys.

    The server holds no secret: it sees ciphertexts and evaluation keys only.

    Parameters
    ----------
    path : str or Path
        Deployment directory (or the path of its ``server.zip``). A ``client.json`` beside
        ``server.zip`` must come from the same deployment.
    path_dir : str or Path, optional
        Concrete ML's name for ``path``.
    verify_key : bytes or str, optional
        Refuse a deployment not signed with this key (see ``FHEModelDev.save``).
    key_cache_bytes : int
        Bound of the cache of deserialized evaluation keys (see :class:`EvaluationKeyCache`).

    Examples
    --------
    >>> server = FHEModelServer("deployment").load()  # doctest: +SKIP
    >>> encrypted_result = server.run(encrypted_row, serialized_evaluation_keys)  # doctest: +SKIP
    """

    def run_many(
        self,
        ciphertexts: list[bytes],
        evaluation_keys: bytes | str | Path,
        *,
        scheduler: Any = None,
        backend: str | None = None,
        n_jobs: int | None = None,
        chunk_size: int | None = None,
        key_id: str | None = None,
        progress: bool | None = None,
    ) -> list[bytes]:
        """Many encrypted rows in, their encrypted results out, in input order.

        Runs on local processes (all cores by default), threads, or a Dask cluster
        (``scheduler``: a ``distributed.Client`` or an address; then ``backend`` defaults to
        ``"dask"``). Each worker loads the server and the evaluation keys once; see
        :func:`fhe_sklearn.deployment.batch.run_many` for the parameters.
        """
        if self._circuit is None:
            raise RuntimeError("call load() first")
        if backend is None:
            backend = "processes" if scheduler is None else "dask"
        if not hasattr(self, "_bundle"):
            self._bundle = ServerBundle.from_deployment(self.path)
        return run_many(
            self._bundle,
            ciphertexts,
            evaluation_keys,
            key_id=key_id,
            backend=backend,
            scheduler=scheduler,
            n_jobs=n_jobs,
            chunk_size=chunk_size,
            progress=progress,
        )

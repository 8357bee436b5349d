"""``run_many(..., backend="dask")``: chunks of encrypted rows as Dask distributed tasks.

The server artifact and the evaluation keys are scattered to every worker once per client
(``broadcast=True``) and reused by later calls; a worker that joins later fetches them from
a peer. Each task carries one chunk of ciphertexts, at most a few chunks per worker are in
flight (the scheduler never holds the whole table), and results are put back in input order
by chunk. A worker lost mid-run has its tasks rescheduled by Dask; chunks the whole cluster
dropped (``client.restart()``) are resubmitted here, up to ``MAX_RESUBMITS`` times each.
"""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

from .workers import MAX_RESUBMITS, WORKER_CACHE_SIZE, ServerBundle, progress_bar, score_chunk, split

_clients: dict[str, Any] = {}
_scattered: OrderedDict[tuple[str, str, str], Any] = OrderedDict()


def get_client(scheduler: Any = None) -> Any:
    """A ``distributed.Client`` from a client, an address (one client per address, kept) or
    None (the current default client)."""
    try:
        from distributed import Client, default_client
    except ImportError as err:  # pragma: no cover
        raise ImportError("backend='dask' needs the 'dask' extra: pip install 'fhe-sklearn[dask]'") from err
    if scheduler is None:
        try:
            return default_client()
        except ValueError:
            raise ValueError(
                "backend='dask' needs a cluster: create a distributed.Client first or pass scheduler='tcp://host:8786'"
            ) from None
    if isinstance(scheduler, Client):
        return scheduler
    if isinstance(scheduler, str):
        client = _clients.get(scheduler)
        if client is None or client.status not in ("running", "connecting"):
            client = _clients[scheduler] = Client(scheduler, set_as_default=False)
        return client
    raise TypeError(f"scheduler must be a distributed.Client or an address, got {type(scheduler).__name__}")


def scattered(client: Any, kind: str, ident: str, data: Any) -> Any:
    """A future of ``data`` (or of what it returns, if callable) on every worker, scattered
    once per client and id."""
    key = (client.id, kind, ident)
    future = _scattered.get(key)
    for attempt in itertools.count():
        if future is not None and future.status == "finished":
            break
        try:  # first use, or lost with the cluster
            payload = data() if callable(data) else data
            future = _scattered[key] = client.scatter(payload, broadcast=True, hash=False)
        except (OSError, ValueError):  # workers going away mid-scatter (a restart): wait for new ones
            # (distributed raises ValueError when a broadcast finds fewer workers than replicas)
            if attempt >= MAX_RESUBMITS:
                raise
            time.sleep(1)
            client.wait_for_workers(1, timeout=120)
    _scattered.move_to_end(key)
    while len(_scattered) > 2 * WORKER_CACHE_SIZE:
        _scattered.popitem(last=False)  # its data is released once no task needs it
    return future


def run_on_dask(
    artifact: ServerBundle,
    ciphertexts: list[bytes],
    keys: bytes | str | Callable[[], bytes],
    key_id: str,
    scheduler: Any,
    chunk_size: int | None,
    progress: bool | None,
) -> list[bytes]:
    """Score ``ciphertexts`` on a Dask cluster, in chunks, a few per worker in flight;
    the results in input order (see :func:`~fhe_sklearn.deployment.batch.run_many`)."""
    client = get_client(scheduler)
    n_workers = max(1, len(client.scheduler_info().get("workers", {})))
    todo = deque(split(ciphertexts, chunk_size, n_workers))
    window = 2 * n_workers + 1
    token = uuid.uuid4().hex
    attempts: Counter = Counter()
    in_flight: dict[Any, tuple[int, list[bytes]]] = {}
    done: dict[int, list[bytes]] = {}

    from distributed import as_completed

    def fill(pending: Any) -> None:
        while todo and len(in_flight) < window:
            start, chunk = todo.popleft()
            artifact_ref = scattered(client, "server", artifact.artifact_id, artifact)
            keys_ref = keys if isinstance(keys, str) else scattered(client, "keys", key_id, keys)
            future = client.submit(
                score_chunk,
                artifact_ref,
                key_id,
                keys_ref,
                chunk,
                start,
                key=f"fhe-rows-{token}-{start}-{attempts[start]}",
                pure=False,
            )
            in_flight[future] = (start, chunk)
            pending.add(future)

    pending = as_completed(loop=client.loop)
    try:
        with progress_bar(len(ciphertexts), progress) as bar:
            fill(pending)
            for future in pending:
                start, chunk = in_flight.pop(future)
                if future.status == "finished":
                    done[start] = future.result()
                    bar.update(len(chunk))
                elif future.status == "error":
                    future.result()  # raises the task's own error (e.g. a malformed ciphertext)
                else:  # cancelled or lost: the cluster dropped it (e.g. client.restart())
                    attempts[start] += 1
                    if attempts[start] > MAX_RESUBMITS:
                        raise RuntimeError(f"rows {start}...: dropped by the Dask cluster {attempts[start]} times")
                    todo.appendleft((start, chunk))
                fill(pending)
    finally:
        if in_flight:
            client.cancel(list(in_flight))
    return list(itertools.chain.from_iterable(done[start] for start in sorted(done)))

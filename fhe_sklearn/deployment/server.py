"""HTTP inference server (FastAPI): ``python -m fhe_sklearn serve DEPLOYMENT_DIR``.

Endpoints
---------
``GET /health``
    ``{"status": "ok", ...}`` once the workers are up (for orchestration probes).
``GET /info``
    Versions, model class, input shape and the server's limits.
``GET /client.json``
    What a client needs: concrete's client specs and the model's quantizers.
``POST /keys`` (body: serialized evaluation keys; ``Authorization: Bearer <api key>`` when the
server has one) → 201 ``{"key_id", "token"}``.
``POST /predict/{key_id}`` (body: one serialized ciphertext; ``Authorization: Bearer <token>``)
    → the serialized encrypted result.
``POST /train/{key_id}`` (training deployments; body: the encrypted weights then the
    encrypted steps, framed as a batch; same token) → the encrypted weights after the steps.
``POST /predict_batch/{key_id}`` (body: many serialized ciphertexts, framed; same token)
    → their encrypted results, framed the same way, in input order. Framing (version 1): the
    8 bytes ``FHESKLB1``, the row count (uint32, little-endian), each row's length (uint64,
    little-endian), then the rows (:mod:`.wire`; what ``quantize_encrypt_serialize_batch``
    returns). The rows run on the worker pool, or on a Dask cluster when the server has a
    ``dask_scheduler``. A malformed frame is a 400; a malformed row a 400 naming its index.

A wrong or missing token and an unknown key id get the same 401. Ciphertexts and keys are
deserialized and run in worker processes (:mod:`.worker_pool`), so a malformed input cannot stall
the server; keys and token hashes live under ``key_dir`` (:mod:`.key_store`), so a restart keeps
them. The server never sees a private key.
"""

# no `from __future__ import annotations`: FastAPI must resolve the locally imported
# Request annotations at definition time
import asyncio
import hmac
import logging
import os
import sys
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._version import __version__
from ..serialization import FORMAT_VERSION
from . import wire
from .fhe_model import CLIENT_FILE, read_client_file
from .key_store import KeyStore, KeyStoreFull, token_digest
from .request_middleware import BodyTooLarge, JsonLogFormatter, LimitAndLogMiddleware
from .training import pack_step, unpack_training_request
from .worker_pool import TaskError, WorkerPool

OCTETS = "application/octet-stream"
MB = 2**20
WRITE_BUFFER = 8 * MB
BAD_CREDENTIALS = "invalid key id or token"
logger = logging.getLogger("fhe_sklearn.server")


@dataclass
class ServerSettings:
    """Limits of the HTTP server (the ``serve`` options).

    Parameters
    ----------
    max_request_bytes : int
        Largest ciphertext body (and any body other than a key upload); 413 beyond it.
    max_keys_bytes : int
        Largest evaluation-key upload; 413 beyond it.
    max_key_sets : int
        Key sets stored at once; the least recently used unused ones are evicted to make room.
    key_quota_bytes : int
        Bytes of stored key sets; same eviction. A key set larger than the quota, or no
        evictable key set left, is refused with 507.
    workers : int
        Worker processes, i.e. ciphertexts processed at once.
    max_queue : int
        Requests waiting for a worker beyond ``workers``; more get 503 with ``Retry-After``.
    timeout : float
        Seconds one execution may take (504 beyond, and its worker is replaced).
    deserialize_timeout : float
        Seconds to deserialize one ciphertext (400 beyond: a valid one takes milliseconds);
        a key upload gets at least one second per 10 MB.
    key_cache : int
        Key sets each worker keeps deserialized in memory.
    api_key : str or None
        If set, ``POST /keys`` needs ``Authorization: Bearer <api_key>``.
    docs : bool
        Serve ``/docs``, ``/redoc`` and ``/openapi.json``.
    max_batch_bytes : int
        Largest ``/predict_batch`` body; 413 beyond it.
    max_batch_rows : int
        Most rows in one ``/predict_batch`` body; 413 beyond it.
    dask_scheduler : str or None
        Address of a Dask scheduler (``tcp://host:8786``): batches run on its workers, which
        get each key set once, instead of on the local worker pool.
    """

    max_request_bytes: int = 64 * MB
    max_keys_bytes: int = 2048 * MB
    max_key_sets: int = 100
    key_quota_bytes: int = 20 * 1024 * MB
    workers: int = 2
    max_queue: int = 16
    timeout: float = 600.0
    deserialize_timeout: float = 10.0
    key_cache: int = 2
    api_key: str | None = None
    docs: bool = False
    max_batch_bytes: int = 256 * MB
    max_batch_rows: int = 1000
    dask_scheduler: str | None = None


def _bearer(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, credentials = authorization.partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def create_app(deployment_dir: str | Path, key_dir: str | Path, settings: ServerSettings | None = None) -> Any:
    """The FastAPI application serving the model in ``deployment_dir``.

    Worker processes start (and load the model) when the application starts (ASGI lifespan).
    """
    try:
        from fastapi import FastAPI, HTTPException, Request
        from fastapi.responses import JSONResponse, Response
        from starlette.concurrency import run_in_threadpool
        from starlette.requests import ClientDisconnect
    except ImportError as err:  # pragma: no cover
        raise ImportError("the HTTP server needs the 'server' extra: pip install 'fhe-sklearn[server]'") from err

    settings = settings or ServerSettings()
    deployment_dir = Path(deployment_dir)
    client_data = read_client_file(deployment_dir)
    training = isinstance(client_data.get("spec"), dict) and "training" in client_data["spec"]
    store = KeyStore(key_dir, settings.max_key_sets, settings.key_quota_bytes)
    pool = WorkerPool(
        deployment_dir,
        settings.workers,
        settings.max_queue,
        settings.timeout,
        settings.deserialize_timeout,
        settings.key_cache,
    )
    api_key_digest = token_digest(settings.api_key) if settings.api_key else None
    # key uploads (streamed to disk before a worker checks them) and batches waiting on Dask
    # (each holds a thread): bounded too
    uploads = {"in_progress": 0, "dask_batches": 0}

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        await pool.start()
        logger.info("workers ready", extra={"workers": settings.workers, "key_sets": len(store)})
        yield
        await pool.close()

    docs = settings.docs
    app = FastAPI(
        title="fhe_sklearn inference server",
        version=__version__,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )

    def limit_for(path: str) -> int:
        if path == "/keys":
            return settings.max_keys_bytes
        batch = path.startswith(("/predict_batch/", "/train/"))
        return settings.max_batch_bytes if batch else settings.max_request_bytes

    app.add_middleware(LimitAndLogMiddleware, limit_for=limit_for)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, exc: BodyTooLarge) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=413)

    @app.exception_handler(TaskError)
    async def task_error(request: Request, exc: TaskError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=headers)

    @app.exception_handler(KeyStoreFull)
    async def store_full(request: Request, exc: KeyStoreFull) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=507)

    @app.exception_handler(ClientDisconnect)
    async def disconnected(request: Request, exc: ClientDisconnect) -> JSONResponse:
        return JSONResponse({"detail": "incomplete request body"}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error", exc_info=exc)  # the server log only, never the client
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    async def read_body(request: Request) -> bytes:
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
        if not body:
            raise HTTPException(400, "empty request body")
        return bytes(body)

    @app.get("/health")
    def health() -> Any:
        alive = pool.alive
        status = "ok" if alive else "unavailable"
        content = {"status": status, "workers_alive": alive, "requests_in_progress": pool.pending}
        return JSONResponse(content, status_code=200 if alive else 503)

    @app.get("/info")
    def info() -> dict:
        return {
            "library_version": __version__,
            "format_version": FORMAT_VERSION,
            "model": client_data["model"]["class"],
            "input_shape": client_data["input_shape"],
            "max_request_bytes": settings.max_request_bytes,
            "max_keys_bytes": settings.max_keys_bytes,
            "max_batch_bytes": settings.max_batch_bytes,
            "max_batch_rows": settings.max_batch_rows,
            "batch_framing": wire.BATCH_MAGIC.decode(),
            "key_upload_requires_api_key": api_key_digest is not None,
            "training": training,
        }

    @app.get("/client.json")
    def client_file() -> Response:
        return Response((deployment_dir / CLIENT_FILE).read_bytes(), media_type="application/json")

    @app.post("/keys", status_code=201)
    async def upload_keys(request: Request) -> dict:
        if api_key_digest is not None:
            given = _bearer(request.headers.get("authorization"))
            if not hmac.compare_digest(token_digest(given or ""), api_key_digest):
                raise HTTPException(401, "invalid or missing API key", headers={"WWW-Authenticate": "Bearer"})
        declared = request.headers.get("content-length")
        if declared is not None:
            store.check_fits(int(declared))  # the middleware checked it is an integer
        if uploads["in_progress"] >= settings.workers + settings.max_queue:
            raise TaskError(503, "too many key uploads in progress", retry_after=5)
        uploads["in_progress"] += 1
        try:
            path = store.new_upload()
            try:
                await _stream_to_file(request, path, run_in_threadpool)
                size = path.stat().st_size
                if size == 0:
                    raise HTTPException(400, "empty request body")
                store.check_fits(size)
                await pool.check_keys(path)
                key_id, token = store.commit(path)
            except BaseException:
                store.discard_upload(path)
                raise
        finally:
            uploads["in_progress"] -= 1
        logger.info("key set stored", extra={"bytes": size, "key_sets": len(store), "stored_bytes": store.total_bytes})
        return {"key_id": key_id, "token": token}

    def authenticated(key_id: str, request: Request) -> Any:
        record = store.authenticate(key_id, _bearer(request.headers.get("authorization")))
        if record is None:
            raise HTTPException(401, BAD_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"})
        return record

    @app.post("/predict/{key_id}")
    async def predict(key_id: str, request: Request) -> Response:
        record = authenticated(key_id, request)
        record.in_use += 1  # not evicted while in use
        try:
            body = await read_body(request)
            store.touch(record)
            result = await pool.run(key_id, store.keys_path(key_id), body)
        finally:
            record.in_use -= 1
        return Response(result, media_type=OCTETS)

    @app.post("/predict_batch/{key_id}")
    async def predict_batch(key_id: str, request: Request) -> Response:
        record = authenticated(key_id, request)
        record.in_use += 1
        try:
            body = await read_body(request)
            try:
                rows = wire.unpack(body, wire.BATCH_MAGIC)
            except ValueError as err:
                raise HTTPException(400, f"{err} (expected the {wire.BATCH_MAGIC.decode()} framing)") from None
            if not rows:
                raise HTTPException(400, "empty batch")
            if len(rows) > settings.max_batch_rows:
                raise HTTPException(413, f"{len(rows)} rows exceed the server's {settings.max_batch_rows}-row limit")
            store.touch(record)
            keys_path = store.keys_path(key_id)
            if settings.dask_scheduler:
                # each batch holds a thread until the cluster answers: bounded like the pool's queue
                if uploads["dask_batches"] >= settings.workers + settings.max_queue:
                    raise TaskError(503, "too many batches in progress", retry_after=5)
                uploads["dask_batches"] += 1
                try:
                    results = await run_in_threadpool(_run_on_dask, deployment_dir, rows, keys_path, key_id, settings)
                finally:
                    uploads["dask_batches"] -= 1
            else:
                results = await _run_rows(pool, key_id, keys_path, rows)
        finally:
            record.in_use -= 1
        return Response(wire.pack(results, wire.BATCH_MAGIC), media_type=OCTETS)

    @app.post("/train/{key_id}")
    async def train(key_id: str, request: Request) -> Response:
        if not training:
            raise HTTPException(404, "this server does not serve an encrypted-training deployment")
        record = authenticated(key_id, request)
        record.in_use += 1
        try:
            body = await read_body(request)
            try:
                weights, steps = unpack_training_request(body)
            except ValueError as err:
                raise HTTPException(400, f"{err} (expected the {wire.BATCH_MAGIC.decode()} framing)") from None
            if len(steps) > settings.max_batch_rows:
                raise HTTPException(413, f"{len(steps)} steps exceed the server's {settings.max_batch_rows}-row limit")
            store.touch(record)
            keys_path = store.keys_path(key_id)
            for index, step in enumerate(steps):  # each step reads the weights the previous one wrote
                try:
                    arguments = pack_step(step, weights, index)
                except ValueError as err:
                    raise HTTPException(400, str(err)) from None
                try:
                    weights = await pool.run(key_id, keys_path, arguments)
                except TaskError as err:
                    raise TaskError(err.status, f"step {index}: {err.message}", err.retry_after) from None
        finally:
            record.in_use -= 1
        return Response(weights, media_type=OCTETS)

    app.state.key_store, app.state.worker_pool = store, pool
    return app


async def _run_rows(pool: WorkerPool, key_id: str, keys_path: Path, rows: list[bytes]) -> list[bytes]:
    """Every row on the pool, at most one per worker at a time (a batch never fills the
    queue by itself), in input order; the first failure cancels the rest."""
    results: list[bytes] = [b""] * len(rows)
    todo = iter(range(len(rows)))

    async def lane() -> None:
        for i in todo:
            try:
                results[i] = await pool.run(key_id, keys_path, rows[i])
            except TaskError as err:
                raise TaskError(err.status, f"row {i}: {err.message}", err.retry_after) from None

    lanes = [asyncio.ensure_future(lane()) for _ in range(min(pool.n_workers, len(rows)))]
    try:
        await asyncio.gather(*lanes)
    except BaseException:
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        raise
    return results


_dask_bundles: dict[str, Any] = {}


def _run_on_dask(deployment_dir: Path, rows: list[bytes], keys_path: Path, key_id: str, settings: Any) -> list[bytes]:
    """The rows on the configured Dask cluster; its workers get the key set once."""
    from .batch import ServerBundle, run_many

    bundle = _dask_bundles.get(str(deployment_dir))
    if bundle is None:
        bundle = _dask_bundles[str(deployment_dir)] = ServerBundle.from_deployment(deployment_dir)
    try:
        scheduler = settings.dask_scheduler
        keys = str(keys_path)
        return run_many(bundle, rows, keys, key_id=key_id, backend="dask", scheduler=scheduler, progress=False)
    except ValueError as err:  # a malformed row, named by its index
        raise TaskError(400, str(err)) from None
    except OSError as err:
        logger.error("Dask cluster unreachable", exc_info=err)
        raise TaskError(503, "the Dask cluster is unreachable", retry_after=10) from None


async def _stream_to_file(request: Any, path: Path, run_in_threadpool: Any) -> None:
    """Write the body to a new 0600 file, fsynced before returning."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        buffer = bytearray()
        async for chunk in request.stream():
            buffer += chunk
            if len(buffer) >= WRITE_BUFFER:
                await run_in_threadpool(f.write, bytes(buffer))
                buffer.clear()
        await run_in_threadpool(f.write, bytes(buffer))
        await run_in_threadpool(f.flush)
        await run_in_threadpool(os.fsync, f.fileno())


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the server's and uvicorn's loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def read_api_key(path: str | Path) -> str:
    """The API key in ``path`` (surrounding whitespace ignored), at least 16 characters."""
    key = Path(path).read_text().strip()
    if len(key) < 16:
        raise SystemExit(f"the API key in {path} must have at least 16 characters (e.g. `openssl rand -hex 32`)")
    return key

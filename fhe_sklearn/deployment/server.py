"""HTTP inference server (FastAPI): ``python -m fhe_sklearn serve DEPLOYMENT_DIR``.

Endpoints: ``GET /info``; ``GET /client.json`` (what a client needs: specs, quantizers);
``POST /keys`` (body: serialized evaluation keys) → ``{"key_id": ...}``;
``POST /predict/{key_id}`` (body: one serialized ciphertext) → the encrypted result;
``POST /predict_batch/{key_id}`` (body: many ciphertexts framed as a batch, see
:mod:`fhe_sklearn.deployment.wire`) → the encrypted results as a batch, run by
:func:`~fhe_sklearn.deployment.batch.run_many` on local processes or a Dask cluster.
Evaluation keys are stored per client under ``key_dir`` (a restart loses nothing) and kept
in memory once loaded. The server never sees a private key.
"""

# no `from __future__ import annotations`: FastAPI must resolve the locally imported
# Request annotations at definition time
import re
import uuid
from pathlib import Path
from typing import Any

from concrete import fhe

from .._version import __version__
from ..serialization import FORMAT_VERSION
from .batch import ServerBundle, run_many
from .fhe_model import CLIENT_FILE, FHEModelServer, read_client_file
from .wire import BATCH_MAGIC, pack, unpack

KEY_ID = re.compile(r"^[0-9a-f]{32}$")
OCTETS = "application/octet-stream"


def create_app(
    deployment_dir: str | Path,
    key_dir: str | Path,
    max_request_bytes: int = 2**31,
    dask_scheduler: str | None = None,
    n_jobs: int | None = None,
) -> Any:
    """The FastAPI application serving the model in ``deployment_dir``; batches run on
    ``n_jobs`` local processes (default: one per core) or on the Dask cluster at
    ``dask_scheduler`` (``"tcp://host:8786"``)."""
    try:
        from fastapi import FastAPI, HTTPException, Request
        from fastapi.responses import JSONResponse, Response
        from starlette.concurrency import run_in_threadpool
    except ImportError as err:  # pragma: no cover
        raise ImportError("the HTTP server needs the 'server' extra: pip install 'fhe-sklearn[server]'") from err

    if n_jobs is not None and n_jobs != -1 and n_jobs < 1:
        raise ValueError(f"n_jobs must be a positive int or -1, got {n_jobs}")
    deployment_dir, key_dir = Path(deployment_dir), Path(key_dir)
    key_dir.mkdir(parents=True, exist_ok=True)
    client_data = read_client_file(deployment_dir)
    model_server = FHEModelServer(deployment_dir).load()
    keys: dict[str, fhe.EvaluationKeys] = {}
    artifact = ServerBundle.from_deployment(deployment_dir)
    app = FastAPI(title="fhe_sklearn inference server", version=__version__)

    async def read_body(request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and not declared.isdigit():
            raise HTTPException(400, "malformed Content-Length header")
        if declared is not None and int(declared) > max_request_bytes:
            raise HTTPException(413, f"request of {declared} bytes exceeds the {max_request_bytes}-byte limit")
        body = await request.body()
        if len(body) > max_request_bytes:
            raise HTTPException(413, f"request exceeds the {max_request_bytes}-byte limit")
        if not body:
            raise HTTPException(400, "empty request body")
        return body

    def evaluation_keys(key_id: str) -> fhe.EvaluationKeys:
        if key_id not in keys:
            path = key_dir / f"{key_id}.evaluation_keys"
            if not KEY_ID.match(key_id) or not path.exists():
                raise HTTPException(404, f"unknown key id {key_id!r}: upload evaluation keys to /keys first")
            keys[key_id] = FHEModelServer.load_evaluation_keys(path.read_bytes())
        return keys[key_id]

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # logged by uvicorn; the client gets no traceback
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    @app.get("/info")
    def info() -> dict:
        return {
            "library_version": __version__,
            "format_version": FORMAT_VERSION,
            "model": client_data["model"]["class"],
            "input_shape": client_data["input_shape"],
            "max_request_bytes": max_request_bytes,
            "batch_format": BATCH_MAGIC.decode("ascii"),
        }

    @app.get("/client.json")
    def client_file() -> Response:
        return Response((deployment_dir / CLIENT_FILE).read_bytes(), media_type="application/json")

    @app.post("/keys")
    async def upload_keys(request: Request) -> dict:
        body = await read_body(request)
        try:
            loaded = await run_in_threadpool(FHEModelServer.load_evaluation_keys, body)
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        key_id = uuid.uuid4().hex
        (key_dir / f"{key_id}.evaluation_keys").write_bytes(body)
        keys[key_id] = loaded
        return {"key_id": key_id}

    @app.post("/predict/{key_id}")
    async def predict(key_id: str, request: Request) -> Response:
        body = await read_body(request)
        try:
            evaluation = await run_in_threadpool(evaluation_keys, key_id)
            result = await run_in_threadpool(model_server.run, body, evaluation)
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        return Response(result, media_type=OCTETS)

    @app.post("/predict_batch/{key_id}")
    async def predict_batch(key_id: str, request: Request) -> Response:
        body = await read_body(request)
        path = key_dir / f"{key_id}.evaluation_keys"
        if not KEY_ID.match(key_id) or not path.exists():
            raise HTTPException(404, f"unknown key id {key_id!r}: upload evaluation keys to /keys first")
        try:
            ciphertexts = unpack(body, BATCH_MAGIC)
            backend = "processes" if dask_scheduler is None else "dask"
            results = await run_in_threadpool(
                run_many, artifact, ciphertexts, str(path), key_id=key_id, backend=backend,
                scheduler=dask_scheduler, n_jobs=n_jobs, progress=False,
            )  # fmt: skip
        except ValueError as err:
            raise HTTPException(400, str(err)) from None
        return Response(pack(results, BATCH_MAGIC), media_type=OCTETS)

    return app


def serve(
    deployment_dir: str,
    host: str,
    port: int,
    key_dir: str,
    max_request_mb: float,
    dask_scheduler: str | None = None,
    n_jobs: int | None = None,
) -> None:
    import uvicorn

    app = create_app(deployment_dir, key_dir, int(max_request_mb * 2**20), dask_scheduler, n_jobs)
    uvicorn.run(app, host=host, port=port, log_level="info")

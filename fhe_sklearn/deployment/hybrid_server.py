"""The HTTP server of a hybrid deployment: ``fhe-sklearn serve DIR/server``.

Each module of the manifest is served by the ordinary prediction application
(:func:`.server.create_app`: the same authentication, body limits, worker pool, batches and
Dask back-end) under ``/modules/<module dir>/``, with its own key store in
``key_dir/<module dir>``. The top level answers ``GET /health``, ``GET /info`` and ``GET
/hybrid.json`` (the manifest a client checks before sending anything).
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from .._version import __version__
from .hybrid import HYBRID_FILE, read_manifest
from .server import ServerSettings, create_app

PREFIX = "/modules/"


class HybridRouter:
    """ASGI app: ``/modules/<dir>/<rest>`` to that module's application (as ``/<rest>``),
    everything else (and the lifespan) to the top-level application."""

    def __init__(self, top: Any, modules: dict[str, Any]) -> None:
        self.top = top
        self.modules = modules

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith(PREFIX):
            directory, _, rest = scope["path"][len(PREFIX) :].partition("/")
            app = self.modules.get(directory)
            if app is not None:
                path = "/" + rest
                await app(dict(scope, path=path, raw_path=path.encode()), receive, send)
                return
        await self.top(scope, receive, send)


def create_hybrid_app(deployment_dir: str | Path, key_dir: str | Path, settings: ServerSettings | None = None) -> Any:
    """The ASGI application serving every module of the hybrid deployment in ``deployment_dir``."""
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse, Response

    settings = settings or ServerSettings()
    deployment_dir = Path(deployment_dir)
    manifest = read_manifest(deployment_dir)
    modules = {
        entry["dir"]: create_app(deployment_dir / entry["dir"], Path(key_dir) / entry["dir"], settings)
        for entry in manifest["modules"]
    }
    pools = [app.state.worker_pool for app in modules.values()]

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        started = []
        try:
            for pool in pools:
                await pool.start()
                started.append(pool)
            yield
        finally:
            for pool in started:
                await pool.close()

    top = FastAPI(
        title="fhe_sklearn hybrid model server",
        version=__version__,
        lifespan=lifespan,
        redirect_slashes=False,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    raw_manifest = (deployment_dir / HYBRID_FILE).read_bytes()

    @top.get("/health")
    def health() -> Any:
        alive = all(pool.alive for pool in pools)
        content = {"status": "ok" if alive else "unavailable", "modules": len(pools)}
        return JSONResponse(content, status_code=200 if alive else 503)

    @top.get("/info")
    def info() -> dict:
        return {
            "library_version": __version__,
            "model": "HybridFHEModel",
            "model_name": manifest["model_name"],
            "modules": [{"name": e["name"], "path": f"{PREFIX}{e['dir']}"} for e in manifest["modules"]],
        }

    @top.get(f"/{HYBRID_FILE}")
    def hybrid_file() -> Response:
        return Response(raw_manifest, media_type="application/json")

    router = HybridRouter(top, modules)
    router.state = top.state  # type: ignore[attr-defined]
    top.state.module_apps = modules
    return router


__all__ = ["HybridRouter", "create_hybrid_app"]

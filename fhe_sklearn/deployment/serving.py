"""``fhe-sklearn serve``: the uvicorn process of a deployment directory, which picks the app
(one model, or a HybridFHEModel's server copy with one app per module)."""

from __future__ import annotations

from .hybrid import is_hybrid_deployment
from .hybrid_server import create_hybrid_app
from .server import ServerSettings, configure_logging, create_app


def serve(deployment_dir: str, host: str, port: int, key_dir: str, settings: ServerSettings) -> None:
    """Run the server with uvicorn (no access log: the structured request log replaces it)."""
    import uvicorn

    configure_logging()
    if is_hybrid_deployment(deployment_dir):  # a HybridFHEModel's server copy: one app per module
        app = create_hybrid_app(deployment_dir, key_dir, settings)
    else:
        app = create_app(deployment_dir, key_dir, settings)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, server_header=False)

"""Deprecated location of the deployment classes, kept for existing imports: use
:mod:`fhe_sklearn.deployment`."""

from .artifacts import CLIENT_FILE, SERVER_FILE, read_client_file
from .client import FHEModelClient
from .dev import FHEModelDev
from .model_server import FHEModelServer

__all__ = ["CLIENT_FILE", "SERVER_FILE", "FHEModelClient", "FHEModelDev", "FHEModelServer", "read_client_file"]

"""Client/server deployment of compiled models."""

from .fhe_model import FHEModelClient, FHEModelDev, FHEModelServer
from .http_client import HTTPClient

__all__ = ["FHEModelClient", "FHEModelDev", "FHEModelServer", "HTTPClient"]

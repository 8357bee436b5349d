"""Client/server deployment of compiled models."""

from .fhe_model import FHEModelClient, FHEModelDev, FHEModelServer

__all__ = ["FHEModelClient", "FHEModelDev", "FHEModelServer"]

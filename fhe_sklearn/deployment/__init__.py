"""Client/server deployment of compiled models.

- :class:`FHEModelDev` (model owner) saves ``server.zip`` and ``client.json``;
- :class:`FHEModelClient` holds the keys, quantizes and encrypts, decrypts and post-processes;
- :class:`FHEModelServer` runs the circuit on ciphertexts with the client's evaluation keys;
- :class:`FHETrainingClient` / :class:`FHETrainingServer` / :class:`HTTPTrainingClient` train
  on encrypted data (``save(mode="training")``);
- :class:`ClientSpec` is what the client file holds; :class:`HTTPClient` talks to
  ``fhe_sklearn serve``.

Importing this package (and serving with :class:`FHEModelServer`) loads neither torch,
skorch nor xgboost; :class:`FHEModelClient` imports ``concrete.fhe`` when created.
"""

from .artifacts import FORMAT_VERSION, read_client_file
from .client import FHEModelClient
from .client_spec import ClientModule, ClientSpec
from .dev import FHEModelDev
from .http_client import HTTPClient
from .key_cache import EvaluationKeyCache
from .model_server import FHEModelServer
from .training import FHETrainingClient, FHETrainingServer, HTTPTrainingClient

__all__ = [
    "FORMAT_VERSION",
    "ClientModule",
    "ClientSpec",
    "EvaluationKeyCache",
    "FHEModelClient",
    "FHEModelDev",
    "FHEModelServer",
    "FHETrainingClient",
    "FHETrainingServer",
    "HTTPClient",
    "HTTPTrainingClient",
    "read_client_file",
]

"""Deployments of hybrid models (:class:`fhe_sklearn.torch.HybridFHEModel`).

A hybrid deployment directory holds two copies:

- ``server/``: ``hybrid.json`` (the manifest: model name, each module's name, directory and
  fingerprint) and one ordinary deployment per module (``module_<i>/server.zip`` with the
  module's weights in its circuit, ``module_<i>/client.json``); what ``fhe-sklearn serve``
  serves (:mod:`.hybrid_server`). No secret key.
- ``client/``: the same manifest and each module's ``client.json`` (quantizers and concrete's
  client specs, no weight); the torch side adds the clear part of the network's weights.

A client (:func:`connect_hybrid`) checks that the server's manifest matches its own before
it sends anything, uploads each module's evaluation keys once and reuses them; a module's
input only ever leaves the client encrypted.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._version import __version__
from .artifacts import CLIENT_FILE, read_client_file
from .dev import FHEModelDev

HYBRID_FILE = "hybrid.json"
HYBRID_FORMAT = "fhe_sklearn.hybrid"
HYBRID_FORMAT_VERSION = 1
#: a module's directory (and URL segment) name
MODULE_DIR = re.compile(r"module_[0-9]{1,4}")
MAX_MANIFEST_BYTES = 2**20


def save_hybrid_deployment(path: Path, model_name: str, modules: dict[str, Any]) -> Path:
    """Write ``path/server`` and ``path/client`` for the compiled ``modules`` (name →
    QuantizedModule), in order."""
    path = Path(path)
    server_dir, client_dir = path / "server", path / "client"
    for directory in (server_dir, client_dir):
        if directory.exists() and any(directory.iterdir()):
            raise FileExistsError(f"hybrid deployment directory {directory} is not empty")
    entries = []
    for index, (name, module) in enumerate(modules.items()):
        directory = f"module_{index}"
        FHEModelDev(server_dir / directory, module).save()
        (client_dir / directory).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(server_dir / directory / CLIENT_FILE, client_dir / directory / CLIENT_FILE)
        fingerprint = read_client_file(server_dir / directory)["fingerprint"]
        entries.append({"name": name, "dir": directory, "fingerprint": fingerprint})
    manifest = {
        "format": HYBRID_FORMAT,
        "format_version": HYBRID_FORMAT_VERSION,
        "library_version": __version__,
        "model_name": model_name,
        "modules": entries,
    }
    for directory in (server_dir, client_dir):
        (directory / HYBRID_FILE).write_text(json.dumps(manifest, indent=1))
    return path


def is_hybrid_deployment(path: str | Path) -> bool:
    """Whether ``path`` is the server (or client) copy of a hybrid deployment."""
    return (Path(path) / HYBRID_FILE).is_file()


def check_manifest(data: Any, where: str) -> dict:
    """``data`` as a hybrid manifest, or a ValueError naming what is wrong."""
    if not isinstance(data, dict) or data.get("format") != HYBRID_FORMAT:
        raise ValueError(f"{where} is not a hybrid model manifest")
    if data.get("format_version") != HYBRID_FORMAT_VERSION:
        raise ValueError(
            f"{where}: hybrid format version {data.get('format_version')!r}, this fhe_sklearn reads "
            f"{HYBRID_FORMAT_VERSION}: save the model again"
        )
    modules = data.get("modules")
    if not isinstance(data.get("model_name"), str) or not isinstance(modules, list) or not modules:
        raise ValueError(f"{where}: a manifest needs a model_name and a non-empty list of modules")
    seen: set[str] = set()
    for entry in modules:
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("name"), str)
            and isinstance(entry.get("dir"), str)
            and MODULE_DIR.fullmatch(entry["dir"])
            and isinstance(entry.get("fingerprint"), str)
            and entry["dir"] not in seen
        ):
            raise ValueError(f"{where}: malformed module entry {str(entry)[:200]}")
        seen.add(entry["dir"])
    return data


def read_manifest(path: str | Path) -> dict:
    """The checked ``hybrid.json`` of a server or client copy; each module's ``client.json``
    must carry the fingerprint the manifest names."""
    path = Path(path)
    file = path / HYBRID_FILE
    try:
        raw = file.read_bytes()[: MAX_MANIFEST_BYTES + 1]
        if len(raw) > MAX_MANIFEST_BYTES:
            raise ValueError("too large")
        data = json.loads(raw)
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read the hybrid manifest {file}: {err}") from None
    data = check_manifest(data, str(file))
    for entry in data["modules"]:
        fingerprint = read_client_file(path / entry["dir"])["fingerprint"]
        if fingerprint != entry["fingerprint"]:
            where = path / entry["dir"]
            raise ValueError(f"{where}: its client.json is not the one {file} names (module {entry['name']!r})")
    return data


@contextlib.contextmanager
def _network(url: str, what: str, timeout: float) -> Iterator[None]:
    """httpx's transport errors as clear ones (no fallback: nothing is sent in the clear)."""
    import httpx

    try:
        yield
    except httpx.TimeoutException:
        raise TimeoutError(
            f"{what}: the server at {url} did not answer within {timeout} s (nothing was computed in the clear)"
        ) from None
    except httpx.TransportError as err:
        raise ConnectionError(f"{what}: cannot reach the server at {url}: {err}") from None


class RemoteModuleClient:
    """One hybrid module run by the server: encrypt rows, post them, decrypt the results.

    Parameters
    ----------
    url : str
        The hybrid server's URL.
    entry : dict
        The module's manifest entry (name, directory, fingerprint) from the client copy.
    work_dir : Path
        Where this module's downloaded client file and keys are kept.
    api_key : str, optional
        The server's API key for key uploads.
    timeout : float
        Seconds per request.
    """

    def __init__(self, url: str, entry: dict, work_dir: Path, api_key: str | None, timeout: float) -> None:
        from .http_client import HTTPClient

        self.name, self.url, self.timeout = entry["name"], url.rstrip("/"), timeout
        module_url = f"{self.url}/modules/{entry['dir']}"
        with _network(self.url, f"module {self.name!r}", timeout):
            self.http = HTTPClient(module_url, work_dir, key_dir=work_dir / "keys", timeout=timeout, api_key=api_key)
        served = read_client_file(work_dir)["fingerprint"]
        if served != entry["fingerprint"]:
            raise ValueError(
                f"module {self.name!r}: the server at {url} serves another circuit (fingerprint {served[:12]}…, "
                f"the client copy's {entry['fingerprint'][:12]}…)"
            )
        with _network(self.url, f"module {self.name!r}", timeout):
            self.http.upload_keys()  # once; HTTPClient uploads again only if the server evicted them
        #: bytes of the last call: ciphertexts sent, results received
        self.last_call_bytes: dict[str, int] = {}

    @property
    def evaluation_key_bytes(self) -> int:
        """Size of the evaluation keys this client uploaded."""
        return len(self.http.fhe.get_serialized_evaluation_keys())

    def run(self, rows: np.ndarray) -> np.ndarray:
        """The module's de-quantized outputs for float ``rows``, computed by the server on
        their encryptions."""
        client = self.http.fhe
        encrypted = client.quantize_encrypt_serialize(rows)
        results: list[bytes] = []
        with _network(self.url, f"module {self.name!r}", self.timeout):
            for chunk in self.http._batches(encrypted):
                results += self.http.run_encrypted_batch(chunk)
        self.last_call_bytes = {"sent": sum(map(len, encrypted)), "received": sum(map(len, results))}
        return client.deserialize_decrypt_dequantize(results)


def connect_hybrid(
    url: str,
    client_dir: Path,
    model_name: str,
    module_names: list[str],
    key_dir: Path,
    api_key: str | None = None,
    timeout: float = 60.0,
) -> dict[str, RemoteModuleClient]:
    """A :class:`RemoteModuleClient` per module, once the server's manifest matches the
    client copy's (model name, modules, fingerprints)."""
    import httpx

    local = read_manifest(client_dir)
    if local["model_name"] != model_name:
        raise ValueError(f"{client_dir} is the client copy of model {local['model_name']!r}, not {model_name!r}")
    names = [entry["name"] for entry in local["modules"]]
    if sorted(names) != sorted(module_names):
        raise ValueError(f"{client_dir} holds the modules {names}, this hybrid model names {module_names}")
    url = url.rstrip("/")
    with _network(url, "hybrid manifest", timeout):
        response = httpx.get(f"{url}/{HYBRID_FILE}", timeout=timeout)
    if response.status_code != 200:
        status = response.status_code
        raise ValueError(f"the server at {url} does not serve a hybrid model (GET /{HYBRID_FILE}: {status})")
    try:
        served = check_manifest(response.json(), f"{url}/{HYBRID_FILE}")
    except ValueError as err:
        raise ValueError(f"the server at {url} answered with an invalid manifest: {err}") from None
    if served["model_name"] != model_name:
        raise ValueError(f"the server at {url} serves model {served['model_name']!r}, not {model_name!r}")
    served_modules = {(e["name"], e["dir"], e["fingerprint"]) for e in served["modules"]}
    for entry in local["modules"]:
        if (entry["name"], entry["dir"], entry["fingerprint"]) not in served_modules:
            raise ValueError(
                f"the server at {url} serves another version of model {model_name!r}: module {entry['name']!r} "
                "differs from the client copy (save and deploy both copies together)"
            )
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    return {
        entry["name"]: RemoteModuleClient(url, entry, key_dir / entry["dir"], api_key, timeout)
        for entry in local["modules"]
    }


__all__ = [
    "HYBRID_FILE",
    "RemoteModuleClient",
    "connect_hybrid",
    "is_hybrid_deployment",
    "read_manifest",
    "save_hybrid_deployment",
]

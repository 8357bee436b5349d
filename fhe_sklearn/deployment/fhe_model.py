"""Deploy a compiled model: the developer saves it, the client quantizes + encrypts and
decrypts + de-quantizes, the server computes on ciphertexts with evaluation keys only.

A deployment directory holds ``server.zip`` (concrete's compiled server) and ``client.json``
(concrete's client specs plus the model's client view: quantizers and post-processing, not its
weights). Neither holds a key.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
from concrete import fhe
from sklearn.utils.validation import check_is_fitted

from .._version import __version__
from ..serialization import FORMAT_VERSION, model_from_dict, model_to_dict

CLIENT_FILE = "client.json"
SERVER_FILE = "server.zip"
CLIENT_FORMAT = "fhe_sklearn.client"
#: fitted attributes the client needs to quantize inputs and post-process outputs
CLIENT_ATTRIBUTES = (
    "classes_",
    "n_features_in_",
    "feature_names_in_",
    "single_target_",
    "link_",
    "n_averaged_",
    "base_margin_",
    "output_bias_",
    "y_mean_",
    "y_scale_",
)


def client_model(model: Any) -> Any:
    """A copy of ``model`` carrying only what a client may know."""
    view = type(model)(**model.get_params(deep=False))
    for name in CLIENT_ATTRIBUTES:
        if hasattr(model, name):
            setattr(view, name, getattr(model, name))
    view.quantized_module_ = model.quantized_module_.client_view()
    return view


class FHEModelDev:
    """Save a fitted, compiled ``model`` into the deployment directory ``path``."""

    def __init__(self, path: str | Path, model: Any) -> None:
        self.path = Path(path)
        self.model = model

    def save(self) -> Path:
        check_is_fitted(self.model, "quantized_module_")
        circuit = self.model.fhe_circuit
        if circuit is None:
            raise RuntimeError("the model must be compiled before deployment: call model.compile(X)")
        if self.path.exists() and any(self.path.iterdir()):
            raise FileExistsError(f"deployment directory {self.path} is not empty")
        self.path.mkdir(parents=True, exist_ok=True)
        circuit.server.save(self.path / SERVER_FILE)
        client = {
            "format": CLIENT_FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "client_specs": base64.b64encode(circuit.client.specs.serialize()).decode("ascii"),
            "input_shape": [1, int(self.model.n_features_in_)],
            "model": model_to_dict(client_model(self.model)),
        }
        (self.path / CLIENT_FILE).write_text(json.dumps(client))
        return self.path


def read_client_file(path: str | Path) -> dict:
    """``client.json`` of a deployment directory, checked for format and versions."""
    file = Path(path) / CLIENT_FILE if Path(path).is_dir() else Path(path)
    try:
        data = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the client file {file}: {err}") from err
    if not isinstance(data, dict) or data.get("format") != CLIENT_FORMAT:
        raise ValueError(f"{file} is not a fhe_sklearn client file")
    if data.get("format_version") != FORMAT_VERSION or data.get("library_version") != __version__:
        raise ValueError(
            f"{file} was written by fhe_sklearn {data.get('library_version')!r} (format "
            f"{data.get('format_version')!r}); this is {__version__} (format {FORMAT_VERSION})"
        )
    return data


class FHEModelClient:
    """Client side: keys, quantize + encrypt, decrypt + de-quantize + post-process.

    Parameters
    ----------
    path : str or Path
        Deployment directory (or the path of its ``client.json``).
    key_dir : str or Path, optional
        Where concrete keeps the private and evaluation keys between sessions.
    """

    def __init__(self, path: str | Path, key_dir: str | Path | None = None) -> None:
        data = read_client_file(path)
        self.model = model_from_dict(data["model"])
        specs = fhe.ClientSpecs.deserialize(base64.b64decode(data["client_specs"]))
        self.client = fhe.Client(specs, keyset_cache_directory=key_dir)

    def generate_private_and_evaluation_keys(self, force: bool = False) -> None:
        self.client.keygen(force=force)

    def get_serialized_evaluation_keys(self) -> bytes:
        """The public evaluation keys, to upload to the server once per key pair."""
        return self.client.evaluation_keys.serialize()

    def quantize_encrypt_serialize(self, X: Any) -> list[bytes]:
        """One ciphertext per row of ``X``."""
        x_q = self.model.quantize_input(X)
        return [self.client.encrypt(row[None, :]).serialize() for row in x_q]

    def deserialize_decrypt(self, results: list[bytes]) -> np.ndarray:
        """Integer outputs of the circuit, one row per result."""
        rows = []
        for result in results:
            try:
                value = fhe.Value.deserialize(result)
            except RuntimeError as err:
                raise ValueError(f"malformed encrypted result: {err}") from err
            rows.append(np.asarray(self.client.decrypt(value)).reshape(1, -1))
        return np.concatenate(rows).astype(np.int64)

    def deserialize_decrypt_dequantize(self, results: list[bytes]) -> np.ndarray:
        """What ``model.predict_proba`` (classifiers) or ``model.predict`` (regressors) return."""
        y = self.model.dequantize_output(self.deserialize_decrypt(results))
        return self.model.output_from_dequantized(y)

    def deserialize_decrypt_predict(self, results: list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """What ``model.predict`` returns, and for classifiers ``predict_proba``'s result
        (decision scores for models without probabilities); None for regressors."""
        y = self.model.dequantize_output(self.deserialize_decrypt(results))
        if not hasattr(self.model, "classes_"):
            return self.model.output_from_dequantized(y), None
        return self.model.classes_[self.model._class_indices(y)], self.model.output_from_dequantized(y)


class FHEModelServer:
    """Server side: runs the compiled model on ciphertexts with the client's evaluation keys."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.server: fhe.Server | None = None

    def load(self) -> FHEModelServer:
        read_client_file(self.path)  # same version checks as the client
        self.server = fhe.Server.load(self.path / SERVER_FILE)
        return self

    @staticmethod
    def load_evaluation_keys(serialized: bytes) -> fhe.EvaluationKeys:
        try:
            return fhe.EvaluationKeys.deserialize(serialized)
        except RuntimeError as err:
            raise ValueError(f"malformed evaluation keys: {err}") from err

    def run(self, serialized_encrypted_input: bytes, serialized_evaluation_keys: bytes | fhe.EvaluationKeys) -> bytes:
        """One encrypted row in, its encrypted result out (both serialized)."""
        if self.server is None:
            raise RuntimeError("call load() first")
        keys = serialized_evaluation_keys
        if isinstance(keys, (bytes, bytearray)):
            keys = self.load_evaluation_keys(bytes(keys))
        try:
            value = fhe.Value.deserialize(serialized_encrypted_input)
        except RuntimeError as err:
            raise ValueError(f"malformed ciphertext: {err}") from err
        try:
            return self.server.run(value, evaluation_keys=keys).serialize()
        except RuntimeError as err:
            raise ValueError(f"the ciphertext does not fit this model: {err}") from err

"""The model owner's side of a deployment: save a compiled model for a client and a server."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .artifacts import (
    CLIENT_FILE,
    CONCRETE_MEMBERS,
    SERVER_FILE,
    ServerArtifact,
    client_digest,
    client_record,
    plain_configuration,
    server_digest,
    server_manifest,
)
from .client_spec import ClientSpec
from .paths import deployment_path

#: Concrete ML's save modes: a prediction circuit, or an encrypted-training step
#: (:mod:`fhe_sklearn.deployment.training`)
MODES = ("inference", "training")


class FHEModelDev:
    """Save a fitted, compiled model into a deployment directory.

    The directory gets ``server.zip`` (concrete's portable MLIR circuit and its plain-JSON
    configuration, for the server) and ``client.json`` (the :class:`ClientSpec` and concrete's
    client specs, for the client). Neither holds a key, nor the model's weights on the
    client's side. Both carry the deployment's fingerprint and versions record.

    Parameters
    ----------
    path : str or Path
        Directory to create (or an empty one).
    model : fhe_sklearn estimator or QuantizedModule
        Fitted and compiled (``model.compile(X)``).
    path_dir : str or Path, optional
        Concrete ML's name for ``path``.
    """

    def __init__(
        self, path: str | Path | None = None, model: Any = None, *, path_dir: str | Path | None = None
    ) -> None:
        self.path = deployment_path(path, path_dir)
        self.model = model

    def save(self, mode: str = "inference", via_mlir: bool = True, signing_key: Any = None) -> Path:
        """Write ``server.zip`` and ``client.json``.

        Parameters
        ----------
        mode : {"inference", "training"}
            ``"training"``: the encrypted SGD step of a model fitted with ``fit_encrypted=True``
            (see :class:`~fhe_sklearn.deployment.training.FHETrainingClient`).
        via_mlir : bool
            Must be True: the server is saved as MLIR, compiled on the server's machine when
            loaded, never as a native library (which a loader would execute as-is).
        signing_key : bytes or str, optional
            Sign the deployment (HMAC-SHA256 of its fingerprint, at least 16 bytes); clients
            and servers given the same key as ``verify_key`` refuse anything else.

        Returns
        -------
        path : Path
            The deployment directory.

        Raises
        ------
        RuntimeError
            If the model is not compiled.
        FileExistsError
            If the directory is not empty.
        ValueError
            On an unknown mode, ``via_mlir=False``, or a model that cannot be deployed.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if via_mlir is not True:
            raise ValueError("via_mlir must be True: fhe_sklearn saves servers in concrete's portable MLIR form only")
        if self.model is None:
            raise TypeError("FHEModelDev needs a model")
        if mode == "training":
            from .training import training_spec

            spec_json, circuit = training_spec(self.model)
            return self._write(spec_json, circuit.module.server, circuit.configuration, signing_key)
        spec = ClientSpec.from_model(self.model)  # checks the model is fitted and deployable
        circuit = getattr(self.model, "fhe_circuit", None)
        if circuit is None:
            raise RuntimeError("the model must be compiled before deployment: call model.compile(X)")
        return self._write(spec.to_json(), circuit.server, circuit.configuration, signing_key)

    def _write(self, spec: dict, server: Any, configuration: Any, signing_key: Any) -> Path:
        if self.path.exists() and any(self.path.iterdir()):
            raise FileExistsError(f"deployment directory {self.path} is not empty")
        members = _portable_members(server, configuration)
        client = client_record(spec, members["client.specs.json"], server_digest(members), signing_key)
        manifest = server_manifest(members, client_digest(client["spec"], client["client_specs"]), signing_key)
        assert manifest["fingerprint"] == client["fingerprint"]
        self.path.mkdir(parents=True, exist_ok=True)
        ServerArtifact(members, manifest).write(self.path / SERVER_FILE)
        (self.path / CLIENT_FILE).write_text(json.dumps(client))
        return self.path


def _portable_members(server: Any, configuration: Any) -> dict[str, bytes]:
    """concrete's ``Server.save(via_mlir=True)`` members, with configuration.json rewritten
    as plain JSON (concrete writes it with jsonpickle)."""
    with tempfile.TemporaryDirectory(prefix="fhe_sklearn_save_") as tmp:
        archive = Path(tmp) / "server.zip"
        server.save(archive, via_mlir=True)
        with zipfile.ZipFile(archive) as z:
            members = {name: z.read(name) for name in z.namelist()}
    if set(members) != set(CONCRETE_MEMBERS):
        raise ValueError(f"unexpected concrete server archive members {sorted(members)}")
    members["configuration.json"] = json.dumps(plain_configuration(configuration), sort_keys=True).encode()
    return members

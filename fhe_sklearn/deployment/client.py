"""The client side of a deployment: keys, quantize + encrypt, decrypt + de-quantize."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import SERVER_FILE, ServerArtifact, client_specs_bytes, read_client_file
from .client_spec import ClientSpec
from .paths import deployment_path
from .signing import check_key
from .wire import BATCH_MAGIC, TUPLE_MAGIC, is_packed, pack, unpack


def restrict_permissions(directory: Path) -> None:
    """Make a key directory private: it and concrete's keyset directories in it (named by a
    number) 0700, their files (secret keys among them) 0600. Nothing else is touched."""
    directory.chmod(0o700)
    for keyset in directory.iterdir():
        if keyset.is_dir() and not keyset.is_symlink() and keyset.name.isdigit():
            keyset.chmod(0o700)
            for file in keyset.iterdir():
                if file.is_file() and not file.is_symlink():
                    file.chmod(0o600)


class FHEModelClient:
    """Client side: keys, quantize + encrypt, decrypt + de-quantize + post-process.

    The client model is rebuilt from the deployment's :class:`ClientSpec` only: quantizers
    and post-processing state, no weights.

    Parameters
    ----------
    path : str or Path
        Deployment directory (or the path of its ``client.json``). A ``server.zip`` beside
        it must come from the same deployment.
    key_dir : str or Path, optional
        Where concrete keeps the private and evaluation keys between sessions (created with
        permissions 0700, key files 0600). Without it, keys live in memory only.
    path_dir : str or Path, optional
        Concrete ML's name for ``path``.
    verify_key : bytes or str, optional
        Refuse a deployment not signed with this key (see ``FHEModelDev.save``).

    Attributes
    ----------
    model : estimator or ClientModule
        The client-only model; ``spec`` its :class:`ClientSpec`.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        key_dir: str | Path | None = None,
        *,
        path_dir: str | Path | None = None,
        verify_key: Any = None,
    ) -> None:
        self.path = deployment_path(path, path_dir)
        self.key_dir = None if key_dir is None else Path(key_dir)
        self.verify_key = verify_key if verify_key is None else check_key(verify_key)
        self.load()

    def load(self) -> FHEModelClient:
        """(Re-)read ``client.json`` and set up concrete's client (done by the constructor).

        Returns
        -------
        self : FHEModelClient

        Raises
        ------
        ValueError
            If ``client.json`` is malformed, modified, of another format version, unsigned or
            badly signed (with ``verify_key``), or a ``server.zip`` beside it comes from
            another deployment.
        """
        from concrete import fhe

        data = read_client_file(self.path, self.verify_key)
        client_file = self.path / "client.json" if self.path.is_dir() else self.path
        server_zip = client_file.parent / SERVER_FILE
        if server_zip.exists():
            ServerArtifact.read(server_zip, self.verify_key).check_matches(data)
        if isinstance(data["spec"], dict) and "training" in data["spec"]:
            raise ValueError(
                f"{client_file} is an encrypted-training deployment: use fhe_sklearn.deployment.FHETrainingClient"
            )
        self.spec = ClientSpec.from_json(data["spec"])
        self.model = self.spec.build_model()
        try:
            specs = fhe.ClientSpecs.deserialize(client_specs_bytes(data))
        except (RuntimeError, ValueError, TypeError, KeyError):
            raise ValueError(f"{client_file}: malformed concrete client specs") from None
        if self.key_dir is not None:
            self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            restrict_permissions(self.key_dir)
        self.client = fhe.Client(specs, keyset_cache_directory=self.key_dir)
        return self

    def generate_private_and_evaluation_keys(self, force: bool = False) -> None:
        """Generate the keys (or load them from ``key_dir``).

        Parameters
        ----------
        force : bool
            Generate new keys even if ``key_dir`` holds some.
        """
        self.client.keygen(force=force)
        if self.key_dir is not None:
            restrict_permissions(self.key_dir)

    def get_serialized_evaluation_keys(self) -> bytes:
        """The public evaluation keys, to upload to the server once per key pair.

        Returns
        -------
        keys : bytes
        """
        return self.client.evaluation_keys.serialize()

    # -- encrypt ---------------------------------------------------------------------------
    def _encrypt_rows(self, X: tuple) -> list[bytes]:
        if not X:
            raise TypeError("nothing to encrypt: pass the rows (one array per model input)")
        x_q = self.model.quantize_input(*X)
        inputs = list(x_q) if isinstance(x_q, tuple) else [x_q]
        rows = []
        for i in range(len(inputs[0])):
            encrypted = self.client.encrypt(*(q[i : i + 1] for q in inputs))
            values = encrypted if isinstance(encrypted, tuple) else (encrypted,)
            serialized = [v.serialize() for v in values]
            rows.append(serialized[0] if len(serialized) == 1 else pack(serialized, TUPLE_MAGIC))
        return rows

    def quantize_encrypt_serialize(self, *X: Any) -> list[bytes]:
        """One serialized ciphertext per row of ``X``.

        Parameters
        ----------
        *X : array-like or DataFrame of shape (n_samples, n_features)
            The rows; one array per input for a bare module with several inputs (a row's
            ciphertexts are then framed into one bytes object).

        Returns
        -------
        ciphertexts : list of bytes
            Send each (or the list) to ``FHEModelServer.run``.
        """
        return self._encrypt_rows(X)

    def quantize_encrypt_serialize_batch(self, *X: Any) -> bytes:
        """All rows of ``X`` encrypted and serialized as one bytes object.

        The circuit runs one row at a time; the batch is the rows' ciphertexts framed
        together (see :mod:`fhe_sklearn.deployment.wire`), so one message carries them and
        ``FHEModelServer.run`` answers with one message carrying the results.

        Returns
        -------
        batch : bytes
        """
        return pack(self._encrypt_rows(X), BATCH_MAGIC)

    # -- decrypt ---------------------------------------------------------------------------
    def deserialize_decrypt(self, results: bytes | list[bytes]) -> Any:
        """Integer outputs of the circuit, one row per result.

        Parameters
        ----------
        results : bytes or list of bytes
            What ``FHEModelServer.run`` returned: one result, a list, or a batch.

        Returns
        -------
        y_q : ndarray of shape (n_results, n_outputs), or a tuple of them for a circuit
            with several outputs.
        """
        from concrete import fhe

        if isinstance(results, (bytes, bytearray)):
            results = unpack(bytes(results), BATCH_MAGIC) if is_packed(results, BATCH_MAGIC) else [results]
        if not isinstance(results, (list, tuple)):
            raise TypeError(f"results must be bytes or a list of bytes, got {type(results).__name__}")
        n_outputs = len(self.spec.outputs)
        columns: list[list[np.ndarray]] = [[] for _ in range(n_outputs)]
        for index, result in enumerate(results):
            if not isinstance(result, (bytes, bytearray)):
                raise TypeError(f"each result must be bytes, got {type(result).__name__} (result {index})")
            parts = unpack(bytes(result), TUPLE_MAGIC, "result") if is_packed(result, TUPLE_MAGIC) else [result]
            if len(parts) != n_outputs:
                raise ValueError(f"result {index} holds {len(parts)} value(s), the model has {n_outputs} output(s)")
            try:
                values = [fhe.Value.deserialize(bytes(p)) for p in parts]
                clear = self.client.decrypt(*values)
            except (RuntimeError, ValueError, TypeError):
                raise ValueError(f"malformed encrypted result (result {index}, {len(result)} bytes)") from None
            clear = clear if isinstance(clear, tuple) else (clear,)
            for column, value in zip(columns, clear):
                value = np.asarray(value)
                column.append(value if value.ndim >= 2 else value.reshape(1, -1))
        if not results:
            raise ValueError("no result to decrypt")
        out = [np.concatenate(column).astype(np.int64) for column in columns]
        return out[0] if n_outputs == 1 else tuple(out)

    def _dequantized(self, results: bytes | list[bytes]) -> Any:
        y_q = self.deserialize_decrypt(results)
        return self.model.dequantize_output(*(y_q if isinstance(y_q, tuple) else [y_q]))

    def deserialize_decrypt_dequantize(self, results: bytes | list[bytes]) -> np.ndarray:
        """What ``model.predict_proba`` (classifiers) or ``model.predict`` (regressors)
        return; the de-quantized outputs for a bare ``QuantizedModule``.

        Parameters
        ----------
        results : bytes or list of bytes
            What ``FHEModelServer.run`` returned: one result, a list, or a batch.

        Returns
        -------
        y : ndarray
        """
        y = self._dequantized(results)
        return self.model.output_from_dequantized(y)

    def deserialize_decrypt_predict(self, results: bytes | list[bytes]) -> tuple[np.ndarray, np.ndarray | None]:
        """What ``model.predict`` returns, and for classifiers ``predict_proba``'s result
        (decision scores for models without probabilities); None for regressors.

        Parameters
        ----------
        results : bytes or list of bytes
            What ``FHEModelServer.run`` returned: one result, a list, or a batch.

        Returns
        -------
        prediction : ndarray
        proba : ndarray or None
        """
        y = self._dequantized(results)
        if not hasattr(self.model, "labels_from_dequantized"):
            return self.model.output_from_dequantized(y), None
        return self.model.labels_from_dequantized(y), self.model.output_from_dequantized(y)

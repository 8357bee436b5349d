"""Python client of the HTTP server: download the client file, upload evaluation keys,
send encrypted rows, decrypt the answers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .fhe_model import CLIENT_FILE, FHEModelClient
from .wire import BATCH_MAGIC, pack, unpack


class HTTPClient:
    """Encrypted predictions from a remote ``fhe_sklearn serve`` server.

    Parameters
    ----------
    url : str
        e.g. ``"http://127.0.0.1:8000"``.
    work_dir : str or Path
        Where the client file and (unless ``key_dir``) the private keys are kept.
    """

    #: rows, and bytes of ciphertexts, per ``/predict_batch`` request at most
    batch_size = 256
    batch_bytes = 32 * 2**20

    def __init__(self, url: str, work_dir: str | Path, key_dir: str | Path | None = None, timeout: float = 600) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        response = self._check(self.http.get("/client.json"))
        (self.work_dir / CLIENT_FILE).write_bytes(response.content)
        self.fhe = FHEModelClient(self.work_dir, key_dir=key_dir or self.work_dir / "keys")
        self.key_id: str | None = None

    @staticmethod
    def _check(response: Any) -> Any:
        if response.status_code != 200:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text
            raise RuntimeError(f"server answered {response.status_code}: {detail}")
        return response

    def upload_keys(self) -> str:
        """Generate keys if needed and upload the evaluation keys; returns the key id."""
        self.fhe.generate_private_and_evaluation_keys()
        response = self._check(self.http.post("/keys", content=self.fhe.get_serialized_evaluation_keys()))
        self.key_id = response.json()["key_id"]
        return self.key_id

    def predict(self, X: Any) -> np.ndarray:
        """What ``predict_proba`` (classifiers) or ``predict`` (regressors) return, computed
        by the server on encrypted rows (one request per ``batch_size`` rows)."""
        encrypted = self.fhe.quantize_encrypt_serialize(X)
        if len(encrypted) == 1:
            return self.fhe.deserialize_decrypt_dequantize([self.run_encrypted(encrypted[0])])
        return self.fhe.deserialize_decrypt_dequantize(self.run_encrypted_batch(encrypted))

    def run_encrypted_batch(self, encrypted: list[bytes]) -> list[bytes]:
        """Many serialized ciphertexts in, the server's encrypted results out, in order
        (``POST /predict_batch``; at most ``batch_size`` rows and ``batch_bytes`` per request)."""
        if self.key_id is None:
            self.upload_keys()
        results: list[bytes] = []
        start = 0
        while start < len(encrypted):
            stop, size = start, 0
            while stop < len(encrypted) and stop - start < self.batch_size:
                size += len(encrypted[stop])
                if stop > start and size > self.batch_bytes:
                    break
                stop += 1
            body = pack(encrypted[start:stop], BATCH_MAGIC)
            response = self._check(self.http.post(f"/predict_batch/{self.key_id}", content=body))
            answers = unpack(response.content, BATCH_MAGIC)
            if len(answers) != stop - start:
                raise RuntimeError(f"the server returned {len(answers)} results for {stop - start} rows")
            results += answers
            start = stop
        return results

    def run_encrypted(self, encrypted: bytes) -> bytes:
        """One serialized ciphertext in, the server's encrypted result out."""
        if self.key_id is None:
            self.upload_keys()
        return self._check(self.http.post(f"/predict/{self.key_id}", content=encrypted)).content

"""Python client of the HTTP server: download the client file, upload evaluation keys,
send encrypted rows, decrypt the answers."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import wire
from .artifacts import CLIENT_FILE
from .client import FHEModelClient


class ServerError(RuntimeError):
    """The server refused a request; ``status_code`` is its HTTP status and ``retry_after``
    (503 only) the seconds it asked to wait."""

    def __init__(self, status_code: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.retry_after = retry_after


def _restore_python_sigpipe() -> None:
    """Ignore SIGPIPE again, as Python does at startup: once a circuit has run in this process,
    concrete's runtime turns SIGPIPE into a crash, and a server that refuses a body (413) closes
    the connection while the body is still being sent."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def _retry_after(response: Any) -> float | None:
    try:
        return float(response.headers.get("retry-after"))
    except (TypeError, ValueError):
        return None


class HTTPClient:
    """Encrypted predictions from a remote ``fhe_sklearn serve`` server.

    The client uploads its evaluation keys once and keeps the returned key id and secret token
    (``key_id``, ``token``) to authenticate every prediction. Its private keys never leave
    ``key_dir``.

    Parameters
    ----------
    url : str
        e.g. ``"https://fhe.example.org"``; plain ``http://`` only on a trusted network.
    work_dir : str or Path
        Where the client file and (unless ``key_dir``) the private keys are kept.
    key_dir : str or Path, optional
        Where the private keys are kept (default ``work_dir / "keys"``).
    timeout : float
        Seconds per HTTP request.
    api_key : str, optional
        The server's API key, if its key uploads need one (``serve --api-key-file``).
    max_retries : int
        How many times a 503 (server busy) is retried after the delay the server asks for
        (at most 60 s each).
    """

    #: the local client of the deployment (keys, encryption)
    _client_class: Any = FHEModelClient

    def __init__(
        self,
        url: str,
        work_dir: str | Path,
        key_dir: str | Path | None = None,
        timeout: float = 600,
        api_key: str | None = None,
        max_retries: int = 3,
    ) -> None:
        import httpx

        self.http = httpx.Client(base_url=url, timeout=timeout)
        self.api_key = api_key
        self.max_retries = max_retries
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        #: the server's ``/info``: versions and body limits
        self.server_info = self._request("GET", "/info").json()
        response = self._request("GET", "/client.json")
        (self.work_dir / CLIENT_FILE).write_bytes(response.content)
        self.fhe = self._client_class(self.work_dir, key_dir=key_dir or self.work_dir / "keys")
        self.key_id: str | None = None
        self.token: str | None = None

    def _request(self, method: str, path: str, credential: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {credential}"} if credential else None
        _restore_python_sigpipe()
        for attempt in range(self.max_retries + 1):
            response = self.http.request(method, path, headers=headers, **kwargs)
            wait = _retry_after(response)
            if response.status_code != 503 or attempt == self.max_retries or wait is None or wait > 60:
                return self._check(response, path)
            time.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _check(response: Any, path: str) -> Any:
        status = response.status_code
        if 200 <= status < 300:
            return response
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text[:500]
        if status == 401 and path == "/keys":
            message = "the server needs an API key to upload evaluation keys: pass api_key= (wrong or missing)"
        elif status == 401:
            message = "the server refused the key id or token (unknown, wrong, or the keys were evicted)"
        elif status == 413:
            message = f"request too large for the server: {detail}"
        elif status == 503:
            message = f"the server is busy: {detail}; retry after {response.headers.get('retry-after', '?')} s"
        else:
            message = f"server answered {status}: {detail}"
        raise ServerError(status, message, _retry_after(response))

    def _check_size(self, body: bytes, limit: str, what: str) -> None:
        # refused before sending: a server cuts an oversized body short, and the client may
        # then see a reset connection instead of the 413
        if limit in self.server_info and len(body) > self.server_info[limit]:
            message = f"{what} of {len(body)} bytes exceed the server's {self.server_info[limit]}-byte limit"
            raise ServerError(413, f"request too large for the server: {message}")

    def upload_keys(self) -> str:
        """Generate keys if needed and upload the evaluation keys; returns the key id (the
        token is kept in ``self.token``)."""
        self.fhe.generate_private_and_evaluation_keys()
        keys = self.fhe.get_serialized_evaluation_keys()
        self._check_size(keys, "max_keys_bytes", "evaluation keys")
        answer = self._request("POST", "/keys", self.api_key, content=keys).json()
        self.key_id, self.token = answer["key_id"], answer["token"]
        return self.key_id

    def predict(self, X: Any) -> np.ndarray:
        """What ``predict_proba`` (classifiers) or ``predict`` (regressors) return, computed
        by the server on encrypted rows: in ``POST /predict_batch`` requests within the
        server's limits (one ``/predict`` per row on a server without batches)."""
        encrypted = self.fhe.quantize_encrypt_serialize(X)
        if "max_batch_rows" not in self.server_info:
            return self.fhe.deserialize_decrypt_dequantize([self.run_encrypted(e) for e in encrypted])
        results: list[bytes] = []
        for chunk in self._batches(encrypted):
            results += self.run_encrypted_batch(chunk)
        return self.fhe.deserialize_decrypt_dequantize(results)

    def _batches(self, encrypted: list[bytes]) -> Any:
        """Consecutive rows, as many per request as the server's row and byte limits allow."""
        max_rows, max_bytes = self.server_info["max_batch_rows"], self.server_info["max_batch_bytes"]
        chunk: list[bytes] = []
        size = len(wire.BATCH_MAGIC) + 4
        for row in encrypted:
            if chunk and (len(chunk) == max_rows or size + 8 + len(row) > max_bytes):
                yield chunk
                chunk, size = [], len(wire.BATCH_MAGIC) + 4
            chunk.append(row)
            size += 8 + len(row)
        if chunk:
            yield chunk

    def run_encrypted_batch(self, encrypted: list[bytes]) -> list[bytes]:
        """Serialized ciphertexts in, the server's encrypted results out, in one request
        (keys uploaded first if needed, and again if the server evicted them)."""
        body = wire.pack(encrypted, wire.BATCH_MAGIC)
        self._check_size(body, "max_batch_bytes", "batch")
        results = wire.unpack(self._post_with_keys("/predict_batch", body), wire.BATCH_MAGIC, "result batch")
        if len(results) != len(encrypted):
            raise ServerError(502, f"the server answered {len(results)} results for {len(encrypted)} rows")
        return results

    def run_encrypted(self, encrypted: bytes) -> bytes:
        """One serialized ciphertext in, the server's encrypted result out.

        Uploads the evaluation keys first if needed, and once more if the server no longer
        accepts the key id (it evicts least recently used key sets).
        """
        self._check_size(encrypted, "max_request_bytes", "ciphertext")
        return self._post_with_keys("/predict", encrypted)

    def _post_with_keys(self, route: str, body: bytes) -> bytes:
        """``POST {route}/{key_id}`` with the token: the keys uploaded first if needed, and
        once more if the server no longer accepts the key id (it evicts least recently used
        key sets)."""
        if self.key_id is None:
            self.upload_keys()
        try:
            return self._request("POST", f"{route}/{self.key_id}", self.token, content=body).content
        except ServerError as err:
            if err.status_code != 401:
                raise
        self.upload_keys()
        return self._request("POST", f"{route}/{self.key_id}", self.token, content=body).content

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from fhe_sklearn import LogisticRegression
from fhe_sklearn.deployment import FHEModelDev, HTTPClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """``python -m fhe_sklearn serve`` as a subprocess on 127.0.0.1."""

    def __init__(self, deployment: Path, key_dir: Path, *options: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [sys.executable, "-m", "fhe_sklearn", "serve", str(deployment), "--port", str(self.port)]
        command += ["--key-dir", str(key_dir), "--max-request-mb", "1", *options]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited: {self.process.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/info", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        self.stop()
        pytest.fail("server did not start within 60 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.mark.fhe_execute
def test_http_round_trip_errors_and_restart(scaled_wine, tmp_path):
    X_train, X_test, y_train, _ = scaled_wine
    model = LogisticRegression().fit(X_train, y_train)
    model.compile(X_train)
    deployment = FHEModelDev(tmp_path / "deployment", model).save()
    server_keys, client_dir = tmp_path / "server_keys", tmp_path / "client"
    server = _Server(deployment, server_keys)
    try:
        info = httpx.get(f"{server.url}/info").json()
        assert info["input_shape"] == [1, X_train.shape[1]] and info["model"].endswith("LogisticRegression")
        client = HTTPClient(server.url, client_dir)
        rows = X_test[:2]
        np.testing.assert_array_equal(client.predict(rows), model.predict_proba(rows, fhe="simulate"))

        encrypted = client.fhe.quantize_encrypt_serialize(rows[:1])[0]
        unknown = httpx.post(f"{server.url}/predict/{'0' * 32}", content=encrypted)
        assert unknown.status_code == 404 and "unknown key id" in unknown.json()["detail"]
        assert httpx.post(f"{server.url}/predict/not-a-key", content=encrypted).status_code == 404
        garbage = httpx.post(f"{server.url}/predict/{client.key_id}", content=b"garbage")
        assert garbage.status_code == 400 and "malformed ciphertext" in garbage.json()["detail"]
        assert httpx.post(f"{server.url}/keys", content=b"garbage").status_code == 400
        assert httpx.post(f"{server.url}/keys", content=b"x" * (2 * 2**20)).status_code == 413
        assert httpx.post(f"{server.url}/predict/{client.key_id}", content=b"").status_code == 400
    finally:
        server.stop()

    # keys live on disk: a restarted server still serves the same key id
    server = _Server(deployment, server_keys)
    try:
        client.http = httpx.Client(base_url=server.url, timeout=600)
        np.testing.assert_array_equal(client.predict(rows), model.predict_proba(rows, fhe="simulate"))
    finally:
        server.stop()

    # the server side holds the compiled model and evaluation keys, never a client's key files
    server_files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    server_side = {f for f in server_files if not f.startswith("client/")}
    assert server_side == {
        "deployment/client.json",
        "deployment/server.zip",
        f"server_keys/{client.key_id}.evaluation_keys",
    }
    assert any(f.startswith("client/keys/") for f in server_files)  # the private keys stay with the client

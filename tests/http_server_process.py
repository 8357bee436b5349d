"""``python -m fhe_sklearn serve`` as a real uvicorn subprocess on 127.0.0.1, for the HTTP tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fhe_sklearn import LogisticRegression
from fhe_sklearn.deployment import FHEModelDev


def ignore_sigpipe() -> None:
    """Once a circuit ran in this process, concrete's runtime crashes on SIGPIPE, which a
    client gets when the server closes a connection on a refused body: ignore it, as Python
    does by default. Call it again after the runtime started (first encryption or run):
    starting it installs its own handler."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)


def read_answer_head(sock: socket.socket) -> bytes:
    """What the server answered on a raw socket, up to the end of its headers (or the close)."""
    answer = b""
    try:
        while b"\r\n\r\n" not in answer:
            part = sock.recv(4096)
            if not part:
                break
            answer += part
    except OSError:
        pass
    return answer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def linear_deployment(data, path: Path):
    """A compiled LogisticRegression (tiny evaluation keys) and its deployment directory."""
    X_train, _, y_train, _ = data
    model = LogisticRegression().fit(X_train, y_train)
    model.compile(X_train)
    return model, FHEModelDev(path, model).save()


class ServerProcess:
    """The server on a free port, its structured log in ``log_path``; ``stop()`` ends it."""

    def __init__(self, deployment: Path, key_dir: Path, log_path: Path, *options: str, startup_s: float = 120) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [sys.executable, "-m", "fhe_sklearn", "serve", str(deployment), "--port", str(self.port)]
        command += ["--key-dir", str(key_dir), *options]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"server exited: {self.log()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        pytest.fail(f"server did not start within {startup_s} s")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

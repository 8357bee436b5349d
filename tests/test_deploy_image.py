"""`fhe-sklearn deploy DIR --out CONTEXT`: the image's build context, and its entrypoint run
as the image would run it (its ENV, its paths re-rooted in a temporary directory, the
HEALTHCHECK command) serving predictions over HTTP on 127.0.0.1."""

import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from http_server_process import free_port, ignore_sigpipe, linear_deployment

from fhe_sklearn.cli import main
from fhe_sklearn.deployment import HTTPClient
from fhe_sklearn.deployment.image import IMAGE_UID

API_KEY = "s" * 40
WORKTREE = Path(__file__).resolve().parents[1]


def dockerfile_env(text: str) -> dict[str, str]:
    return dict(re.findall(r'^ENV (\w+)="([^"]*)"$', text, flags=re.MULTILINE))


def rerooted(value: str, root: Path) -> str:
    """An absolute path of the image, inside ``root``."""
    return str(root / value.lstrip("/")) if value.startswith("/") else value


def test_deploy_writes_a_non_root_image_context(scaled_wine, tmp_path):
    _, deployment = linear_deployment(scaled_wine, tmp_path / "deployment")
    context = main(["deploy", str(deployment), "--out", str(tmp_path / "image")])
    assert sorted(p.name for p in context.iterdir()) == [
        ".dockerignore",
        "Dockerfile",
        "deployment",
        "entrypoint.sh",
        "wheels",
    ]
    for name in ("client.json", "server.zip"):
        assert (context / "deployment" / name).read_bytes() == (deployment / name).read_bytes()
    text = (context / "Dockerfile").read_text()
    assert re.search(rf"^USER {IMAGE_UID}:{IMAGE_UID}$", text, flags=re.MULTILINE) and IMAGE_UID != 0
    assert "HEALTHCHECK" in text and "/info" in text and 'ENTRYPOINT ["/app/entrypoint.sh"]' in text
    assert dockerfile_env(text)["FHE_SKLEARN_KEY_DIR"] == "/var/lib/fhe-sklearn/keys"
    assert 'VOLUME ["/var/lib/fhe-sklearn/keys"]' in text
    assert os.access(context / "entrypoint.sh", os.X_OK)
    with pytest.raises(SystemExit, match="exists and is not an empty directory"):
        main(["deploy", str(deployment), "--out", str(context)])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="cannot read the client file"):
        main(["deploy", str(tmp_path / "empty"), "--out", str(tmp_path / "other")])


@pytest.mark.fhe_execute
def test_entrypoint_serves_as_the_image_would(scaled_wine, tmp_path):
    X_test = scaled_wine[1]
    model, deployment = linear_deployment(scaled_wine, tmp_path / "deployment")
    context = main(["deploy", str(deployment), "--out", str(tmp_path / "image")])
    root = tmp_path / "container"
    text = (context / "Dockerfile").read_text()
    # the image's files: COPY deployment/ /app/deployment/ and entrypoint.sh, a writable key volume
    for source, target in re.findall(r"^COPY (?:--chmod=\d+ )?(\S+) (\S+)$", text, flags=re.MULTILINE):
        destination = Path(rerooted(target, root))
        if (context / source).is_dir():
            shutil.copytree(context / source, destination)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(context / source, destination)
    assert (root / "app" / "deployment" / "server.zip").is_file() and (root / "tmp" / "wheels").is_dir()
    env = {k: rerooted(v, root) for k, v in dockerfile_env(text).items()}
    Path(env["FHE_SKLEARN_KEY_DIR"]).mkdir(parents=True, mode=0o700)
    secret = root / "run" / "secrets" / "fhe_api_key"
    secret.parent.mkdir(parents=True)
    secret.write_text(API_KEY + "\n")
    port = free_port()
    # what `docker run -e ...` would add; the image's python is this environment's
    env.update(
        FHE_SKLEARN_HOST="127.0.0.1",
        FHE_SKLEARN_PORT=str(port),
        FHE_SKLEARN_API_KEY_FILE=str(secret),
        FHE_SKLEARN_WORKERS="1",
        PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
        PYTHONPATH=str(WORKTREE),
        TMPDIR=str(tmp_path),
    )
    log = tmp_path / "server.log"
    with open(log, "wb") as stderr:
        process = subprocess.Popen(
            ["/bin/sh", rerooted("/app/entrypoint.sh", root)], env=env, stdout=subprocess.DEVNULL, stderr=stderr
        )
    healthcheck = re.search(r"^HEALTHCHECK .* CMD (.+)$", text, flags=re.MULTILINE).group(1)
    ignore_sigpipe()
    try:
        deadline = time.monotonic() + 120
        while subprocess.run(["/bin/sh", "-c", healthcheck], env=env, capture_output=True).returncode != 0:
            assert process.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.5)
        url = f"http://127.0.0.1:{port}"
        info = httpx.get(f"{url}/info").json()
        assert info["key_upload_requires_api_key"] is True and info["model"].endswith("LogisticRegression")
        client = HTTPClient(url, tmp_path / "client", api_key=API_KEY)
        rows = X_test[:2]
        np.testing.assert_array_equal(client.predict(rows), model.predict_proba(rows, fhe="simulate"))
        key_dir = Path(env["FHE_SKLEARN_KEY_DIR"])
        assert [p for p in key_dir.iterdir() if p.is_dir()], "the key set lives in the image's key volume"
        assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert process.returncode in (0, -15)
    # a variable the entrypoint maps is validated by serve itself, with a clear message
    bad = subprocess.run(
        ["/bin/sh", rerooted("/app/entrypoint.sh", root)],
        env={**env, "FHE_SKLEARN_WORKERS": "zero"},
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "--workers" in bad.stderr

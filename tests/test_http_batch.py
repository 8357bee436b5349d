"""POST /predict_batch: many ciphertexts per request, on local processes or a Dask cluster."""

import httpx
import numpy as np
import pytest
from test_http_server import _Server

from fhe_sklearn import LogisticRegression
from fhe_sklearn.deployment import FHEModelDev, HTTPClient
from fhe_sklearn.deployment.wire import BATCH_MAGIC, pack


@pytest.mark.fhe_execute
@pytest.mark.parametrize("backend", ["processes", "dask"])
def test_predict_batch_100_rows(backend, scaled_cancer, tmp_path):
    X_train, X_test, y_train, _ = scaled_cancer
    model = LogisticRegression().fit(X_train, y_train)
    model.compile(X_train)
    deployment = FHEModelDev(tmp_path / "deployment", model).save()
    rows = X_test[:100]
    cluster = None
    options = ["--max-request-mb", "64", "--n-jobs", "2"]
    if backend == "dask":
        distributed = pytest.importorskip("distributed")
        cluster = distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, memory_limit=None
        )
        options = ["--max-request-mb", "64", "--dask-scheduler", cluster.scheduler_address]
    server = _Server(deployment, tmp_path / "server_keys", *options)
    try:
        client = HTTPClient(server.url, tmp_path / "client")
        client.batch_size = 40  # bounded by bytes below: seven requests of at most 15 rows
        client.batch_bytes = 15 * len(client.fhe.quantize_encrypt_serialize(rows[:1])[0])
        np.testing.assert_array_equal(client.predict(rows), model.predict_proba(rows, fhe="simulate"))

        info = httpx.get(f"{server.url}/info").json()
        assert info["batch_format"] == BATCH_MAGIC.decode()
        encrypted = client.fhe.quantize_encrypt_serialize(rows[:2])
        unknown = httpx.post(
            f"{server.url}/predict_batch/{'0' * 32}", content=pack(encrypted, BATCH_MAGIC), timeout=120
        )
        assert unknown.status_code == 404 and "unknown key id" in unknown.json()["detail"]
        bad_framing = httpx.post(
            f"{server.url}/predict_batch/{client.key_id}", content=b"".join(encrypted), timeout=120
        )
        assert bad_framing.status_code == 400 and "malformed encrypted batch" in bad_framing.json()["detail"]
        garbage = httpx.post(
            f"{server.url}/predict_batch/{client.key_id}", content=pack([encrypted[0], b"x"], BATCH_MAGIC), timeout=120
        )
        assert garbage.status_code == 400 and "row 1: malformed ciphertext" in garbage.json()["detail"]
    finally:
        server.stop()
        if cluster is not None:
            cluster.close()

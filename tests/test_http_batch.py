"""POST /predict_batch/{key_id}: many ciphertexts per request, on the worker pool or a Dask cluster."""

import json

import httpx
import numpy as np
import pytest
from http_server_process import ServerProcess, ignore_sigpipe, linear_deployment

from fhe_sklearn.deployment import HTTPClient, wire
from fhe_sklearn.deployment.http_client import ServerError

MB = 2**20


def _batch_requests(server: ServerProcess) -> list[dict]:
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    route = "/predict_batch/{key_id}"
    return [line for line in lines if line.get("message") == "request" and line.get("route") == route]


def _post(url: str, client: HTTPClient, body: bytes, token: str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token or client.token}"}
    return httpx.post(f"{url}/predict_batch/{client.key_id}", content=body, headers=headers, timeout=120)


@pytest.mark.fhe_execute
def test_hundred_rows_in_batches_equal_simulate_and_bad_batches_are_refused(scaled_wine, tmp_path):
    X_test = scaled_wine[1]
    model, deployment = linear_deployment(scaled_wine, tmp_path / "deployment")
    options = ["--workers", "2", "--max-batch-rows", "40", "--max-batch-mb", "1"]
    server = ServerProcess(deployment, tmp_path / "server_keys", tmp_path / "server.log", *options)
    ignore_sigpipe()
    try:
        rows = np.resize(X_test, (100, X_test.shape[1]))  # the test set, repeated to 100 rows
        client = HTTPClient(server.url, tmp_path / "client")
        assert client.server_info["max_batch_rows"] == 40 and client.server_info["batch_framing"] == "FHESKLB1"
        np.testing.assert_array_equal(client.predict(rows), model.predict_proba(rows, fhe="simulate"))
        # 100 rows within the 40-row limit: three requests, not one per row
        assert [r["status"] for r in _batch_requests(server)] == [200, 200, 200]

        encrypted = client.fhe.quantize_encrypt_serialize(rows[:2])
        # concrete's runtime (started by the first encryption) installs its own SIGPIPE
        # handler, which crashes on the refused oversize bodies below: ignore it again
        ignore_sigpipe()
        # a wrong token gets the same 401 as /predict
        refused = _post(server.url, client, wire.pack(encrypted, wire.BATCH_MAGIC), token="x" + client.token)
        assert refused.status_code == 401 and refused.json()["detail"] == "invalid key id or token"
        # not the framing, a truncated frame, an empty batch
        for body in (encrypted[0], wire.pack(encrypted, wire.BATCH_MAGIC)[:-5], wire.pack([], wire.BATCH_MAGIC)):
            answer = _post(server.url, client, body)
            assert answer.status_code == 400, answer.text
        assert "FHESKLB1" in _post(server.url, client, encrypted[0]).json()["detail"]
        # a malformed row is named by its index
        answer = _post(server.url, client, wire.pack([encrypted[0], b"garbage"], wire.BATCH_MAGIC))
        assert answer.status_code == 400 and answer.json()["detail"].startswith("row 1: malformed ciphertext")
        # over the row limit, over the byte limit
        answer = _post(server.url, client, wire.pack(encrypted[:1] * 41, wire.BATCH_MAGIC))
        assert answer.status_code == 413 and "40-row limit" in answer.json()["detail"]
        answer = _post(server.url, client, wire.pack([b"x" * MB, b"x" * MB], wire.BATCH_MAGIC))
        assert answer.status_code == 413
        with pytest.raises(ServerError, match="exceed the server's"):
            client.run_encrypted_batch([b"x" * MB, b"x" * MB])
        # the server still answers correctly after the refusals
        np.testing.assert_array_equal(client.predict(rows[:3]), model.predict_proba(rows[:3], fhe="simulate"))
    finally:
        server.stop()


@pytest.mark.fhe_execute
def test_batches_run_on_a_dask_cluster(scaled_wine, tmp_path):
    distributed = pytest.importorskip("distributed")
    X_test = scaled_wine[1]
    model, deployment = linear_deployment(scaled_wine, tmp_path / "deployment")
    ignore_sigpipe()
    with distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, memory_limit=None
    ) as cluster:
        options = ["--dask-scheduler", cluster.scheduler_address]
        server = ServerProcess(deployment, tmp_path / "server_keys", tmp_path / "server.log", *options)
        try:
            client = HTTPClient(server.url, tmp_path / "client")
            rows = X_test[:20]
            np.testing.assert_array_equal(client.predict(rows), model.predict_proba(rows, fhe="simulate"))
            with distributed.Client(cluster) as dask_client:
                # the rows ran on the cluster's workers: the server loaded nothing itself
                assert sum(dask_client.run(lambda: 1).values()) == 2
                from fhe_sklearn.deployment.batch import worker_cache_info

                loads = [info["keys"].get(client.key_id, 0) for info in dask_client.run(worker_cache_info).values()]
            assert sum(loads) >= 1 and max(loads) == 1  # each worker that ran rows loaded the keys once
            answer = _post(server.url, client, wire.pack([b"garbage"], wire.BATCH_MAGIC))
            assert answer.status_code == 400 and "row 0" in answer.json()["detail"]
        finally:
            server.stop()


def test_dask_batches_in_flight_are_bounded(scaled_wine, tmp_path, monkeypatch):
    import asyncio
    import threading

    from fhe_sklearn.deployment import server as server_module

    _, deployment = linear_deployment(scaled_wine, tmp_path / "deployment")
    settings = server_module.ServerSettings(workers=1, max_queue=0, dask_scheduler="tcp://127.0.0.1:1")
    app = server_module.create_app(deployment, tmp_path / "keys", settings)  # no lifespan: no workers
    store = app.state.key_store
    upload = store.new_upload()
    upload.write_bytes(b"keys")
    key_id, token = store.commit(upload)
    release = threading.Event()

    def slow_cluster(deployment_dir, rows, keys_path, key_id, settings):
        release.wait(30)
        return [b"r" * len(row) for row in rows]

    monkeypatch.setattr(server_module, "_run_on_dask", slow_cluster)
    body = wire.pack([b"a", b"bc"], wire.BATCH_MAGIC)

    auth = {"Authorization": f"Bearer {token}"}

    async def two_batches():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            first = asyncio.ensure_future(http.post(f"/predict_batch/{key_id}", content=body, headers=auth))
            await asyncio.sleep(0.5)  # the first batch now holds the only slot
            second = await http.post(f"/predict_batch/{key_id}", content=body, headers=auth)
            release.set()
            return await first, second

    first, second = asyncio.run(two_batches())
    assert second.status_code == 503 and second.headers["retry-after"] == "5"
    assert first.status_code == 200 and wire.unpack(first.content, wire.BATCH_MAGIC) == [b"r", b"rr"]

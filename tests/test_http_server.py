import json
import select
import socket
import stat
import threading
import time

import httpx
import numpy as np
import pytest
from http_server_process import ServerProcess, ignore_sigpipe, linear_deployment, read_answer_head

from fhe_sklearn.deployment import HTTPClient
from fhe_sklearn.deployment.http_client import ServerError

MB = 2**20
API_KEY = "k" * 40


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _requests(log: str) -> list[dict]:
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("message") == "request"]


@pytest.mark.fhe_execute
def test_http_round_trip_tokens_limits_eviction_and_restart(scaled_wine, tmp_path):
    X_test = scaled_wine[1]
    model, deployment = linear_deployment(scaled_wine, tmp_path / "deployment")
    (tmp_path / "api_key").write_text(API_KEY + "\n")
    server_keys, log = tmp_path / "server_keys", tmp_path / "server.log"
    options = ["--max-request-mb", "1", "--max-keys-mb", "1", "--max-key-sets", "2", "--workers", "1"]
    options += ["--api-key-file", str(tmp_path / "api_key")]
    server = ServerProcess(deployment, server_keys, log, *options)
    rows = X_test[:2]
    expected = model.predict_proba(rows, fhe="simulate")
    ignore_sigpipe()
    try:
        url = server.url
        info = httpx.get(f"{url}/info").json()
        assert info["input_shape"] == [1, X_test.shape[1]] and info["model"].endswith("LogisticRegression")
        assert info["max_request_bytes"] == MB and info["key_upload_requires_api_key"] is True
        assert httpx.get(f"{url}/health").json()["status"] == "ok"
        for docs in ("/docs", "/redoc", "/openapi.json"):
            assert httpx.get(f"{url}{docs}").status_code == 404

        anonymous = HTTPClient(url, tmp_path / "anonymous")
        with pytest.raises(ServerError, match="API key") as refused:
            anonymous.upload_keys()
        assert refused.value.status_code == 401

        client = HTTPClient(url, tmp_path / "client", api_key=API_KEY)
        np.testing.assert_array_equal(client.predict(rows), expected)
        assert len(client.token) >= 22  # >= 128 random bits, url-safe base64

        # unknown id, wrong token, missing token, another scheme: one indistinguishable answer
        encrypted = client.fhe.quantize_encrypt_serialize(rows[:1])[0]
        refusals = [
            httpx.post(f"{url}/predict/{'0' * 32}", content=encrypted, headers=_bearer(client.token)),
            httpx.post(f"{url}/predict/{client.key_id}", content=encrypted, headers=_bearer("x" + client.token)),
            httpx.post(f"{url}/predict/{client.key_id}", content=encrypted),
            httpx.post(f"{url}/predict/{client.key_id}", content=encrypted, headers={"Authorization": client.token}),
            httpx.post(f"{url}/predict/%2e%2e", content=encrypted, headers=_bearer(client.token)),
            httpx.post(f"{url}/predict/{client.key_id.upper()}", content=encrypted, headers=_bearer(client.token)),
        ]
        assert {(r.status_code, r.text, r.headers["www-authenticate"]) for r in refusals} == {
            (401, '{"detail":"invalid key id or token"}', "Bearer")
        }
        auth = _bearer(client.token)
        garbage = httpx.post(f"{url}/predict/{client.key_id}", content=b"garbage", headers=auth)
        assert garbage.status_code == 400 and "malformed ciphertext" in garbage.json()["detail"]
        bad_keys = httpx.post(f"{url}/keys", content=b"garbage", headers=_bearer(API_KEY))
        assert bad_keys.status_code == 400 and "malformed evaluation keys" in bad_keys.json()["detail"]
        for path, headers in (("/keys", _bearer(API_KEY)), (f"/predict/{client.key_id}", auth)):
            too_large = httpx.post(f"{url}{path}", content=b"x" * (2 * MB), headers=headers)
            assert too_large.status_code == 413 and "limit" in too_large.json()["detail"]
        with pytest.raises(ServerError, match="exceed the server's 1048576-byte limit") as too_large:
            client.run_encrypted(b"x" * (2 * MB))  # refused by the client before sending
        assert too_large.value.status_code == 413
        assert httpx.post(f"{url}/predict/{client.key_id}", content=b"", headers=auth).status_code == 400
        assert httpx.get(f"{url}/keys").status_code == 405

        # --max-key-sets 2: two more uploads evict the least recently used key set (the first
        # client's); its old credentials are refused and the client uploads again by itself
        first_id, first_token = client.key_id, client.token
        others = [HTTPClient(url, tmp_path / f"other{i}", api_key=API_KEY) for i in range(2)]
        for other in others:
            other.upload_keys()
        evicted = httpx.post(f"{url}/predict/{first_id}", content=encrypted, headers=_bearer(first_token))
        assert evicted.status_code == 401
        np.testing.assert_array_equal(client.predict(rows), expected)
        assert client.key_id != first_id
        assert sorted(p.name for p in server_keys.iterdir()) == sorted([client.key_id, others[1].key_id])

        # the server dies in the middle of an upload
        upload = socket.create_connection(("127.0.0.1", server.port))
        head = f"POST /keys HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
        upload.sendall(head.encode() + b"Transfer-Encoding: chunked\r\n\r\n10\r\n" + b"k" * 16 + b"\r\n")
        deadline = time.monotonic() + 10
        while not any(p.name.startswith(".upload-") for p in server_keys.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(p.name.startswith(".upload-") for p in server_keys.iterdir())
        server.process.kill()
        upload.close()
    finally:
        server.stop()

    # keys and tokens live on disk: a restarted server accepts the same credentials, and an
    # interrupted upload leaves nothing behind
    server = ServerProcess(deployment, server_keys, log, *options)
    try:
        key_id = client.key_id
        assert sorted(p.name for p in server_keys.iterdir()) == sorted([client.key_id, others[1].key_id])
        client.http = httpx.Client(base_url=server.url, timeout=600)
        np.testing.assert_array_equal(client.predict(rows), expected)
        assert client.key_id == key_id  # no new upload
        other = httpx.post(
            f"{server.url}/predict/{others[1].key_id}", content=encrypted, headers=_bearer(others[1].token)
        )
        assert other.status_code == 200
    finally:
        server.stop()

    # private key directory, owner-only files, no token on disk (only its hash), none in the log
    assert _mode(server_keys) == 0o700
    for key_set in server_keys.iterdir():
        assert _mode(key_set) == 0o700
        assert sorted(p.name for p in key_set.iterdir()) == ["evaluation_keys", "meta.json"]
        assert all(_mode(p) == 0o600 for p in key_set.iterdir())
    server_side = b"".join(p.read_bytes() for p in server_keys.rglob("*") if p.is_file())
    text = server.log()
    for secret in (client.token, others[1].token, first_token, API_KEY):
        assert secret.encode() not in server_side and secret not in text
    for key_id in (client.key_id, first_id):
        assert key_id not in text
    routes = {line["route"] for line in _requests(text)}
    assert "/predict/{key_id}" in routes and "/keys" in routes
    assert any(p.is_file() for p in (tmp_path / "client" / "keys").rglob("*"))  # private keys: client side only


def _chunked_upload(port: int, path: str, total: int, headers: str = "", chunk: int = 64 * 1024) -> tuple[int, bytes]:
    """Stream ``total`` bytes as a chunked body, stopping as soon as the server answers;
    returns the bytes sent and the start of the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, chunk)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n{headers}\r\n"
    sock.sendall(head.encode())
    sent, data = 0, b"\x00" * chunk
    try:
        while sent < total and not select.select([sock], [], [], 0.005)[0]:
            # MSG_NOSIGNAL: once a circuit ran, concrete's runtime dies on SIGPIPE
            sock.sendall(f"{chunk:x}\r\n".encode() + data + b"\r\n", socket.MSG_NOSIGNAL)
            sent += chunk
    except OSError:  # the server closed the connection after answering
        pass
    answer = read_answer_head(sock)
    sock.close()
    return sent, answer


@pytest.mark.fhe_execute
def test_one_malicious_ciphertext_stalls_nothing_and_chunked_bodies_are_cut(scaled_wine, tmp_path, capsys):
    X_test = scaled_wine[1]
    model, deployment = linear_deployment(scaled_wine, tmp_path / "deployment")
    options = ["--workers", "2", "--max-queue", "0", "--deserialize-timeout", "4", "--max-request-mb", "1"]
    options += ["--max-keys-mb", "1"]
    server = ServerProcess(deployment, tmp_path / "server_keys", tmp_path / "server.log", *options)
    try:
        url = server.url
        client = HTTPClient(url, tmp_path / "client", max_retries=0)
        client.upload_keys()
        auth = _bearer(client.token)
        valid = client.fhe.quantize_encrypt_serialize(X_test[:1])[0]
        # one header byte changed: concrete's deserializer then spins for ~50 s holding the GIL
        # and prints megabytes of native stack trace
        malicious = bytearray(valid)
        malicious[10] = 0xFF
        answers: dict[int, httpx.Response] = {}
        expected = model.predict_proba(X_test[:1], fhe="simulate")
        ignore_sigpipe()

        def send_malicious(i: int) -> None:
            answers[i] = httpx.post(
                f"{url}/predict/{client.key_id}", content=bytes(malicious), headers=auth, timeout=60
            )

        started = time.perf_counter()
        attack = threading.Thread(target=send_malicious, args=(0,))
        attack.start()
        time.sleep(0.5)
        t = time.perf_counter()
        assert httpx.get(f"{url}/info", timeout=10).status_code == 200
        info_seconds = time.perf_counter() - t
        t = time.perf_counter()
        result = client.run_encrypted(valid)
        predict_seconds = time.perf_counter() - t
        np.testing.assert_array_equal(client.fhe.deserialize_decrypt_dequantize([result]), expected)
        assert info_seconds < 2 and predict_seconds < 2
        attack.join()
        assert answers[0].status_code == 400
        assert answers[0].json()["detail"] == "malformed ciphertext: not deserialized within 4 s"
        attack_seconds = time.perf_counter() - started

        # both workers busy with malicious requests and no queue: 503 with Retry-After
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/health").json()["workers_alive"] < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # the killed worker's replacement is loading the model
        attacks = [threading.Thread(target=send_malicious, args=(i,)) for i in (1, 2)]
        for thread in attacks:
            thread.start()
        time.sleep(1)
        with pytest.raises(ServerError, match="busy") as busy:
            client.run_encrypted(valid)
        assert busy.value.status_code == 503 and busy.value.retry_after >= 1
        for thread in attacks:
            thread.join()

        # chunked bodies over the 1 MB limit: cut after at most one chunk past the limit
        cut = {}
        for path, headers in (
            ("/keys", ""),
            (f"/predict/{client.key_id}", f"Authorization: Bearer {client.token}\r\n"),
        ):
            sent, answer = _chunked_upload(server.port, path, 20 * MB, headers)
            assert answer.startswith(b"HTTP/1.1 413") and b"connection: close" in answer.lower()
            assert sent < 2 * MB
            cut[path] = sent
        assert httpx.get(f"{url}/info").status_code == 200
    finally:
        server.stop()
    log = server.log()
    read = [line["request_bytes"] for line in _requests(log) if line["status"] == 413]
    assert len(read) == 2 and all(MB < n < 2 * MB for n in read)
    assert len(log) < 100_000  # no native stack trace from the workers
    with capsys.disabled():
        print(
            f"\n/info {info_seconds:.3f} s and a valid /predict {predict_seconds:.3f} s while a malicious "
            f"ciphertext was in flight (refused after {attack_seconds:.1f} s); chunked 20 MB bodies "
            f"refused after sending {cut} bytes, server read {read} bytes; server log {len(log)} bytes"
        )


def test_docs_only_on_request(scaled_wine, tmp_path):
    from fhe_sklearn.deployment.server import ServerSettings, create_app

    _, deployment = linear_deployment(scaled_wine, tmp_path / "deployment")
    # the worker processes start with the application's lifespan, not here
    off = create_app(deployment, tmp_path / "keys", ServerSettings())
    on = create_app(deployment, tmp_path / "keys", ServerSettings(docs=True))
    assert (off.docs_url, off.redoc_url, off.openapi_url) == (None, None, None)  # 404s: tested above
    assert (on.docs_url, on.redoc_url, on.openapi_url) == ("/docs", "/redoc", "/openapi.json")
    paths = {"/health", "/info", "/client.json", "/keys", "/predict/{key_id}", "/predict_batch/{key_id}"}
    paths.add("/train/{key_id}")  # 404 unless the deployment is an encrypted-training one
    assert set(on.openapi()["paths"]) == paths


def test_http_round_trip_of_a_compressed_tree(wine, tmp_path):
    """Compressed evaluation keys and unary-digit inputs (the tree defaults) through the server."""
    from concrete import fhe

    from fhe_sklearn import DecisionTreeClassifier
    from fhe_sklearn.deployment import FHEModelDev

    X_train, X_test, y_train, _ = wine
    model = DecisionTreeClassifier(max_depth=2, n_bits=3, random_state=0).fit(X_train, y_train)
    circuit = model.compile(X_train)
    assert circuit.configuration.compress_evaluation_keys and circuit.configuration.compress_input_ciphertexts
    deployment = FHEModelDev(tmp_path / "deployment", model).save()
    options = ["--max-request-mb", "64", "--max-keys-mb", "256", "--workers", "1"]
    server = ServerProcess(deployment, tmp_path / "server_keys", tmp_path / "server.log", *options)
    rows = X_test[:2]
    try:
        client = HTTPClient(server.url, tmp_path / "client")
        np.testing.assert_array_equal(client.predict(rows), model.predict_proba(rows, fhe="simulate"))
        # what crossed the wire: seeded keys and ciphertexts, smaller than concrete's default form
        uploaded = len(client.fhe.get_serialized_evaluation_keys())
        encrypted = len(client.fhe.quantize_encrypt_serialize(rows[:1])[0])
    finally:
        server.stop()
    plain = model.quantized_module_.compile(X_train, configuration=fhe.Configuration(), global_p_error=1e-7)
    plain.keygen()
    assert uploaded < len(plain.keys.evaluation.serialize()) / 2
    assert encrypted < len(plain.encrypt(model.quantized_module_.quantize_input(rows[:1])).serialize()) / 10

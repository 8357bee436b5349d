"""run_many: many encrypted rows on threads, local processes and a Dask LocalCluster."""

import os
import signal
import threading
import time

import numpy as np
import pytest

from fhe_sklearn import DecisionTreeClassifier, LogisticRegression
from fhe_sklearn.deployment import FHEModelClient, FHEModelDev, FHEModelServer
from fhe_sklearn.deployment.batch import ServerBundle, fingerprint, run_many, worker_cache_info

distributed = pytest.importorskip("distributed")


class _Deployed:
    """A compiled model saved for deployment, a client with keys, and encrypted test rows."""

    def __init__(self, model, X_train, rows, path):
        model.compile(X_train)
        self.path = FHEModelDev(path / "deployment", model).save()
        self.model, self.rows = model, rows
        self.client = FHEModelClient(path / "deployment", key_dir=path / "keys")
        self.client.generate_private_and_evaluation_keys()
        self.keys = self.client.get_serialized_evaluation_keys()
        self.artifact = ServerBundle.from_deployment(self.path)
        self.encrypted = self.client.quantize_encrypt_serialize(rows)

    def check(self, results):
        """Decrypted results equal simulate, row for row."""
        assert len(results) == len(self.rows)
        expected = self.model.predict_proba(self.rows, fhe="simulate")
        np.testing.assert_array_equal(self.client.deserialize_decrypt_dequantize(results), expected)


@pytest.fixture(scope="module")
def linear(scaled_cancer, tmp_path_factory):
    X_train, X_test, y_train, _ = scaled_cancer
    model = LogisticRegression().fit(X_train, y_train)
    return _Deployed(model, X_train, X_test[:24], tmp_path_factory.mktemp("linear"))


@pytest.fixture(scope="module")
def tree(cancer, tmp_path_factory):
    X_train, X_test, y_train, _ = cancer
    X_train, X_test = X_train[:, :4], X_test[:, :4]
    model = DecisionTreeClassifier(max_depth=2, n_bits=3, random_state=0).fit(X_train, y_train)
    return _Deployed(model, X_train, X_test[:20], tmp_path_factory.mktemp("tree"))


def _cluster():
    return distributed.LocalCluster(
        n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, memory_limit=None
    )


def _key_loads(client, key_id):
    return {w: info["keys"].get(key_id, 0) for w, info in client.run(worker_cache_info).items()}


@pytest.mark.fhe_execute
@pytest.mark.parametrize("backend", ["threads", "processes"])
def test_run_many_locally(linear, backend, tmp_path):
    server = FHEModelServer(linear.path).load()
    linear.check(server.run_many(linear.encrypted, linear.keys, backend=backend, n_jobs=2, chunk_size=5))
    # keys given as a file on shared storage: workers read it, nothing else changes
    path = tmp_path / "keys.bin"
    path.write_bytes(linear.keys)
    linear.check(run_many(linear.artifact, linear.encrypted, path, backend=backend, n_jobs=2, key_id="on-disk"))
    if backend == "threads":  # this process is the worker: one load per key set
        assert worker_cache_info()["keys"]["on-disk"] == 1


@pytest.mark.fhe_execute
@pytest.mark.parametrize("deployed", ["linear", "tree"])
def test_run_many_on_dask_loads_keys_once_per_worker(deployed, request):
    deployed = request.getfixturevalue(deployed)
    with _cluster() as cluster, distributed.Client(cluster) as client:
        server = FHEModelServer(deployed.path).load()
        deployed.check(server.run_many(deployed.encrypted, deployed.keys, scheduler=client))
        # a second batch on the same key set reuses what every worker loaded
        again = run_many(deployed.artifact, deployed.encrypted[::-1], deployed.keys, backend="dask", chunk_size=3)
        deployed.check(again[::-1])
        assert list(_key_loads(client, fingerprint(deployed.keys)).values()) == [1, 1]
        if deployed is request.getfixturevalue("linear"):
            # keys on storage the workers share: only the path crosses the Dask network
            path = deployed.path.parent / "shared.evaluation_keys"
            path.write_bytes(deployed.keys)
            shared = run_many(
                deployed.artifact, deployed.encrypted, path, key_id="shared", backend="dask", scatter_keys=False
            )
            deployed.check(shared)
            assert list(_key_loads(client, "shared").values()) == [1, 1]


@pytest.mark.fhe_execute
def test_worker_killed_mid_run_every_row_once(tree):
    key_id = fingerprint(tree.keys)
    with _cluster() as cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        killed = []

        def kill_one_worker():
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # both workers busy scoring rows
                if sum(_key_loads(client, key_id).values()) == 2:
                    time.sleep(0.5)
                    pid = next(iter(pids.values()))
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.1)

        killer = threading.Thread(target=kill_one_worker)
        killer.start()
        results = run_many(tree.artifact, tree.encrypted, tree.keys, backend="dask", scheduler=client, chunk_size=2)
        killer.join()
        assert killed, "no worker was killed while rows were running"
        tree.check(results)  # every row, once, in order
        client.wait_for_workers(2, timeout=60)
        assert killed[0] not in client.run(os.getpid).values()


@pytest.mark.fhe_execute
def test_run_many_errors(linear):
    artifact, rows, keys = linear.artifact, linear.encrypted[:3], linear.keys
    with pytest.raises(ValueError, match="backend must be one of"):
        run_many(artifact, rows, keys, backend="mpi")
    with pytest.raises(ValueError, match="scheduler= is for backend='dask'"):
        run_many(artifact, rows, keys, backend="threads", scheduler="tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        run_many(artifact, rows, keys, backend="threads", chunk_size=0)
    with pytest.raises(ValueError, match="n_jobs must be"):
        run_many(artifact, rows, keys, backend="threads", n_jobs=0)
    with pytest.raises(TypeError, match="row 1 is str"):
        run_many(artifact, [rows[0], "x"], keys, backend="threads")
    with pytest.raises(ValueError, match="row 2: malformed ciphertext"):
        run_many(artifact, [*rows[:2], b"garbage"], keys, backend="threads")
    with pytest.raises(ValueError, match="malformed evaluation keys"):
        run_many(artifact, rows, b"garbage", backend="threads")
    with pytest.raises(ValueError, match="needs a cluster"):
        run_many(artifact, rows, keys, backend="dask")
    assert run_many(artifact, [], keys, backend="threads") == []


@pytest.mark.fhe_execute
def test_estimator_predict_on_processes_and_dask(scaled_wine):
    X_train, X_test, y_train, _ = scaled_wine
    model = LogisticRegression().fit(X_train, y_train)
    model.compile(X_train)
    rows = X_test[:20]
    expected = model.predict_proba(rows, fhe="simulate")
    np.testing.assert_array_equal(model.predict_proba(rows, fhe="execute", backend="processes", n_jobs=2), expected)
    with _cluster() as cluster, distributed.Client(cluster):
        np.testing.assert_array_equal(model.predict_proba(rows, fhe="execute", backend="dask"), expected)
        np.testing.assert_array_equal(model.predict(rows, fhe="execute", backend="dask"), expected.argmax(1))
    with pytest.raises(ValueError, match="backend must be 'threads', 'dask' or 'processes', got 'gpu'"):
        model.predict(rows, fhe="execute", backend="gpu")

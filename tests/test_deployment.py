import json

import numpy as np
import pytest

from fhe_sklearn import (
    DecisionTreeClassifier,
    LinearRegression,
    LinearSVC,
    LogisticRegression,
    NeuralNetClassifier,
)
from fhe_sklearn.deployment import FHEModelClient, FHEModelDev, FHEModelServer


def _deploy(model, X_train, tmp_path):
    model.compile(X_train)
    path = FHEModelDev(tmp_path / "deployment", model).save()
    client = FHEModelClient(path, key_dir=tmp_path / "client_keys")
    client.generate_private_and_evaluation_keys()
    return path, client, FHEModelServer(path).load()


def _round_trip(client, server, rows):
    keys = client.get_serialized_evaluation_keys()
    results = [server.run(encrypted, keys) for encrypted in client.quantize_encrypt_serialize(rows)]
    return client.deserialize_decrypt_dequantize(results)


@pytest.mark.fhe_execute
@pytest.mark.parametrize(
    ("cls", "params", "dataset", "method"),
    [
        (LogisticRegression, {}, "scaled_wine", "predict_proba"),
        (LinearRegression, {}, "scaled_diabetes", "predict"),
        (LinearSVC, {}, "scaled_cancer", "decision_function"),
        (DecisionTreeClassifier, {"max_depth": 2, "n_bits": 3}, "wine", "predict_proba"),
        (
            NeuralNetClassifier,
            {
                "module__n_w_bits": 2,
                "module__n_a_bits": 2,
                "module__n_accum_bits": 5,
                "module__n_hidden_neurons_multiplier": 1,
                "max_epochs": 10,
                "random_state": 0,
            },
            "scaled_wine",
            "predict_proba",
        ),
    ],
    ids=lambda p: getattr(p, "__name__", p if isinstance(p, str) else ""),
)
def test_client_server_round_trip(cls, params, dataset, method, request, tmp_path):
    X_train, X_test, y_train, _ = request.getfixturevalue(dataset)
    model = cls(**params).fit(X_train, y_train)
    path, client, server = _deploy(model, X_train, tmp_path)
    rows = X_test[:2]
    np.testing.assert_array_equal(_round_trip(client, server, rows), getattr(model, method)(rows, fhe="simulate"))
    # nothing secret, and not the model's weights, leaves the developer
    assert sorted(p.name for p in path.iterdir()) == ["client.json", "server.zip"]
    client_file = json.loads((path / "client.json").read_text())
    assert client_file["model"]["state"]["__dict__"]["quantized_module_"]["state"]["__dict__"]["ops"] == []
    text = (path / "client.json").read_text()
    for weight in ("coef_", "intercept_", "weight_q", "tables", "thresholds"):
        assert f'"{weight}"' not in text


def test_deployment_errors(scaled_cancer, tmp_path):
    X_train, _, y_train, _ = scaled_cancer
    model = LogisticRegression().fit(X_train, y_train)
    with pytest.raises(RuntimeError, match="compiled before deployment"):
        FHEModelDev(tmp_path / "a", model).save()
    path, client, server = _deploy(model, X_train, tmp_path)
    with pytest.raises(FileExistsError, match="not empty"):
        FHEModelDev(path, model).save()
    keys = client.get_serialized_evaluation_keys()
    with pytest.raises(ValueError, match="malformed ciphertext"):
        server.run(b"garbage", keys)
    with pytest.raises(ValueError, match="malformed evaluation keys"):
        server.run(client.quantize_encrypt_serialize(X_train[:1])[0], b"garbage")
    data = json.loads((path / "client.json").read_text())
    (path / "client.json").write_text(json.dumps({**data, "library_version": "0.0.1"}))
    with pytest.raises(ValueError, match=r"written by fhe_sklearn '0\.0\.1'"):
        FHEModelClient(path)

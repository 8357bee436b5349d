import json
import subprocess
import sys

import numpy as np
import pytest

from fhe_sklearn import (
    DecisionTreeClassifier,
    LinearRegression,
    LinearSVC,
    LogisticRegression,
    NeuralNetClassifier,
)
from fhe_sklearn.deployment import ClientSpec, FHEModelClient, FHEModelDev, FHEModelServer
from fhe_sklearn.deployment.client_spec import client_attributes


def _deploy(model, X_train, tmp_path, **save):
    model.compile(X_train)
    path = FHEModelDev(tmp_path / "deployment", model).save(**save)
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
    spec = json.loads((path / "client.json").read_text())["spec"]
    assert set(spec["attributes"]) <= set(client_attributes(cls))
    text = (path / "client.json").read_text()
    for weight in ("coef_", "intercept_", "weight_q", "tables", "ops", "sklearn_model"):
        assert f'"{weight}"' not in text
    # the client model holds no float model, no ops
    assert not hasattr(client.model, "sklearn_model_") and not hasattr(client.model.quantized_module_, "ops")


@pytest.mark.fhe_execute
def test_execute_equals_simulate_on_decrypted_outputs(scaled_cancer, tmp_path):
    """Integer circuit outputs decrypted through the deployment classes == simulation."""
    X_train, X_test, y_train, _ = scaled_cancer
    model = LogisticRegression(n_bits=6).fit(X_train, y_train)
    _, client, server = _deploy(model, X_train, tmp_path)
    rows = X_test[:3]
    keys = client.get_serialized_evaluation_keys()
    decrypted = client.deserialize_decrypt(server.run(client.quantize_encrypt_serialize(rows), keys))
    module = model.quantized_module_
    np.testing.assert_array_equal(decrypted, module.quantized_forward(module.quantize_input(rows), fhe="simulate"))
    # the batch form (one message each way) decrypts to the same outputs
    batch = server.run(client.quantize_encrypt_serialize_batch(rows), keys)
    assert isinstance(batch, bytes)
    np.testing.assert_array_equal(client.deserialize_decrypt(batch), decrypted)
    # the same keys object is deserialized once
    assert server.key_cache.misses == 1 and server.key_cache.hits >= 1


@pytest.mark.fhe_execute
def test_concrete_ml_style_script(scaled_diabetes, tmp_path):
    """Concrete ML's call shapes: keywords, load(), a batch ciphertext, save(mode=...)."""
    X_train, X_test, y_train, _ = scaled_diabetes
    model = LinearRegression().fit(X_train, y_train)
    model.compile(X_train)
    FHEModelDev(path_dir=tmp_path / "dep", model=model).save(mode="inference")
    client = FHEModelClient(path_dir=tmp_path / "dep", key_dir=tmp_path / "keys")
    client.load()
    client.generate_private_and_evaluation_keys()
    serialized_evaluation_keys = client.get_serialized_evaluation_keys()
    encrypted_data = client.quantize_encrypt_serialize_batch(X_test[:3])
    server = FHEModelServer(path_dir=tmp_path / "dep")
    server.load()
    encrypted_result = server.run(encrypted_data, serialized_evaluation_keys)
    result = client.deserialize_decrypt_dequantize(encrypted_result)
    np.testing.assert_array_equal(result, model.predict(X_test[:3], fhe="simulate"))
    with pytest.raises(ValueError, match="mode must be one of"):
        FHEModelDev(path_dir=tmp_path / "other", model=model).save(mode="bogus")
    with pytest.raises(ValueError, match="saves the encrypted training of an SGDClassifier"):
        FHEModelDev(path_dir=tmp_path / "other", model=model).save(mode="training")


@pytest.mark.fhe_execute
def test_bare_quantized_module(scaled_diabetes, tmp_path):
    """A compiled QuantizedModule without estimator deploys: quantize in, de-quantize out."""
    X_train, X_test, y_train, _ = scaled_diabetes
    module = LinearRegression().fit(X_train, y_train).quantized_module_
    module.compile(X_train)
    path = FHEModelDev(tmp_path / "dep", module).save()
    spec = json.loads((path / "client.json").read_text())["spec"]
    assert spec["estimator"] is None and spec["attributes"] == {}
    client = FHEModelClient(path, key_dir=tmp_path / "keys")
    client.generate_private_and_evaluation_keys()
    result = _round_trip(client, FHEModelServer(path).load(), X_test[:2])
    np.testing.assert_array_equal(result, module.forward(X_test[:2], fhe="simulate"))


def test_bare_module_post_processing_reaches_the_client(rng):
    """A bare module's post_processing (an imported network's final softmax) travels in the
    client spec, and the client applies it after de-quantizing, as Concrete ML's client does."""
    from scipy.special import softmax

    from fhe_sklearn.deployment.client_spec import ClientSpec
    from fhe_sklearn.quantization import GraphBuilder
    from fhe_sklearn.quantization.post_training import input_quantizer

    a = rng.normal(size=(60, 4))
    builder = GraphBuilder()
    builder.input(input_quantizer(a, 4))
    builder.add("Gemm", weight=rng.normal(size=(4, 3)), bias=np.zeros(3), n_bits=4)
    module = builder.build(a, post_processing="softmax")
    spec = ClientSpec.from_model(module)
    data = json.loads(json.dumps(spec.to_json()))
    assert data["post_processing"] == "softmax"
    client = ClientSpec.from_json(data).build_model()
    y = client.dequantize_output(module.quantized_forward(module.quantize_input(a[:5])))
    np.testing.assert_allclose(client.output_from_dequantized(y), softmax(y, axis=1))
    np.testing.assert_array_equal(module.post_process(y), client.output_from_dequantized(y))
    # older specs have no field: nothing applied; a wrong name, or one on an estimator, is refused
    del data["post_processing"]
    assert ClientSpec.from_json(data).build_model().output_from_dequantized(y) is y
    for estimator, post in ((None, "exp"), ("LinearRegression", "softmax")):
        with pytest.raises(ValueError, match=r"post_processing .* is not one of"):
            ClientSpec.from_json({**data, "estimator": estimator, "post_processing": post})


@pytest.mark.fhe_execute
def test_module_with_two_inputs_and_two_outputs(rng, tmp_path):
    """What torch/ONNX import will deploy: a bare graph with several inputs and outputs."""
    from fhe_sklearn.quantization import GraphBuilder
    from fhe_sklearn.quantization.post_training import input_quantizer

    a, b = rng.normal(size=(100, 3)), rng.uniform(0, 2, size=(100, 3))
    builder = GraphBuilder()
    builder.input(input_quantizer(a, 4), name="a")
    builder.input(input_quantizer(b, 3), name="b")
    builder.output(builder.add("Relu", builder.add("Add", "a", "b", name="total"), name="positive", n_bits=4), "a")
    module = builder.build(a, b)
    module.compile((a, b))
    path = FHEModelDev(tmp_path / "dep", module).save()
    client = FHEModelClient(path, key_dir=tmp_path / "keys")
    client.generate_private_and_evaluation_keys()
    encrypted = client.quantize_encrypt_serialize_batch(a[:2], b[:2])
    result = client.deserialize_decrypt_dequantize(
        FHEModelServer(path).load().run(encrypted, client.get_serialized_evaluation_keys())
    )
    expected = module.forward(a[:2], b[:2], fhe="simulate")
    assert isinstance(result, tuple) and len(result) == 2
    for got, want in zip(result, expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.fhe_execute
def test_server_side_imports_no_torch(scaled_diabetes, tmp_path):
    """Load + run on the server in a fresh process: torch, skorch, xgboost never imported."""
    X_train, X_test, y_train, _ = scaled_diabetes
    model = LinearRegression().fit(X_train, y_train)
    _, client, _ = _deploy(model, X_train, tmp_path)
    (tmp_path / "keys.bin").write_bytes(client.get_serialized_evaluation_keys())
    (tmp_path / "row.bin").write_bytes(client.quantize_encrypt_serialize(X_test[:1])[0])
    script = f"""
import os, sys
from pathlib import Path
from fhe_sklearn.deployment import FHEModelServer
tmp = Path({str(tmp_path)!r})
server = FHEModelServer(tmp / "deployment").load()
(tmp / "out.bin").write_bytes(server.run((tmp / "row.bin").read_bytes(), (tmp / "keys.bin").read_bytes()))
heavy = [m for m in ("torch", "skorch", "xgboost", "concrete.fhe") if m in sys.modules]
print(heavy)
sys.stdout.flush()
os._exit(1 if heavy else 0)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    result = client.deserialize_decrypt_dequantize((tmp_path / "out.bin").read_bytes())
    np.testing.assert_array_equal(result, model.predict(X_test[:1], fhe="simulate"))


def test_import_loads_no_torch():
    code = "import sys, fhe_sklearn.deployment; print([m for m in ('torch', 'skorch', 'xgboost') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_deployment_errors(scaled_cancer, tmp_path):
    X_train, _, y_train, _ = scaled_cancer
    model = LogisticRegression().fit(X_train, y_train)
    with pytest.raises(RuntimeError, match="compiled before deployment"):
        FHEModelDev(tmp_path / "a", model).save()
    with pytest.raises(TypeError, match="exactly one"):
        FHEModelDev(tmp_path / "a", model, path_dir=tmp_path / "b")
    model.compile(X_train)
    path = FHEModelDev(tmp_path / "deployment", model).save()
    with pytest.raises(FileExistsError, match="not empty"):
        FHEModelDev(path, model).save()
    with pytest.raises(ValueError, match="via_mlir must be True"):
        FHEModelDev(tmp_path / "native", model).save(via_mlir=False)
    with pytest.raises(ValueError, match="cannot deploy"):
        FHEModelDev(tmp_path / "float", model.sklearn_model).save()
    server = FHEModelServer(path).load()
    with pytest.raises(ValueError, match="malformed evaluation keys"):
        server.run(b"garbage", b"garbage keys")
    # wrong types: the message names the type, never the payload
    payload = [b"x" * 100_000]
    for call in (lambda: server.run(payload * 2, [b"k" * 100_000]), lambda: server.run({"a": payload}, b"k")):
        with pytest.raises(TypeError) as info:
            call()
        assert len(str(info.value)) < 200


def test_format_versions(scaled_cancer, tmp_path):
    X_train, _, y_train, _ = scaled_cancer
    model = LogisticRegression().fit(X_train, y_train)
    model.compile(X_train)
    path = FHEModelDev(tmp_path / "deployment", model).save()
    data = json.loads((path / "client.json").read_text())
    # another library or concrete-python version with the same format version is accepted
    versions = {**data["versions"], "fhe_sklearn": "0.0.1", "concrete-python": "2.10.0"}
    (path / "client.json").write_text(json.dumps({**data, "versions": versions}))
    assert FHEModelClient(path).spec.estimator == "LogisticRegression"
    FHEModelServer(path).load()
    # another format version is refused, saying what to do
    (path / "client.json").write_text(json.dumps({**data, "format_version": 1, "library_version": "0.1.0"}))
    with pytest.raises(
        ValueError, match=r"format version 1 \(written by fhe_sklearn '0\.1\.0'\).*save the model again"
    ):
        FHEModelClient(path)


def test_client_spec_of_every_family_predicts_as_the_model(scaled_wine, scaled_diabetes):
    """The client-only model rebuilt from the spec post-processes as the full model."""
    from fhe_sklearn import (
        DecisionTreeRegressor,
        KNeighborsClassifier,
        KNeighborsRegressor,
        PoissonRegressor,
        RandomForestClassifier,
        SGDClassifier,
        XGBClassifier,
        XGBRegressor,
    )

    X_c, Xt_c, y_c, _ = scaled_wine
    X_r, Xt_r, y_r, _ = scaled_diabetes
    cases = [
        (SGDClassifier(loss="log_loss", random_state=0), X_c, y_c, Xt_c),
        (RandomForestClassifier(n_estimators=3, max_depth=2, random_state=0), X_c, y_c, Xt_c),
        (RandomForestClassifier(n_estimators=3, max_depth=2, random_state=0, quantization="splits"), X_c, y_c, Xt_c),
        (XGBClassifier(n_estimators=3, max_depth=2), X_c, y_c, Xt_c),
        # 20 trees: the score comes back in binary digit planes the client adds up
        (RandomForestClassifier(n_estimators=20, max_depth=4, random_state=0), X_c, y_c, Xt_c),
        (PoissonRegressor(), X_r, y_r - y_r.min() + 1, Xt_r),
        (DecisionTreeRegressor(max_depth=2), X_r, y_r, Xt_r),
        (XGBRegressor(n_estimators=3, max_depth=2), X_r, y_r, Xt_r),
        (KNeighborsClassifier(), X_c[:60], y_c[:60], Xt_c),
        # two targets: the client divides each sum by the neighbour count, adds target_offset_
        (KNeighborsRegressor(), X_r[:60], np.column_stack([y_r, -y_r])[:60], Xt_r),
    ]
    for model, X, y, X_test in cases:
        model.fit(X, y)
        spec = ClientSpec.from_model(model)
        assert spec.inputs[0]["kind"] == ("bins" if getattr(model, "quantization", "") == "splits" else "uniform")
        assert ClientSpec.from_json(json.loads(json.dumps(spec.to_json()))).to_json() == spec.to_json()
        client_model = spec.build_model()
        assert not hasattr(client_model, "sklearn_model_")
        y_q = model.quantized_module_.quantized_forward(model.quantize_input(X_test))
        np.testing.assert_array_equal(client_model.quantize_input(X_test), model.quantize_input(X_test))
        y = client_model.dequantize_output(y_q)
        expected = model.predict_proba(X_test) if hasattr(model, "classes_") else model.predict(X_test)
        np.testing.assert_array_equal(client_model.output_from_dequantized(y), expected)
        if hasattr(model, "classes_"):
            np.testing.assert_array_equal(client_model.labels_from_dequantized(y), model.predict(X_test))

    # a tree's client sends the rank of each compared feature among its thresholds
    tree = DecisionTreeRegressor(max_depth=2, input_encoding="rank").fit(X_r, y_r)
    data = ClientSpec.from_model(tree).to_json()
    assert data["inputs"][0]["encoding"] == "threshold_rank"
    assert len(data["inputs"][0]["features"]) == tree.quantized_module_.quantize_input(X_r[:1]).shape[1]
    data["inputs"][0]["features"][0] = X_r.shape[1]
    with pytest.raises(ValueError, match="threshold ranks of an unknown feature"):
        ClientSpec.from_json(data).build_model()
    # with the unary layout (the default), a small tree's client sends 3 unary digits per feature; specs
    # written before that have no "digits" field and mean 2
    data = ClientSpec.from_model(DecisionTreeRegressor(max_depth=2, input_encoding="unary").fit(X_r, y_r)).to_json()
    assert data["inputs"][0]["encoding"] == "unary_digits" and data["inputs"][0]["digits"] == 3
    del data["inputs"][0]["digits"]
    assert ClientSpec.from_json(data).build_model().quantized_module_.input_quantizer.n_digits == 2
    data["inputs"][0]["digits"] = True
    with pytest.raises(ValueError, match="unary digits must be 2 or 3, got 'True'"):
        ClientSpec.from_json(data)


def test_public_deployment_api_is_documented():
    import inspect

    import fhe_sklearn.deployment as deployment

    missing = []
    for name in deployment.__all__:
        obj = getattr(deployment, name)
        if not inspect.isclass(obj):
            continue
        if not (obj.__doc__ or "").strip():
            missing.append(name)
        for member_name, member in inspect.getmembers(obj, lambda m: callable(m) or isinstance(m, property)):
            if not member_name.startswith("_") and not (member.__doc__ or "").strip():
                missing.append(f"{name}.{member_name}")
    assert not missing, missing
    for method in (deployment.FHEModelDev.save, deployment.FHEModelServer.load, deployment.FHEModelServer.run):
        assert "Returns\n        -------" in method.__doc__ and "Raises\n        ------" in method.__doc__

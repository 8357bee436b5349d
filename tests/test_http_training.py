"""Encrypted training on a real uvicorn server: the server chains the steps on ciphertexts,
the client resumes from the encrypted weights it got back, and decrypts exactly the
weights the same steps give in the clear."""

import httpx
import numpy as np
import pytest
from http_server_process import ServerProcess, ignore_sigpipe
from sklearn.datasets import make_classification
from sklearn.preprocessing import StandardScaler

from fhe_sklearn import SGDClassifier
from fhe_sklearn.deployment import FHEModelClient, FHEModelDev, HTTPTrainingClient
from fhe_sklearn.deployment.training import pack_training_request

NARROW = {"x_bits": 2, "weight_bits": 4, "forward_bits": 2, "score_bits": 3, "error_bits": 2}


def _replay(plan, x_codes, y_codes, v, rng, epochs):
    """The client's steps in the clear: same shuffles and dithers, in the same order."""
    B = plan.batch_size
    for _ in range(epochs):
        order = rng.permutation(len(x_codes))
        for start in range(0, len(x_codes) - B + 1, B):
            rows = order[start : start + B]
            v = plan.step(x_codes[rows], y_codes[rows], v, plan.draw_dither(rng))
    return v


@pytest.mark.fhe_execute
def test_training_over_http_is_exact_and_resumable(tmp_path):
    # one batch: a step per call, so the second call resumes from the first one's encrypted weights
    X, y = make_classification(n_samples=4, n_features=2, n_informative=2, n_redundant=0, random_state=0)
    X = StandardScaler().fit_transform(X)
    # narrow integers (at most 5 bits): 64 MB of keys instead of the default bits' 365 MB, which the
    # client generates and uploads and the server expands (the defaults' steps are exact in
    # test_encrypted_training's simulation)
    owner = SGDClassifier(
        fit_encrypted=True, parameters_range=(-4, 4), batch_size=4, max_iter=1, random_state=0, training_bits=NARROW
    )
    deployment = FHEModelDev(tmp_path / "deployment", owner.fit(X, y)).save(mode="training")
    with pytest.raises(ValueError, match="encrypted-training deployment"):
        FHEModelClient(deployment)
    # the worker compiles the step circuit when the server starts (~10 s idle, minutes on a busy machine)
    log = tmp_path / "server.log"
    server = ServerProcess(deployment, tmp_path / "server_keys", log, "--workers", "1", startup_s=600)
    ignore_sigpipe()
    try:
        assert httpx.get(f"{server.url}/info").json()["training"] is True
        client = HTTPTrainingClient(server.url, tmp_path / "client")
        client.fhe.rng = np.random.default_rng(0)
        first = client.train(X, y, epochs=1)  # a step on the server, weights encrypted throughout
        resumed = client.train(X, y, epochs=1, encrypted_weights=first)  # one more from where it stopped
        ignore_sigpipe()
        plan = client.fhe.plan
        x_codes, y_codes = plan.encode_features(X), y[:, None].astype(np.int64)
        expected = _replay(plan, x_codes, y_codes, np.zeros(plan.weight_shape, np.int64), np.random.default_rng(0), 2)
        assert np.any(expected)  # the steps moved the weights
        np.testing.assert_array_equal(client.fhe.decrypt_weights(resumed), expected)
        model = client.fhe.to_model(resumed, X)
        coef, intercept = plan.decode_weights(expected)
        np.testing.assert_allclose(model.coef_, coef)
        np.testing.assert_allclose(model.intercept_, intercept)
        assert model.predict(X).shape == (4,)

        auth = {"Authorization": f"Bearer {client.token}"}
        bad_step = httpx.post(
            f"{server.url}/train/{client.key_id}", content=pack_training_request(first, [b"x"]), headers=auth
        )
        assert bad_step.status_code == 400 and "step 0" in bad_step.json()["detail"]
        with pytest.raises(ValueError, match="outside the classes"):
            client.train(X, np.full(4, 5))
    finally:
        server.stop()


def test_composition_rules_of_a_server_file_are_checked():
    from fhe_sklearn.deployment.artifacts import check_composition

    assert check_composition(b"null", "server.zip") == []
    assert check_composition(b'[[["step", 0], ["step", 2]]]', "server.zip") == [("step", 0, "step", 2)]
    for bad in (b'[[["step", -1], ["step", 2]]]', b'{"py/object": "os.system"}', b'[[["step", 0]]]', b"[[[1, 0], 2]]"):
        with pytest.raises(ValueError, match="composition"):
            check_composition(bad, "server.zip")

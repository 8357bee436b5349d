"""Encrypted training across a client and a server.

``FHEModelDev(path, model).save(mode="training")`` saves the encrypted SGD step of a model set
up with ``fit_encrypted=True``: ``server.zip`` (the composable step) and ``client.json`` (the
:class:`~fhe_sklearn.training.plan.TrainingPlan`, classes, target scaling). Then:

- :class:`FHETrainingClient` (the data owner) generates keys, encrypts the initial weights and
  its batches (features, labels; the dither in the clear), decrypts the final weights and
  turns them into a fitted estimator;
- :class:`FHETrainingServer` chains the steps on ciphertexts: it sees encrypted features,
  labels and weights and the clear dither (uniform noise drawn independently of the data),
  never a key able to decrypt them. It learns the sizes: features, outputs, batch size,
  number of steps.

Training is resumable: the encrypted weights a server returned are sent back with more
batches for more epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .artifacts import CLIENT_FILE, SERVER_FILE, ServerArtifact, client_specs_bytes, read_client_file
from .client import restrict_permissions
from .model_server import FHEModelServer
from .paths import deployment_path
from .signing import check_key
from .wire import BATCH_MAGIC, TUPLE_MAGIC, is_packed, pack, unpack


def training_spec(model: Any) -> tuple[dict, Any]:
    """The client.json spec of a model's encrypted training, and its compiled step."""
    plan = getattr(model, "_training_plan", None)
    if plan is None or not getattr(model, "fit_encrypted", False):
        raise ValueError(
            "mode='training' saves the encrypted training of an SGDClassifier/SGDRegressor with "
            "fit_encrypted=True: fit (or partial_fit) it first, e.g. on a few rows of the same shape"
        )
    circuit = model.training_circuit()
    spec = {
        "training": plan.to_json(),
        "estimator": type(model).__name__,
        "n_features_in": plan.n_features,
        "classes": None if getattr(model, "classes_", None) is None else np.asarray(model.classes_).tolist(),
        "target_stats": list(getattr(model, "_target_stats", ())) or None,
        "params": {"n_bits": model.n_bits, "parameters_range": list(model.parameters_range)},
    }
    return spec, circuit


class FHETrainingClient:
    """The data owner's side of encrypted training: keys, encrypted batches and weights.

    Parameters
    ----------
    path : str or Path
        A training deployment (``FHEModelDev(...).save(mode="training")``).
    key_dir : str or Path, optional
        Where the keys are kept (0700/0600), as for :class:`FHEModelClient`.
    verify_key : bytes or str, optional
        Refuse an unsigned or otherwise signed deployment.
    feature_range : (array, array), optional
        Per-feature (low, high) of the feature codes, instead of the deployment's (which the
        server can read in ``client.json``): a client keeps its own data's range private.
    """

    def __init__(
        self,
        path: str | Path,
        key_dir: str | Path | None = None,
        *,
        verify_key: Any = None,
        feature_range: Any = None,
    ) -> None:
        from concrete import fhe

        from ..training.plan import TrainingPlan

        self.path = deployment_path(path, None)
        self.verify_key = verify_key if verify_key is None else check_key(verify_key)
        data = read_client_file(self.path, self.verify_key)
        client_file = self.path / CLIENT_FILE if self.path.is_dir() else self.path
        if (client_file.parent / SERVER_FILE).exists():
            ServerArtifact.read(client_file.parent / SERVER_FILE, self.verify_key).check_matches(data)
        spec = data["spec"]
        if not isinstance(spec, dict) or "training" not in spec:
            raise ValueError(f"{client_file} is not an encrypted-training deployment (save it with mode='training')")
        self.spec = spec
        plan_json = dict(spec["training"])
        if feature_range is not None:
            low, high = (np.asarray(v, dtype=np.float64).ravel() for v in feature_range)
            plan_json["center"], plan_json["half_range"] = ((low + high) / 2).tolist(), ((high - low) / 2).tolist()
        self.plan = TrainingPlan.from_json(plan_json)
        if spec.get("estimator") not in ("SGDClassifier", "SGDRegressor"):
            raise ValueError(f"{client_file}: unknown estimator {spec.get('estimator')!r}")
        self.key_dir = None if key_dir is None else Path(key_dir)
        if self.key_dir is not None:
            self.key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            specs = fhe.ClientSpecs.deserialize(client_specs_bytes(data))
        except (RuntimeError, ValueError, TypeError, KeyError):
            raise ValueError(f"{client_file}: malformed concrete client specs") from None
        self.client = fhe.Client(specs, keyset_cache_directory=self.key_dir)
        self.rng = np.random.default_rng()

    # -- keys ------------------------------------------------------------------------------------
    def generate_private_and_evaluation_keys(self, force: bool = False) -> None:
        """Generate the keys (or load them from ``key_dir``)."""
        self.client.keygen(force=force)
        if self.key_dir is not None:
            restrict_permissions(self.key_dir)

    def get_serialized_evaluation_keys(self) -> bytes:
        """The evaluation keys, for the server (uploaded once per key pair)."""
        return self.client.evaluation_keys.serialize()

    # -- encrypt ---------------------------------------------------------------------------------
    def _encrypt(self, *args: Any) -> tuple:
        values = self.client.encrypt(*args, function_name="step")
        return values if isinstance(values, tuple) else (values,)

    def encrypt_weights(self, coef: Any = None, intercept: Any = None) -> bytes:
        """The initial weights, encrypted: zeros by default, else ``coef`` (n_outputs,
        n_features) / ``intercept`` in the original feature space, inside parameters_range."""
        self.generate_private_and_evaluation_keys()
        plan = self.plan
        weights = np.zeros(plan.weight_shape)
        if coef is not None or intercept is not None:
            K, d = plan.n_outputs, plan.n_features
            coef = np.zeros((K, d)) if coef is None else np.asarray(coef, dtype=np.float64).reshape(K, d)
            intercept = np.zeros(K) if intercept is None else np.asarray(intercept, dtype=np.float64).reshape(K)
            stats = self.spec.get("target_stats")
            if stats:
                coef, intercept = coef / stats[1], (intercept - stats[0]) / stats[1]
            weights = np.vstack([coef.T * np.asarray(plan.half_range)[:, None], intercept + coef @ plan.center])
        return self._encrypt(None, None, plan.encode_weights(weights), None)[2].serialize()

    def _codes(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        plan = self.plan
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != plan.n_features:
            raise ValueError(f"X must have shape (n_samples, {plan.n_features}), got {X.shape}")
        if not np.all(np.isfinite(X)):
            raise ValueError("X contains NaN or infinite values")
        y = np.asarray(y).ravel()
        if len(y) != len(X):
            raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
        if len(X) < plan.batch_size:
            raise ValueError(f"need at least batch_size={plan.batch_size} rows, got {len(X)}")
        classes = self.spec.get("classes")
        if classes is not None:
            classes = np.asarray(classes)
            unknown = np.setdiff1d(np.unique(y), classes)
            if unknown.size:
                raise ValueError(f"y has labels {unknown.tolist()} outside the classes {classes.tolist()}")
            indicators = (y[:, None] == classes[None, :]).astype(np.int64)
            targets = indicators[:, 1:] if len(classes) == 2 else indicators
        else:
            y = y.astype(np.float64)
            if not np.all(np.isfinite(y)):
                raise ValueError("y contains NaN or infinite values")
            mean, scale = self.spec["target_stats"]
            targets = plan.encode_targets(((y - mean) / scale)[:, None])
        return plan.encode_features(X), targets

    def encrypt_epochs(self, X: Any, y: Any, epochs: int = 1, shuffle: bool = True) -> list[bytes]:
        """Encrypted steps over ``epochs`` passes of (X, y): one message per batch (features
        and labels encrypted, the dither in the clear), drawn with ``self.rng``."""
        x_codes, y_codes = self._codes(X, y)
        self.generate_private_and_evaluation_keys()
        plan, B, steps = self.plan, self.plan.batch_size, []
        for _ in range(epochs):
            order = self.rng.permutation(len(x_codes)) if shuffle else np.arange(len(x_codes))
            for start in range(0, len(x_codes) - B + 1, B):
                rows = order[start : start + B]
                x_enc, y_enc, _, u = self._encrypt(x_codes[rows], y_codes[rows], None, plan.draw_dither(self.rng))
                steps.append(pack([x_enc.serialize(), y_enc.serialize(), u.serialize()], TUPLE_MAGIC))
        return steps

    # -- decrypt ---------------------------------------------------------------------------------
    def decrypt_weights(self, encrypted_weights: bytes) -> np.ndarray:
        """The integer weights (rows: features then bias)."""
        from concrete import fhe

        try:
            value = fhe.Value.deserialize(bytes(encrypted_weights))
            clear = self.client.decrypt(value, function_name="step")
        except (RuntimeError, ValueError, TypeError):
            raise ValueError("malformed encrypted weights") from None
        return np.asarray(clear, dtype=np.int64).reshape(self.plan.weight_shape)

    def to_model(self, encrypted_weights: bytes, X: Any) -> Any:
        """A fitted estimator with the decrypted weights, quantized for prediction on ``X``
        (compile and predict it as any other)."""
        from .. import linear_model

        cls = getattr(linear_model, self.spec["estimator"])
        params = self.spec["params"]
        model = cls(
            fit_encrypted=True,
            parameters_range=tuple(params["parameters_range"]),
            batch_size=self.plan.batch_size,
            n_bits=params["n_bits"],
        )
        X = np.asarray(X, dtype=np.float64)
        model.n_features_in_ = X.shape[1]
        if self.spec.get("classes") is not None:
            model.classes_ = np.asarray(self.spec["classes"])
        if self.spec.get("target_stats"):
            model._target_stats = tuple(self.spec["target_stats"])
        model._training_plan, model.t_ = self.plan, 0
        model._training_weights = self.decrypt_weights(encrypted_weights)
        model._training_history = [model._training_weights]
        model._training_rng = np.random.default_rng()
        model._training_clip = False
        model._adopt_trained_weights(X)
        return model


class FHETrainingServer(FHEModelServer):
    """The server side of encrypted training: chains steps on ciphertexts.

    Parameters: as :class:`FHEModelServer` (a training deployment's directory).
    """

    def train(self, encrypted_weights: bytes, steps: list[bytes], evaluation_keys: Any) -> bytes:
        """The encrypted weights after every step of ``steps`` (what
        ``FHETrainingClient.encrypt_epochs`` returned), in order.

        Raises
        ------
        ValueError
            On a malformed step or weights (naming the step).
        """
        if self._circuit is None:
            raise RuntimeError("call load() first")
        if not isinstance(encrypted_weights, (bytes, bytearray)):
            raise TypeError("encrypted_weights must be bytes")
        keys = self.evaluation_keys(evaluation_keys)
        weights = bytes(encrypted_weights)
        for index, step in enumerate(steps):
            weights = self._run_row(pack_step(step, weights, index), keys, index)
        return weights


def pack_step(step: bytes, weights: bytes, index: int) -> bytes:
    """One circuit call's arguments (features, labels, weights, dither) from a client step
    message and the current encrypted weights."""
    if not isinstance(step, (bytes, bytearray)) or not is_packed(step, TUPLE_MAGIC):
        raise ValueError(f"step {index} is not an encrypted training step")
    parts = unpack(bytes(step), TUPLE_MAGIC, f"step {index}")
    if len(parts) != 3:
        raise ValueError(f"step {index} holds {len(parts)} values, expected 3 (features, labels, dither)")
    return pack([parts[0], parts[1], bytes(weights), parts[2]], TUPLE_MAGIC)


def pack_training_request(encrypted_weights: bytes, steps: list[bytes]) -> bytes:
    """The body of ``POST /train/{key_id}``: the weights, then the steps (batch framing)."""
    return pack([bytes(encrypted_weights), *steps], BATCH_MAGIC)


def unpack_training_request(body: bytes) -> tuple[bytes, list[bytes]]:
    """The encrypted weights and the steps of a ``POST /train`` body."""
    parts = unpack(body, BATCH_MAGIC)
    if len(parts) < 2:
        raise ValueError("a training request holds the encrypted weights and at least one step")
    return parts[0], parts[1:]


def _http_client_class() -> type:
    from .http_client import HTTPClient

    return HTTPClient


class HTTPTrainingClient(_http_client_class()):
    """Encrypted training on a remote ``fhe_sklearn serve`` of a training deployment
    (``POST /train/{key_id}``); same parameters as :class:`HTTPClient`.

    Examples
    --------
    >>> client = HTTPTrainingClient("http://127.0.0.1:8000", work_dir="client")  # doctest: +SKIP
    >>> weights = client.train(X, y, epochs=2)  # encrypted weights  # doctest: +SKIP
    >>> weights = client.train(X, y, epochs=1, encrypted_weights=weights)  # resumed  # doctest: +SKIP
    >>> model = client.fhe.to_model(weights, X)  # doctest: +SKIP
    """

    _client_class = FHETrainingClient

    def train(self, X: Any, y: Any, epochs: int = 1, encrypted_weights: bytes | None = None) -> bytes:
        """Run ``epochs`` epochs of encrypted SGD on the server, starting from
        ``encrypted_weights`` (default: zeros); returns the new encrypted weights."""
        if encrypted_weights is None:
            encrypted_weights = self.fhe.encrypt_weights()
        body = pack_training_request(encrypted_weights, self.fhe.encrypt_epochs(X, y, epochs))
        self._check_size(body, "max_batch_bytes", "training request")
        return self._post_with_keys("/train", body)

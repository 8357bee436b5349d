"""``fit_encrypted=True`` for SGDClassifier and SGDRegressor: SGD whose every step runs on
encrypted data, labels and weights (see :mod:`.plan` for the integers, :mod:`.circuit` for
the composable circuit).

What scikit-learn's SGD does that encrypted training does not: the loss cannot be read on
encrypted data, so ``early_stopping=True`` is refused and ``tol`` is not used (every call
runs ``max_iter`` epochs, as ``tol=None``); ``penalty``/``alpha`` are not applied (the weights
are bounded by ``parameters_range`` instead); the learning rate is constant
(``encrypted_learning_rate``, rounded to a power of two of the integer step); each epoch
runs ``n_samples // batch_size`` full batches (the remainder is left out of that epoch).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from ..quantization.module import FheMode, validate_fhe_mode
from .plan import DEFAULT_BITS, TrainingPlan, check_parameters_range

#: constructor parameters encrypted training adds, with their defaults
TRAINING_PARAMS: dict[str, Any] = {
    "fit_encrypted": False,
    "parameters_range": None,
    "batch_size": 8,
    "encrypted_learning_rate": None,
    "training_bits": None,
}


class EncryptedSGDMixin:
    """Encrypted training for the SGD wrappers (``fit_encrypted=True``).

    Parameters (beyond scikit-learn's and ``n_bits``/``input_range``)
    -----------------------------------------------------------------
    fit_encrypted : bool
        Train on encrypted data (``fit(X, y, fhe=...)``); False: scikit-learn's float fit.
    parameters_range : (float, float)
        Range of every weight and the bias during training (required; low < 0 < high).
    batch_size : int
        Rows per encrypted step.
    encrypted_learning_rate : float, optional
        Constant step size (default 0.5 for classifiers, 0.1 for regressors).
    training_bits : dict, optional
        Overrides of the training bit-widths: ``x_bits``, ``weight_bits``, ``forward_bits``,
        ``score_bits``, ``error_bits`` (see :class:`~fhe_sklearn.training.plan.TrainingPlan`).
    """

    _task: ClassVar[str]
    _encrypted_loss: ClassVar[str]
    _default_learning_rate: ClassVar[float]
    _default_training_bits: ClassVar[dict[str, Any]] = {}

    # -- checks ----------------------------------------------------------------------------------
    def _check_training_params(self) -> None:
        if self.parameters_range is None:
            raise ValueError("fit_encrypted=True needs parameters_range=(low, high), the range the weights live in")
        check_parameters_range(self.parameters_range)
        if self.loss != self._encrypted_loss:
            raise ValueError(
                f"encrypted training of {type(self).__name__} supports loss={self._encrypted_loss!r}, got {self.loss!r}"
            )
        if getattr(self, "early_stopping", False):
            raise ValueError(
                "early_stopping=True needs the loss on held-out data, which encrypted training cannot read: "
                "set early_stopping=False (every fit runs max_iter epochs)"
            )
        for name in ("class_weight", "average"):
            if getattr(self, name, None) not in (None, False):
                raise ValueError(f"{name} is not supported by encrypted training, got {getattr(self, name)!r}")
        if not self.fit_intercept:
            raise ValueError("encrypted training always fits an intercept: set fit_intercept=True")
        batch = self.batch_size
        if isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.training_bits is not None:
            unknown = set(self.training_bits) - set(DEFAULT_BITS) if isinstance(self.training_bits, dict) else None
            if unknown is None or unknown:
                raise ValueError(f"training_bits must be a dict with keys among {sorted(DEFAULT_BITS)}")

    # -- fit / partial_fit ----------------------------------------------------------------------
    def fit(
        self,
        X: Any,
        y: Any,
        fhe: str = "disable",
        coef_init: Any = None,
        intercept_init: Any = None,
        **fit_params: Any,
    ) -> Any:
        """Fit the model: in float (``fit_encrypted=False``, as scikit-learn), or by
        encrypted SGD with ``fhe`` = ``"disable"`` (the same integers in the clear),
        ``"simulate"`` or ``"execute"`` (real encryption; weights never decrypted between
        steps).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        fhe : {"disable", "simulate", "execute"}
        coef_init, intercept_init : array-like, optional
            Initial weights (in ``parameters_range``); default zeros.
        **fit_params : float fit only (e.g. ``sample_weight``).

        Returns
        -------
        self
        """
        mode = validate_fhe_mode(fhe)
        if not self.fit_encrypted:
            if mode is not FheMode.DISABLE:
                raise ValueError(f"fhe={mode.value!r} trains on encrypted data: set fit_encrypted=True")
            inits = {k: v for k, v in (("coef_init", coef_init), ("intercept_init", intercept_init)) if v is not None}
            return super().fit(X, y, **inits, **fit_params)
        if fit_params:
            raise ValueError(f"encrypted training does not support {sorted(fit_params)}")
        self._check_fhe_params()
        self._check_training_params()
        X, y = validate_data(self, X, y, dtype=np.float64, y_numeric=self._task == "regression")
        classes = np.unique(y) if self._task == "classification" else None
        self._start_training(X, y, classes, coef_init, intercept_init)
        self._train(X, y, self.max_iter, mode)
        return self

    @available_if(lambda self: self.fit_encrypted)
    def partial_fit(self, X: Any, y: Any, classes: Any = None, fhe: str = "disable") -> Any:
        """One more epoch of encrypted SGD over ``X`` (the first call sets the training up;
        classifiers need ``classes`` then, as in scikit-learn).

        Raises
        ------
        ValueError
            Labels outside the classes; features outside the
            range fixed by the first call.
        """
        mode = validate_fhe_mode(fhe)
        first = not hasattr(self, "_training_plan")
        if first and hasattr(self, "quantized_module_"):
            raise ValueError(
                "this model has no encrypted-training state (it was loaded from a file or fitted in float): "
                "call fit to train it"
            )
        self._check_fhe_params()
        self._check_training_params()
        X, y = validate_data(self, X, y, dtype=np.float64, reset=first, y_numeric=self._task == "regression")
        if first:
            if self._task == "classification":
                if classes is None:
                    raise ValueError("classes must be passed on the first call to partial_fit")
                classes = np.unique(np.asarray(classes))
            self._start_training(X, y, classes, None, None)
        elif classes is not None and not np.array_equal(np.unique(np.asarray(classes)), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the first call's {self.classes_!r}")
        self._train(X, y, 1, mode)
        return self

    # -- the training loop ------------------------------------------------------------------------
    def _start_training(self, X: np.ndarray, y: np.ndarray, classes: Any, coef_init: Any, intercept_init: Any) -> None:
        self.__dict__.pop("_training_plan", None)  # a new fit sets the training up again
        if classes is not None:
            if len(classes) < 2:
                raise ValueError(f"encrypted training needs at least 2 classes, got {len(classes)}")
            self.classes_ = classes
        low, high = self._input_bounds(X)
        half = np.where(high > low, (high - low) / 2, 1.0)
        bits = {**DEFAULT_BITS, **self._default_training_bits, **(self.training_bits or {})}
        extra = {}
        if self._task == "regression":
            mean, scale = float(np.mean(y)), float(np.std(y))
            self._target_stats = (mean, scale if scale > 0 else 1.0)
            extra["target_step"] = 0.5
        n_outputs = 1 if classes is None or len(classes) == 2 else len(classes)
        lr = self.encrypted_learning_rate if self.encrypted_learning_rate is not None else self._default_learning_rate
        plan = TrainingPlan(
            X.shape[1], n_outputs, int(self.batch_size), self._task, tuple(self.parameters_range), lr,
            (low + high) / 2, half, **extra, **bits,
        )  # fmt: skip
        weights = np.zeros(plan.weight_shape)
        if coef_init is not None or intercept_init is not None:
            weights = self._initial_weights(plan, coef_init, intercept_init)
        self._training_plan = plan
        self._training_weights = plan.encode_weights(weights)
        self._training_rng = np.random.default_rng(check_random_state(self.random_state).randint(0, 2**31 - 1))
        self._training_clip = not isinstance(self.input_range, str) and np.ndim(self.input_range) == 1
        self._training_history = []
        self.t_ = 0

    def _initial_weights(self, plan: TrainingPlan, coef_init: Any, intercept_init: Any) -> np.ndarray:
        """``coef_init``/``intercept_init`` (original feature space) → training weights."""
        d, K = plan.n_features, plan.n_outputs
        coef = np.zeros((K, d)) if coef_init is None else np.asarray(coef_init, dtype=np.float64).reshape(K, d)
        intercept = np.zeros(K) if intercept_init is None else np.asarray(intercept_init, dtype=np.float64).reshape(K)
        if self._task == "regression":
            mean, scale = self._target_stats
            coef, intercept = coef / scale, (intercept - mean) / scale
        half, center = np.asarray(plan.half_range), np.asarray(plan.center)
        w = coef.T * half[:, None]
        bias = intercept + coef @ center
        return np.vstack([w, bias[None, :]])

    def _targets(self, y: np.ndarray) -> np.ndarray:
        plan = self._training_plan
        if self._task == "regression":
            mean, scale = self._target_stats
            return plan.encode_targets(((y - mean) / scale)[:, None])
        unknown = np.setdiff1d(np.unique(y), self.classes_)
        if unknown.size:
            raise ValueError(f"y has labels {unknown.tolist()} outside the classes {self.classes_.tolist()}")
        indicators = (y[:, None] == self.classes_[None, :]).astype(np.int64)
        return indicators[:, 1:] if len(self.classes_) == 2 else indicators

    def _features(self, X: np.ndarray) -> np.ndarray:
        plan = self._training_plan
        if self._training_clip:  # percentile input_range: the tails are clipped (winsorized)
            center, half = np.asarray(plan.center), np.asarray(plan.half_range)
            X = np.clip(X, center - half, center + half)
        return plan.encode_features(X)

    def training_circuit(self, simulation: bool = False) -> Any:
        """The compiled step (:class:`~fhe_sklearn.training.circuit.TrainingCircuit`) of
        the current training plan, compiled on first use (``simulation=True``: the
        simulator only, what ``fhe="simulate"`` uses)."""
        from .circuit import TrainingCircuit

        if not hasattr(self, "_training_plan"):
            raise ValueError("no encrypted training set up: call fit(X, y, fhe=...) with fit_encrypted=True")
        cache = self.__dict__.setdefault("_training_circuits", {})
        cached = cache.get(simulation)
        if cached is None or cached.plan.to_json() != self._training_plan.to_json():
            cached = cache[simulation] = TrainingCircuit(self._training_plan, simulation=simulation)
        return cached

    def _train(self, X: np.ndarray, y: np.ndarray, epochs: int, mode: FheMode) -> None:
        plan = self._training_plan
        x_codes, y_codes = self._features(X), self._targets(y)
        B = plan.batch_size
        if len(x_codes) < B:
            raise ValueError(f"encrypted training needs at least batch_size={B} rows, got {len(x_codes)}")
        rng, v = self._training_rng, self._training_weights
        circuit = None if mode is FheMode.DISABLE else self.training_circuit(simulation=mode is FheMode.SIMULATE)
        v_enc = circuit.encrypt_weights(v) if mode is FheMode.EXECUTE else None
        for _ in range(epochs):
            order = rng.permutation(len(x_codes)) if self.shuffle else np.arange(len(x_codes))
            for start in range(0, len(x_codes) - B + 1, B):
                rows = order[start : start + B]
                u = plan.draw_dither(rng)
                if mode is FheMode.DISABLE:
                    v = plan.step(x_codes[rows], y_codes[rows], v, u)
                elif mode is FheMode.SIMULATE:
                    v = circuit.simulate(x_codes[rows], y_codes[rows], v, u)
                else:
                    x_enc, y_enc, u_clear = circuit.encrypt_batch(x_codes[rows], y_codes[rows], u)
                    v_enc = circuit.run(x_enc, y_enc, v_enc, u_clear)
                self.t_ += 1
            if mode is not FheMode.EXECUTE:
                self._training_history.append(v.copy())
        if mode is FheMode.EXECUTE:
            v = circuit.decrypt_weights(v_enc)
            self._training_history.append(v.copy())
        self._training_weights = v
        self._adopt_trained_weights(X)

    def _adopt_trained_weights(self, X: np.ndarray) -> None:
        """Set ``coef_``/``intercept_`` from the integer weights; quantize for prediction."""
        coef, intercept = self._training_plan.decode_weights(self._training_weights)
        model = self._sklearn_class(**self._sklearn_params())
        if self._task == "regression":
            mean, scale = self._target_stats
            model.coef_, model.intercept_ = coef[0] * scale, np.atleast_1d(intercept * scale + mean)
        else:
            model.coef_, model.intercept_, model.classes_ = coef, intercept, self.classes_
        model.n_features_in_ = X.shape[1]
        model.n_iter_ = len(self._training_history)
        model.t_ = float(self.t_)
        self._adopt_float_model(model, X, single_target=True)

    def training_weights_history(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(coef, intercept) after each epoch of the last fits (disable/simulate; execute:
        only the decrypted end of each call), in the original feature and target space."""
        check_is_fitted(self, "quantized_module_")
        out = []
        for v in getattr(self, "_training_history", []):
            coef, intercept = self._training_plan.decode_weights(v)
            if self._task == "regression":
                mean, scale = self._target_stats
                coef, intercept = coef * scale, intercept * scale + mean
            out.append((coef, intercept))
        return out

    def _input_bounds(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        plan = getattr(self, "_training_plan", None)
        if plan is None or not self.fit_encrypted:
            return super()._input_bounds(X)
        center, half = np.asarray(plan.center), np.asarray(plan.half_range)
        return center - half, center + half

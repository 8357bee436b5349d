"""The mixin every FHE estimator shares: fit in float → quantize → compile → predict."""

from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
from concrete import fhe
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from . import serialization
from .agreement import check_agreement
from .quantization import QuantizedModule
from .quantization.post_training import resolve_n_bits
from .serialization.allowed import register_estimator


class FHEEstimatorMixin:
    """Shared behaviour of fhe_sklearn estimators.

    A subclass names the float estimator it wraps in ``_sklearn_class``; its constructor
    then takes the same parameters plus ``n_bits`` (see ``__init_subclass__``). It lowers the
    fitted float model to a :class:`QuantizedModule` in ``_build_quantized_module``.

    Attributes
    ----------
    sklearn_model_ : estimator
        The fitted float model (also as ``sklearn_model``).
    quantized_module_ : QuantizedModule
        Its integer version, compiled by :meth:`compile`.
    """

    _sklearn_class: ClassVar[type[BaseEstimator]]
    #: keys of the ``n_bits`` dict form, and the default bit-width
    _n_bits_keys: ClassVar[tuple[str, ...]] = ("op_inputs", "op_weights")
    _default_n_bits: ClassVar[int] = 8
    #: constructor parameters beyond the float model's and n_bits, with their defaults
    _extra_params: ClassVar[dict[str, Any]] = {}
    #: None: as the float model; False where the FHE lowering supports one output only
    _multi_output: ClassVar[bool | None] = None
    #: float-model parameters whose default differs from scikit-learn's (documented per class)
    _default_overrides: ClassVar[dict[str, Any]] = {}
    #: fitted values (and parameters) a deployed client may see, with their types: what its
    #: post-processing reads. Merged along the class hierarchy (see deployment.ClientSpec)
    _client_attributes: ClassVar[dict[str, type]] = {}
    #: what to change when the quantized model departs from the float one (agreement check)
    _agreement_advice: ClassVar[str] = "Give it more bits (n_bits)."

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        register_estimator(cls)  # model files may name it if the package exports it
        if "_sklearn_class" in cls.__dict__ and "__init__" not in cls.__dict__:
            parameters = [
                p.replace(default=cls._default_overrides[p.name]) if p.name in cls._default_overrides else p
                for p in _float_parameters(cls._sklearn_class)
            ]
            cls._float_param_names = tuple(p.name for p in parameters)
            cls._float_takes_kwargs = _takes_kwargs(cls._sklearn_class)
            extra = {"n_bits": cls._default_n_bits, **cls._extra_params}
            cls.__init__ = _stored_params_init(cls._sklearn_class, parameters, extra, cls._float_takes_kwargs)

    #: whether the float class takes any keyword through ``**kwargs`` (xgboost, LightGBM);
    #: those the estimator is given beyond the named ones are kept in ``kwargs``
    _float_takes_kwargs: ClassVar[bool] = False

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Parameters of this estimator; for xgboost/LightGBM, the extra keywords too (as theirs)."""
        params = super().get_params(deep=deep)
        params.update(getattr(self, "kwargs", None) or {})
        return params

    def set_params(self, **params: Any) -> FHEEstimatorMixin:
        """Set parameters; a float class taking ``**kwargs`` takes any new keyword, as it does."""
        if self._float_takes_kwargs:
            named = super().get_params(deep=False)
            extra = {k: v for k, v in params.items() if k not in named and "__" not in k}
            if extra:
                self.kwargs = {**(getattr(self, "kwargs", None) or {}), **extra}
                params = {k: v for k, v in params.items() if k not in extra}
        return super().set_params(**params)

    # -- fitting -------------------------------------------------------------------------
    def _sklearn_params(self) -> dict[str, Any]:
        params = {k: v for k, v in self.get_params(deep=False).items() if k in self._float_param_names}
        return {**params, **(getattr(self, "kwargs", None) or {})}

    def fit(self, X: Any, y: Any, **fit_params: Any) -> FHEEstimatorMixin:
        """Fit the float model, then quantize it (calibrated on ``X``).

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        **fit_params : passed to the float model's ``fit``.

        Returns
        -------
        self
        """
        self._check_fhe_params()
        multi_output = self.__sklearn_tags__().target_tags.multi_output
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=multi_output, y_numeric=self._y_numeric())
        self._adopt_float_model(self._fit_float(X, y, **fit_params), X, single_target=np.ndim(y) == 1)
        return self

    @classmethod
    def from_sklearn_model(
        cls, sklearn_model: BaseEstimator, X: Any = None, n_bits: Any = None, **fhe_params: Any
    ) -> FHEEstimatorMixin:
        """Wrap an already-fitted float model; ``X`` calibrates the quantization.

        Parameters
        ----------
        sklearn_model : fitted estimator of type ``_sklearn_class``
        X : array-like of shape (n_samples, n_features)
            Representative data (e.g. the training set).
        n_bits : int or dict, optional
        **fhe_params
            The family's other quantization parameters (``input_range`` of linear models,
            ``quantization`` of trees).
        """
        unknown = sorted(set(fhe_params) - set(cls._extra_params))
        if unknown:
            raise TypeError(f"{cls.__name__}.from_sklearn_model got unexpected parameters {unknown}")
        if not isinstance(sklearn_model, cls._sklearn_class):
            raise TypeError(f"{cls.__name__} wraps {cls._sklearn_class.__name__}, got {type(sklearn_model).__name__}")
        check_is_fitted(sklearn_model)
        if X is None:
            raise ValueError(f"{cls.__name__}.from_sklearn_model needs X to calibrate the quantization")
        params = {
            k: v
            for k, v in sklearn_model.get_params(deep=False).items()
            if k in cls._float_param_names or cls._float_takes_kwargs
        }
        model = cls(**params, n_bits=cls._default_n_bits if n_bits is None else n_bits, **fhe_params)
        model._check_fhe_params()
        X = validate_data(model, X, dtype=np.float64)
        if X.shape[1] != sklearn_model.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, the model was fitted on {sklearn_model.n_features_in_}")
        single_target = np.ndim(getattr(sklearn_model, "coef_", np.zeros(1))) == 1 and (
            getattr(sklearn_model, "n_outputs_", 1) == 1
        )
        model._adopt_float_model(sklearn_model, X, single_target)
        return model

    def _adopt_float_model(self, sklearn_model: BaseEstimator, X: np.ndarray, single_target: bool) -> None:
        """Keep the fitted float model, copy its public attributes, quantize it on ``X``."""
        self.sklearn_model_ = sklearn_model
        self.single_target_ = single_target
        self._set_fitted_attributes()
        self.quantized_module_ = self._build_quantized_module(X)
        self._check_quantization_agreement(X)

    def _check_quantization_agreement(self, X: np.ndarray) -> None:
        """Warn (QuantizationAgreementWarning) when the integer model departs from the float
        model on the calibration data; the measure is kept as ``quantization_agreement_``."""
        self.quantization_agreement_ = check_agreement(self, X, self._agreement_advice)

    def _float_predict(self, X: np.ndarray) -> np.ndarray:
        """The float model's predictions, as ``predict`` returns them (same labels)."""
        return self.sklearn_model_.predict(X)

    def _check_fhe_params(self) -> None:
        """Raise a clear error on a bad quantization parameter before anything is fitted."""
        resolve_n_bits(self.n_bits, self._n_bits_keys)

    def _fit_float(self, X: np.ndarray, y: np.ndarray, **fit_params: Any) -> BaseEstimator:
        return self._sklearn_class(**self._sklearn_params()).fit(X, y, **fit_params)

    @property
    def sklearn_model(self) -> BaseEstimator:
        """The fitted float model (not kept by ``dump``/``load``)."""
        if hasattr(self, "sklearn_model_"):
            return self.sklearn_model_
        check_is_fitted(self, "quantized_module_")
        raise AttributeError("this model was loaded from a file: its float model was not saved")

    def dumps(self) -> str:
        """This fitted model as JSON (see :mod:`fhe_sklearn.serialization`)."""
        return serialization.dumps(self)

    def dump(self, file: Any) -> None:
        """Write this fitted model as JSON to a path or text file object."""
        serialization.dump(self, file)

    def __sklearn_tags__(self) -> Any:
        # target and input constraints are the float model's (multi-output, positive y...)
        tags = super().__sklearn_tags__()
        float_tags = self._sklearn_class(**self._sklearn_params()).__sklearn_tags__()
        tags.target_tags = float_tags.target_tags
        if self._multi_output is not None:
            tags.target_tags.multi_output = self._multi_output
        tags.input_tags.positive_only = float_tags.input_tags.positive_only
        return tags

    def _y_numeric(self) -> bool:
        return isinstance(self, FHERegressorMixin)

    def _set_fitted_attributes(self) -> None:
        """Copy what sklearn users read off a fitted model (classes_, coef_, ...)."""
        for name in ("classes_", "coef_", "intercept_", "n_iter_"):
            if getattr(self.sklearn_model_, name, None) is not None:
                setattr(self, name, getattr(self.sklearn_model_, name))

    def _build_quantized_module(self, X: np.ndarray) -> QuantizedModule:
        raise NotImplementedError

    # -- FHE -----------------------------------------------------------------------------
    def compile(
        self,
        X: Any,
        configuration: fhe.Configuration | None = None,
        show_mlir: bool = False,
        p_error: float | None = None,
        global_p_error: float | None = None,
        verbose: bool = False,
    ) -> fhe.Circuit:
        """Compile the quantized model to an FHE circuit, with ``X`` as the input set.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
            Representative inputs (e.g. the training set); at most 100 rows are traced.
        configuration : concrete.fhe.Configuration, optional
            concrete's options. Its ``p_error``/``global_p_error``, if set, are used.
        show_mlir : bool
            Print the circuit's MLIR during compilation.
        p_error : float, optional
            Error probability of each programmable bootstrap (PBS).
        global_p_error : float, optional
            Error probability of a whole circuit run. Without ``p_error`` or
            ``global_p_error`` (here or in ``configuration``), the model's default: ``1e-7``,
            k-NN ``1e-3`` (``fhe_sklearn.neighbors.KNN_GLOBAL_P_ERROR``).
        verbose : bool
            Print concrete's compilation details.

        Returns
        -------
        circuit : concrete.fhe.Circuit
            Also stored as ``fhe_circuit``.

        Raises
        ------
        ValueError
            If both ``p_error`` and ``global_p_error`` are set (arguments or configuration).
        """
        self.check_model_is_fitted()
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.quantized_module_.compile(
            X,
            configuration=configuration,
            p_error=p_error,
            global_p_error=global_p_error,
            verbose=verbose,
            show_mlir=show_mlir,
        )

    def bitwidth_and_range_report(self, X: Any = None) -> dict[str, dict[str, Any]]:
        """Integer range and bit-width of every value of the quantized model: the worst case
        and, with ``X``, those observed on it (see :meth:`QuantizedModule.bitwidth_and_range_report`)."""
        self.check_model_is_fitted()
        if X is None:
            return self.quantized_module_.bitwidth_and_range_report()
        return self.quantized_module_.bitwidth_and_range_report(validate_data(self, X, dtype=np.float64, reset=False))

    def circuit_report(self, measure_keys: bool = False) -> dict[str, Any]:
        """The compiled circuit's PBS by precision, encrypted matmuls, key sizes, complexity
        (see :meth:`QuantizedModule.circuit_report`)."""
        self.check_model_is_compiled()
        return self.quantized_module_.circuit_report(measure_keys)

    @property
    def fhe_circuit(self) -> fhe.Circuit | None:
        """The compiled concrete circuit, or None before :meth:`compile`."""
        module = getattr(self, "quantized_module_", None)
        return None if module is None else module.fhe_circuit

    @property
    def is_fitted(self) -> bool:
        """Whether the model is fitted (or wrapped, or loaded) and quantized."""
        return hasattr(self, "quantized_module_")

    @property
    def is_compiled(self) -> bool:
        """Whether the quantized model has a compiled FHE circuit in this process."""
        return self.fhe_circuit is not None

    def check_model_is_fitted(self) -> None:
        """Raise ``sklearn.exceptions.NotFittedError`` unless the model is fitted.

        Raises
        ------
        sklearn.exceptions.NotFittedError
        """
        if not self.is_fitted:
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(X, y) or from_sklearn_model(...) first"
            )

    def check_model_is_compiled(self) -> None:
        """Raise unless the model is fitted and compiled.

        Raises
        ------
        sklearn.exceptions.NotFittedError
            If the model is not fitted.
        RuntimeError
            If it is fitted but not compiled (in this process: circuits are not saved).
        """
        self.check_model_is_fitted()
        if not self.is_compiled:
            raise RuntimeError(f"this {type(self).__name__} is not compiled yet: call compile(X) first")

    def quantize_input(self, X: Any) -> np.ndarray:
        """Float rows → integer rows (client side, in the clear)."""
        check_is_fitted(self, "quantized_module_")
        return self.quantized_module_.quantize_input(validate_data(self, X, dtype=np.float64, reset=False))

    def dequantize_output(self, y_q: Any) -> np.ndarray:
        """Integer circuit output → float model output before post-processing."""
        check_is_fitted(self, "quantized_module_")
        return self.quantized_module_.dequantize_output(y_q)

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        """Clear-side step after de-quantization (link function, sigmoid/softmax...)."""
        return y

    def _inference(self, X: Any, fhe: str, n_jobs: int | None, backend: str | None = None) -> np.ndarray:
        """De-quantized circuit output for ``X`` (before post-processing)."""
        x_q = self.quantize_input(X)
        y_q = self.quantized_module_.quantized_forward(x_q, fhe=fhe, n_jobs=n_jobs, backend=backend)
        return self.dequantize_output(y_q)


class FHERegressorMixin(FHEEstimatorMixin):
    """Regressor behaviour: targets from the de-quantized circuit output."""

    _client_attributes: ClassVar[dict[str, type]] = {"single_target_": bool}

    def predict(self, X: Any, fhe: str = "disable", n_jobs: int | None = 1, backend: str | None = None) -> np.ndarray:
        """Predict targets; ``fhe`` is ``"disable"``, ``"simulate"`` or ``"execute"``.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        fhe : {"disable", "simulate", "execute"}
        n_jobs : int, optional
            Workers running encrypted rows in parallel (``"execute"`` only).
        backend : {"threads", "processes", "dask"}, optional
            Where encrypted rows run (``"execute"`` only): threads of this process (default),
            local processes, or the current ``distributed.Client``'s cluster; processes and
            Dask workers load the evaluation keys once each.

        Returns
        -------
        y : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        return self.output_from_dequantized(self._inference(X, fhe, n_jobs, backend))

    def output_from_dequantized(self, y: np.ndarray) -> np.ndarray:
        """``predict``'s result from de-quantized circuit outputs (client side)."""
        y = self.post_processing(y)
        # same shape as the float model's prediction: 1-D unless it was fitted on 2-D y
        return y.ravel() if self.single_target_ and y.shape[1] == 1 else y


class FHEClassifierMixin(FHEEstimatorMixin):
    """Classifier behaviour: labels, probabilities and scores decided in the clear."""

    _client_attributes: ClassVar[dict[str, type]] = {"classes_": np.ndarray}

    @property
    def n_classes_(self) -> int:
        """Number of classes (``len(classes_)``), as Concrete ML's classifiers expose it."""
        return len(self.classes_)

    @property
    def target_classes_(self) -> np.ndarray:
        """The class labels (``classes_``), under Concrete ML's name."""
        return self.classes_

    def _float_model_has_proba(self) -> bool:
        # e.g. SGDClassifier has predict_proba only for some losses; LinearSVC never
        return hasattr(self._sklearn_class(**self._sklearn_params()), "predict_proba")

    @available_if(lambda self: self._float_model_has_proba())  # late-bound: subclasses override it
    def predict_proba(
        self, X: Any, fhe: str = "disable", n_jobs: int | None = 1, backend: str | None = None
    ) -> np.ndarray:
        """Class probabilities: post-processing of the de-quantized scores, in the clear.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n_samples, n_features)
        fhe : {"disable", "simulate", "execute"}
        n_jobs : int, optional
            Workers running encrypted rows in parallel (``"execute"`` only).
        backend : {"threads", "processes", "dask"}, optional
            Where encrypted rows run (``"execute"`` only): threads of this process (default),
            local processes, or the current ``distributed.Client``'s cluster; processes and
            Dask workers load the evaluation keys once each.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
        """
        return self.post_processing(self._inference(X, fhe, n_jobs, backend))

    def _class_indices(self, scores: np.ndarray) -> np.ndarray:
        return np.argmax(self.post_processing(scores), axis=1)

    def output_from_dequantized(self, scores: np.ndarray) -> np.ndarray:
        """``predict_proba``'s result from de-quantized circuit outputs (client side); the
        scores themselves for models without probabilities (LinearSVC)."""
        if self._float_model_has_proba():
            return self.post_processing(scores)
        return scores.ravel() if scores.shape[1] == 1 else scores

    def labels_from_dequantized(self, scores: np.ndarray) -> np.ndarray:
        """``predict``'s result from de-quantized circuit outputs (client side)."""
        return self.classes_[self._class_indices(scores)]

    def predict(self, X: Any, fhe: str = "disable", n_jobs: int | None = 1, backend: str | None = None) -> np.ndarray:
        """Class labels, decided in the clear from the de-quantized circuit output (same
        parameters as ``predict_proba``)."""
        return self.labels_from_dequantized(self._inference(X, fhe, n_jobs, backend))  # checks fitted first


def _float_parameters(sklearn_class: type) -> list[inspect.Parameter]:
    """The float estimator's constructor parameters (from ``get_params`` when it takes **kwargs)."""
    parameters = [p for name, p in inspect.signature(sklearn_class.__init__).parameters.items() if name != "self"]
    if any(p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) for p in parameters):
        return [
            inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v)
            for k, v in sklearn_class().get_params().items()
        ]
    return parameters


def _takes_kwargs(sklearn_class: type) -> bool:
    parameters = inspect.signature(sklearn_class.__init__).parameters.values()
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _stored_params_init(
    sklearn_class: type, parameters: list[inspect.Parameter], extra: dict[str, Any], takes_kwargs: bool = False
) -> Any:
    """An ``__init__`` with the float estimator's parameters plus ``extra``, storing them as-is;
    with ``takes_kwargs``, any other keyword is kept in ``self.kwargs`` (as xgboost does),
    which exists only when there are such keywords."""
    parameters = parameters + [
        inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in extra.items()
    ]
    if takes_kwargs:
        parameters.append(inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD))
    signature = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *parameters])

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        for name, value in list(bound.arguments.items())[1:]:
            if name != "kwargs" or not takes_kwargs:
                setattr(self, name, value)
        if takes_kwargs and bound.arguments.get("kwargs"):  # as xgboost: only when given
            self.kwargs = dict(bound.arguments["kwargs"])

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    __init__.__doc__ = (
        f"Same parameters as ``{sklearn_class.__module__}.{sklearn_class.__name__}``, plus {list(extra)}."
    )
    return __init__

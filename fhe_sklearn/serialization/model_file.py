"""A fitted estimator ↔ the dict of its model file.

``class`` names a public estimator (see :mod:`.allowed`); ``params`` are plain values,
passed to its constructor and validated by the estimator's own checks; ``state`` holds the
fitted attributes, each known one checked for type and range (only ``quantized_module_``
may hold objects, only ``classes_`` and ``feature_names_in_`` strings). The model is
returned only once every field passed, after it predicted on two rows in the clear.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from sklearn.base import is_classifier

from .._version import __version__
from ..quantization.module import QuantizedModule
from ..quantization.quantizers import extreme_rows
from . import _json
from .allowed import estimator_class, estimator_names
from .objects import encode_object, rebuild_object
from .values import Decoder, encode, fail

FORMAT = "fhe_sklearn.model"
FORMAT_VERSION = 2

_ATTRIBUTE = re.compile(r"[a-z][a-z0-9_]*_")


def model_to_dict(model: Any) -> dict[str, Any]:
    """The model file of a fitted estimator, as a JSON-ready dict."""
    cls = type(model)
    if estimator_class(cls.__name__) is not cls:
        raise TypeError(f"only fhe_sklearn estimators are saved, not {cls.__module__}.{cls.__qualname__}")
    params = model.get_params(deep=False)
    state = {
        k: v for k, v in vars(model).items() if _ATTRIBUTE.fullmatch(k) and k != "sklearn_model_" and k not in params
    }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "class": cls.__name__,
        "params": {"__dict__": {k: _encode_field(f"parameter {k!r}", v) for k, v in params.items()}},
        "state": {k: _encode_field(f"attribute {k!r}", v, encode_object) for k, v in state.items()},
    }


def _encode_field(what: str, value: Any, encode_object: Callable[[Any], dict] | None = None) -> Any:
    try:
        return encode(value, encode_object)
    except TypeError as err:
        raise TypeError(f"{what} = {value!r}: {err}") from None


def model_from_dict(data: Any, check_depth: bool = True) -> Any:
    """The estimator of a model file's dict; ValueError naming the first malformed field.

    ``check_depth=False`` skips the nesting check for a dict :func:`._json.parse` returned.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a fhe_sklearn model file")
    if check_depth:
        _json.check_depth(data)
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"model file format version {data.get('format_version')!r}, this fhe_sklearn reads version {FORMAT_VERSION}"
        )
    if data.get("library_version") != __version__:
        raise ValueError(
            f"model saved by fhe_sklearn {data.get('library_version')!r}, this is {__version__}: "
            "re-fit or re-save it with this version"
        )
    unknown = sorted(set(data) - {"format", "format_version", "library_version", "class", "params", "state"})
    if unknown:
        fail("(top level)", f"unknown keys {unknown}")
    cls = estimator_class(data.get("class"))
    if cls is None:
        fail("class", f"{data.get('class')!r} is not a fhe_sklearn estimator; known: {estimator_names()}")
    model = _with_params(cls, data.get("params"))
    state = data.get("state")
    if not isinstance(state, dict):
        fail("state", "must be a JSON object of fitted attributes")
    for name, raw in state.items():
        setattr(model, name, _fitted_attribute(model, name, raw, f"state.{name}"))
    _check_fitted(model)
    return model


# -- constructor parameters ----------------------------------------------------------------
def _with_params(cls: type, raw: Any) -> Any:
    params = Decoder()(raw, "params")
    if not isinstance(params, dict):
        fail("params", "must be a dict of constructor parameters")
    valid = cls().get_params(deep=False)
    unknown = sorted(set(params) - set(valid))
    if getattr(cls, "_float_takes_kwargs", False):  # xgboost/LightGBM take any keyword, as their float classes
        unknown = [k for k in unknown if not (isinstance(k, str) and k.isidentifier())]
    if unknown:
        fail("params", f"{cls.__name__} has no parameter(s) {unknown}")
    model = cls(**params)
    try:
        model._check_fhe_params()
        if hasattr(cls, "_sklearn_class"):
            float_model = cls._sklearn_class(**model._sklearn_params())
            if hasattr(float_model, "_parameter_constraints"):
                float_model._validate_params()
    except (ValueError, TypeError) as err:
        fail("params", str(err))
    return model


# -- fitted attributes ---------------------------------------------------------------------
def _numeric(value: Any, path: str) -> None:
    if not isinstance(value, (int, float, np.ndarray)) or isinstance(value, bool):
        fail(path, f"must be a number or a numeric array, got {type(value).__name__}")


def _finite(value: Any, path: str) -> None:
    _numeric(value, path)
    if not np.all(np.isfinite(value)):
        fail(path, "must be finite")


def _positive_finite(value: Any, path: str) -> None:
    _finite(value, path)
    if not np.all(np.asarray(value) > 0):
        fail(path, "must be positive")


def _positive_int(value: Any, path: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        fail(path, f"must be a positive integer, got {value!r}")


def _boolean(value: Any, path: str) -> None:
    if not isinstance(value, bool):
        fail(path, f"must be true or false, got {value!r}")


def _labels(value: Any, path: str) -> None:
    if not isinstance(value, np.ndarray) or value.ndim != 1 or len(value) < 1:
        fail(path, "must be a 1-D array of labels")
    if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
        fail(path, "labels must be finite")
    if len(np.unique(value)) != len(value):
        fail(path, "labels must be distinct")


def _link(value: Any, path: str) -> None:
    if value not in ("log", "identity"):
        fail(path, f"must be 'log' or 'identity', got {value!r}")


def _module(value: Any, path: str) -> None:
    if not isinstance(value, QuantizedModule):
        fail(path, f"must be a QuantizedModule, got {type(value).__name__}")


#: fitted attribute → (checker, decoder); any other attribute may hold plain values only
_FITTED: dict[str, tuple[Callable[[Any, str], None], Decoder]] = {
    "quantized_module_": (_module, Decoder(rebuild_object)),
    "classes_": (_labels, Decoder(strings=True)),
    "feature_names_in_": (_labels, Decoder(strings=True)),
    "n_features_in_": (_positive_int, Decoder()),
    "single_target_": (_boolean, Decoder()),
    "coef_": (_numeric, Decoder()),
    "intercept_": (_numeric, Decoder()),
    "n_iter_": (_numeric, Decoder()),
    "link_": (_link, Decoder()),
    "n_averaged_": (_positive_int, Decoder()),
    "base_margin_": (_finite, Decoder()),
    "output_bias_": (_finite, Decoder()),
    "y_mean_": (_finite, Decoder()),
    "y_scale_": (_positive_finite, Decoder()),
    "target_offset_": (_finite, Decoder()),
}


def _fitted_attribute(model: Any, name: str, raw: Any, path: str) -> Any:
    if not _ATTRIBUTE.fullmatch(name) or name == "sklearn_model_" or name in model.get_params(deep=False):
        fail(path, "not a fitted attribute name (lowercase, ending with '_')")
    if hasattr(type(model), name):
        fail(path, f"cannot overwrite {type(model).__name__}.{name}")
    check, decoder = _FITTED.get(name, (None, Decoder()))
    value = decoder(raw, path)
    if check is not None:
        check(value, path)
    return value


def _check_fitted(model: Any) -> None:
    """Required attributes, their agreement, and two predictions in the clear."""
    for name in ("quantized_module_", "n_features_in_", "single_target_"):
        if not hasattr(model, name):
            fail(f"state.{name}", "missing")
    module = model.quantized_module_
    if module.n_inputs != 1 or module.n_outputs != 1 or len(module.input_shapes[0]) != 1:
        fail("state.quantized_module_", "an estimator's integer graph has one 1-D input and one output")
    if module.n_features_in != model.n_features_in_:
        fail("state.n_features_in_", f"is {model.n_features_in_}, the integer graph takes {module.n_features_in}")
    names = getattr(model, "feature_names_in_", None)
    if names is not None and len(names) != model.n_features_in_:
        fail("state.feature_names_in_", f"{len(names)} names for {model.n_features_in_} features")
    if is_classifier(model) and not hasattr(model, "classes_"):
        fail("state.classes_", "missing")
    if not module.ops:  # a client's view: no integer graph to run
        return
    quantizer = module.input_quantizer
    # an encoding quantizer (unary digits) sends more integers than the features
    (width,) = getattr(quantizer, "encoded_shape", lambda s: s)(module.input_shapes[0])
    x_q = extreme_rows(quantizer, (width,))
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")  # e.g. exp overflow of a log link at the extremes
            model.quantize_input(np.zeros((1, model.n_features_in_)))  # the input grid fits the features
            scores = model.dequantize_output(module.quantized_forward(x_q))
            model.output_from_dequantized(scores)
            if is_classifier(model):
                model.classes_[model._class_indices(scores)]
    except Exception as err:  # any failure means fields that do not fit together
        fail("state", f"the fitted attributes do not fit the integer graph ({type(err).__name__}: {err})")

"""JSON serialization of fitted estimators (no pickle): ``model.dump(file)``, ``model.dumps()``,
``fhe_sklearn.load(file)``, ``fhe_sklearn.loads(text)``.

What is saved: the constructor parameters, the fitted public attributes (``classes_``,
``quantized_module_``, ...) and the quantized model in full, so a loaded model predicts exactly
as the saved one with ``fhe="disable"``/``"simulate"`` and can be compiled again. The float
model is not saved (``sklearn_model`` is unavailable after loading) and no compiled circuit or
key is. Only classes of this library are rebuilt, without running their constructors.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import IO, Any

import numpy as np

from ._version import __version__

FORMAT = "fhe_sklearn.model"
FORMAT_VERSION = 1


def encode(value: Any) -> Any:
    """A JSON-ready form of ``value`` (arrays, tuples, non-str-keyed dicts, library objects)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            return {"__object_array__": [encode(v) for v in value.ravel()], "shape": list(value.shape)}
        return {"__ndarray__": value.tolist(), "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, (list, tuple)):
        items = [encode(v) for v in value]
        return items if isinstance(value, list) else {"__tuple__": items}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: encode(v) for k, v in value.items()}}
        return {"__items__": [[encode(k), encode(v)] for k, v in value.items()]}
    cls = type(value)
    if cls.__module__.split(".")[0] == "fhe_sklearn":
        state = value.__getstate__() if hasattr(value, "__getstate__") else vars(value)
        return {"__object__": f"{cls.__module__}.{cls.__qualname__}", "state": encode(dict(state))}
    raise TypeError(f"cannot serialize a {cls.__module__}.{cls.__qualname__} to JSON")


def decode(value: Any) -> Any:
    """Inverse of :func:`encode`."""
    if isinstance(value, list):
        return [decode(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "__ndarray__" in value:
        return np.asarray(value["__ndarray__"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    if "__object_array__" in value:
        out = np.empty(len(value["__object_array__"]), dtype=object)
        out[:] = [decode(v) for v in value["__object_array__"]]
        return out.reshape(value["shape"])
    if "__tuple__" in value:
        return tuple(decode(v) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: decode(v) for k, v in value["__dict__"].items()}
    if "__items__" in value:
        return {decode(k): decode(v) for k, v in value["__items__"]}
    if "__object__" in value:
        cls = _library_class(value["__object__"])
        obj = cls.__new__(cls)
        state = decode(value["state"])
        if hasattr(obj, "__setstate__"):
            obj.__setstate__(state)
        else:
            obj.__dict__.update(state)
        return obj
    raise ValueError(f"unknown JSON object in a fhe_sklearn file: keys {sorted(value)}")


def _library_class(path: str) -> type:
    module_name, _, name = path.rpartition(".")
    if module_name.split(".")[0] != "fhe_sklearn":
        raise ValueError(f"refusing to load {path!r}: only fhe_sklearn classes are rebuilt")
    return getattr(importlib.import_module(module_name), name)


def model_to_dict(model: Any) -> dict[str, Any]:
    """A fitted estimator as a JSON-ready dict (format, versions, parameters, fitted state)."""
    state = {
        k: v
        for k, v in vars(model).items()
        if k.endswith("_") and not k.startswith("_") and k != "sklearn_model_" and k not in model.get_params()
    }
    cls = type(model)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "params": encode(model.get_params(deep=False)),
        "state": encode(state),
    }


def model_from_dict(data: Any) -> Any:
    """The estimator :func:`model_to_dict` describes; a ValueError on another format or version."""
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError("not a fhe_sklearn model file")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"model file format version {data.get('format_version')!r}, this fhe_sklearn reads version {FORMAT_VERSION}"
        )
    if data.get("library_version") != __version__:
        raise ValueError(
            f"model saved by fhe_sklearn {data.get('library_version')!r}, this is {__version__}: "
            "re-fit or re-save it with this version"
        )
    try:
        model = _library_class(data["class"])(**decode(data["params"]))
        for name, value in decode(data["state"]).items():
            setattr(model, name, value)
    except (KeyError, TypeError, AttributeError, ImportError) as err:
        raise ValueError(f"corrupted fhe_sklearn model file: {err}") from err
    return model


def dumps(model: Any) -> str:
    """The fitted ``model`` as a JSON string."""
    return json.dumps(model_to_dict(model))


def loads(text: str | bytes) -> Any:
    """A model from :func:`dumps` output. Raises ValueError on a wrong version or bad file."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"not a fhe_sklearn model file (invalid JSON: {err})") from err
    return model_from_dict(data)


def dump(model: Any, file: str | Path | IO[str]) -> None:
    """Write the fitted ``model`` as JSON to a path or a text file object."""
    if isinstance(file, (str, Path)):
        Path(file).write_text(dumps(model))
    else:
        file.write(dumps(model))


def load(file: str | Path | IO[str]) -> Any:
    """Read a model written by :func:`dump`."""
    text = Path(file).read_text() if isinstance(file, (str, Path)) else file.read()
    return loads(text)

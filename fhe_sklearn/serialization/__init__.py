"""JSON model files (no pickle): ``model.dump(file)``, ``model.dumps()``,
``fhe_sklearn.load(file)``, ``fhe_sklearn.loads(text)``.

What is saved: the constructor parameters, the fitted public attributes (``classes_``,
``quantized_module_``, ...) and the quantized model in full (integer weights, scales, zero
points, lookup tables), so a loaded model predicts exactly as the saved one with
``fhe="disable"``/``"simulate"`` and can be compiled again. The float model (for a neural
network: the skorch/torch network) is not saved, nor is any compiled circuit or key.

Loading is safe for a file from anyone: it names only allowed classes (the public
estimators at the top level, quantization objects inside: :mod:`.allowed`), every object
is rebuilt through its constructor and checked (:mod:`.objects`, :mod:`.model_file`), the
text is bounded in size and nesting, arrays are numeric and their shapes match their data
(:mod:`.values`). A malformed field raises a ValueError naming it; nothing is returned or
run before the whole file passed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from ._json import MAX_DEPTH, MAX_FILE_BYTES, parse
from .model_file import FORMAT, FORMAT_VERSION, model_from_dict, model_to_dict
from .values import Decoder, encode

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "decode",
    "dump",
    "dumps",
    "encode",
    "load",
    "loads",
    "model_from_dict",
    "model_to_dict",
]


def decode(value: Any) -> Any:
    """Inverse of :func:`encode` for plain values (numbers, strings, arrays, containers)."""
    return Decoder(strings=True)(value, "value")


def dumps(model: Any) -> str:
    """The fitted ``model`` as a JSON string."""
    return json.dumps(model_to_dict(model))


def loads(text: str | bytes, max_bytes: int = MAX_FILE_BYTES) -> Any:
    """A model from :func:`dumps` output.

    Parameters
    ----------
    text : str or bytes
    max_bytes : int, default=256 MiB
        Larger texts are refused before parsing.

    Raises
    ------
    ValueError
        On a wrong version, a file over the limits, or any malformed field (named).
    """
    return model_from_dict(parse(text, max_bytes), check_depth=False)


def dump(model: Any, file: str | Path | IO[str]) -> None:
    """Write the fitted ``model`` as JSON to a path or a text file object."""
    if isinstance(file, (str, Path)):
        Path(file).write_text(dumps(model))
    else:
        file.write(dumps(model))


def load(file: str | Path | IO[str] | IO[bytes], max_bytes: int = MAX_FILE_BYTES) -> Any:
    """Read a model written by :func:`dump` from a path or file object (see :func:`loads`)."""
    if isinstance(file, (str, Path)):
        size = Path(file).stat().st_size
        if size > max_bytes:
            raise ValueError(f"model file {file} of {size} bytes is over the {max_bytes}-byte limit")
        with open(file, "rb") as handle:
            text = handle.read(max_bytes + 1)
    else:
        text = file.read(max_bytes + 1)
    return loads(text, max_bytes)

"""Concrete ML's ``path_dir`` keyword beside fhe_sklearn's positional ``path``."""

from __future__ import annotations

from pathlib import Path


def deployment_path(path: str | Path | None, path_dir: str | Path | None) -> Path:
    """The one deployment path given as ``path`` or ``path_dir``.

    Raises
    ------
    TypeError
        If neither or both are given, or the path is not a str or Path.
    """
    if (path is None) == (path_dir is None):
        raise TypeError("give the deployment directory as path or as path_dir (exactly one)")
    value = path if path is not None else path_dir
    if not isinstance(value, (str, Path)):
        raise TypeError(f"the deployment path must be a str or Path, got {type(value).__name__}")
    return Path(value)

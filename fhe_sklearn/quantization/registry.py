"""The op registry: every quantized op type by name, the extension point of the graph.

Lowerings, importers of foreign graphs (ONNX) and new estimators create ops by type
through :class:`~fhe_sklearn.quantization.graph.GraphBuilder`, which looks them up here. A new
op is one class with a unique ``op_type``, decorated with :func:`register_op`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from .base_op import QuantizedOp

#: op type name → op class
OP_REGISTRY: dict[str, type[QuantizedOp]] = {}


def register_op(cls: type[QuantizedOp]) -> type[QuantizedOp]:
    """Class decorator: make ``cls`` available to graph builders under ``cls.op_type``.

    Raises
    ------
    ValueError
        If another class already holds that op type.
    """
    op_type = cls.__dict__.get("op_type")
    if not op_type:
        raise ValueError(f"{cls.__name__} needs its own op_type class attribute to be registered")
    known = OP_REGISTRY.get(op_type)
    if known is not None and known is not cls:
        raise ValueError(f"op type {op_type!r} is already registered by {known.__name__}")
    OP_REGISTRY[op_type] = cls
    return cls


def op_class(op_type: str) -> type[QuantizedOp]:
    """The class registered for ``op_type`` (a clear error listing the known types if none)."""
    try:
        return OP_REGISTRY[op_type]
    except (KeyError, TypeError):
        raise ValueError(f"unknown op type {op_type!r}; registered: {sorted(OP_REGISTRY)}") from None

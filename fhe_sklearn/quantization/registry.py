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


#: ONNX op type → a user's QuantizedOp subclass naming it in ``_impl_for_op_named`` (the
#: custom-op API of Concrete ML's quantization guide); the ONNX import uses it instead of the
#: built-in conversion of that op type
CUSTOM_ONNX_OPS: dict[str, type] = {}


def register_custom_onnx_op(cls: type) -> type:
    """Make ``cls`` the implementation of the ONNX op ``cls._impl_for_op_named`` (done when a
    ``QuantizedOp`` subclass sets that attribute).

    A class of the same module and name replaces its earlier definition (a re-run notebook
    cell); any other class already registered for the op is an ambiguity.

    Raises
    ------
    ValueError
        If another user class already implements that ONNX op.
    """
    name = cls.__dict__["_impl_for_op_named"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__}._impl_for_op_named must name an ONNX op type, got {name!r}")
    known = CUSTOM_ONNX_OPS.get(name)
    if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(
            f"ONNX op {name!r} already has the custom implementation {known.__module__}.{known.__qualname__}; "
            f"{cls.__module__}.{cls.__qualname__} would make the choice ambiguous. Call "
            f"fhe_sklearn.quantization.unregister_custom_op({name!r}) first to replace it"
        )
    CUSTOM_ONNX_OPS[name] = cls
    return cls


def unregister_custom_op(op: str | type) -> type | None:
    """Forget the custom implementation of an ONNX op (by op type or class): the import goes
    back to the built-in conversion. Returns the class that was registered, or None."""
    name = op if isinstance(op, str) else getattr(op, "_impl_for_op_named", None)
    known = CUSTOM_ONNX_OPS.get(name)
    if known is None or (not isinstance(op, str) and known is not op):
        return None
    return CUSTOM_ONNX_OPS.pop(name)


def custom_onnx_op(op_type: str) -> type | None:
    """The user class implementing ONNX ``op_type``, if one is registered."""
    return CUSTOM_ONNX_OPS.get(op_type)

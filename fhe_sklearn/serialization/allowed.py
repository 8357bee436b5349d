"""The only classes a model file may name: the public estimators (at the top level) and the
quantization objects (inside). Functions, CLI entry points, skorch/torch classes and
anything else are refused, whatever module they live in."""

from __future__ import annotations

from typing import Any

#: every estimator class, registered as it is defined (FHEEstimatorMixin.__init_subclass__)
_REGISTERED: set[type] = set()


def register_estimator(cls: type) -> type:
    """Mark ``cls`` as an estimator class; a file may name it if the package exports it."""
    _REGISTERED.add(cls)
    return cls


def estimator_names() -> list[str]:
    """The public estimators' names, from the package's exports (nothing is imported)."""
    import fhe_sklearn

    return sorted(name for name in fhe_sklearn.__all__ if name[0].isupper())


def estimator_class(name: Any) -> type | None:
    """The public estimator called ``name`` (its family imported on demand), or None."""
    if not isinstance(name, str) or name not in estimator_names():
        return None
    import fhe_sklearn

    cls = getattr(fhe_sklearn, name)
    return cls if cls in _REGISTERED else None


def op_classes() -> dict[str, type]:
    """Quantized ops a saved integer graph may hold: the op registry, by ``op_type``.

    A family registers its own ops (e.g. ``KSmallestMask``) when imported, which naming
    its estimator at the top of the file does first."""
    from ..quantization.registry import OP_REGISTRY

    return dict(OP_REGISTRY)


def quantization_classes() -> dict[str, type]:
    """Every class an object inside a model file may be: quantizers, specs and module by
    class name, ops by their registered ``op_type``."""
    from ..quantization.base_op import TensorSpec
    from ..quantization.bins import ThresholdBinQuantizer
    from ..quantization.module import QuantizedModule
    from ..quantization.norm import SquaredNormEncoder
    from ..quantization.quantizers import MinMaxQuantizationStats, QuantizationOptions, UniformQuantizer
    from ..quantization.rank import ThresholdRankQuantizer
    from ..quantization.unary import UnaryDigitQuantizer

    classes = (
        QuantizationOptions,
        MinMaxQuantizationStats,
        UniformQuantizer,
        ThresholdBinQuantizer,
        UnaryDigitQuantizer,
        ThresholdRankQuantizer,
        SquaredNormEncoder,
        TensorSpec,
        QuantizedModule,
    )
    return {**op_classes(), **{cls.__name__: cls for cls in classes}}


def object_name(value: object) -> str | None:
    """The name ``value``'s class has in a model file, or None if it may not be saved."""
    cls = type(value)
    name = getattr(cls, "op_type", None) or cls.__name__
    return name if quantization_classes().get(name) is cls else None

"""The only classes a model file may name: the public estimators (at the top level) and the
quantization objects (inside). Functions, CLI entry points, skorch/torch classes and
anything else are refused, whatever module they live in."""

from __future__ import annotations

from functools import cache


@cache
def estimators() -> dict[str, type]:
    """Public estimators by class name, from each family's ``__all__``."""
    import importlib.util

    from .. import ensemble, glm, linear_model, neighbors, neural_net, svm, tree, xgb

    families = [linear_model, glm, svm, tree, ensemble, xgb, neural_net, neighbors]
    if importlib.util.find_spec("lightgbm") is not None:  # an optional extra
        from .. import lgbm

        families.append(lgbm)
    from ..base import FHEEstimatorMixin

    public = {name: getattr(module, name) for module in families for name in module.__all__}
    # a family may also export its ops or helpers: only estimator classes may head a file
    return {name: obj for name, obj in public.items() if isinstance(obj, type) and issubclass(obj, FHEEstimatorMixin)}


def op_classes() -> dict[str, type]:
    """Quantized ops a saved integer graph may hold: the op registry, by ``op_type``."""
    from ..quantization.registry import OP_REGISTRY

    estimators()  # importing every family registers its own ops (e.g. KSmallestMask)

    return dict(OP_REGISTRY)


def quantization_classes() -> dict[str, type]:
    """Every class an object inside a model file may be: quantizers, specs and module by
    class name, ops by their registered ``op_type``."""
    from ..quantization.base_op import TensorSpec
    from ..quantization.bins import ThresholdBinQuantizer
    from ..quantization.module import QuantizedModule
    from ..quantization.quantizers import MinMaxQuantizationStats, QuantizationOptions, UniformQuantizer
    from ..quantization.unary import UnaryDigitQuantizer

    classes = (
        QuantizationOptions,
        MinMaxQuantizationStats,
        UniformQuantizer,
        ThresholdBinQuantizer,
        UnaryDigitQuantizer,
        TensorSpec,
        QuantizedModule,
    )
    return {**op_classes(), **{cls.__name__: cls for cls in classes}}


def object_name(value: object) -> str | None:
    """The name ``value``'s class has in a model file, or None if it may not be saved."""
    cls = type(value)
    name = getattr(cls, "op_type", None) or cls.__name__
    return name if quantization_classes().get(name) is cls else None

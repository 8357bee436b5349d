"""Quantization objects in a model file: saved as their attributes, rebuilt through their
constructors, then checked as a whole graph.

Rebuilding an allowed class (see :mod:`.allowed`): the fields named like constructor
parameters go to the constructor, which validates them (bit-widths, scales...); the other
fields are calibration results set afterwards. A field may not start with ``_`` nor shadow
a method or property of the class, and a value the constructor derived itself must match
the file's. A :class:`QuantizedModule` is then checked as a graph: every op reads the spec
its producer writes, every integer fits 16 bits, and the graph runs on the extremes of its
input range.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from typing import Any

import numpy as np

from ..quantization.base_op import QuantizedOp, TensorSpec
from ..quantization.bins import ThresholdBinQuantizer
from ..quantization.module import QuantizedModule
from ..quantization.norm import SquaredNormEncoder
from ..quantization.quantizers import UniformQuantizer, extreme_rows, random_rows
from ..quantization.rank import ThresholdRankQuantizer
from ..quantization.unary import UnaryDigitQuantizer
from .allowed import object_name, quantization_classes
from .values import Decoder, encode, fail

#: arrays inside an integer graph are at most 2-D (so running it on two rows stays small)
MAX_GRAPH_ARRAY_DIMS = 2
#: elements of one sample of a module input (the check runs the graph on two such rows)
MAX_INPUT_ELEMENTS = 2**18
#: what a module input may be quantized with
QUANTIZERS = (UniformQuantizer, ThresholdBinQuantizer, UnaryDigitQuantizer, ThresholdRankQuantizer, SquaredNormEncoder)
#: rows the check runs the graph on: the two extremes of the input range and random ones
CHECK_ROWS = 18


def encode_object(value: Any) -> dict:
    """``{"__object__": name, "fields": {...}}`` of an allowed quantization object."""
    cls = type(value)
    name = object_name(value)
    if name is None:
        raise TypeError(f"cannot save a {cls.__module__}.{cls.__qualname__} in a model file")
    state = value.__getstate__() if "__getstate__" in vars(cls) else vars(value)
    return {"__object__": name, "fields": {k: encode(v, encode_object) for k, v in state.items()}}


def rebuild_object(name: str, fields: dict, path: str, decoder: Decoder) -> Any:
    """The allowed object ``name`` from its file ``fields`` (see the module docstring)."""
    cls = quantization_classes().get(name)
    if cls is None:
        fail(path, f"class {name!r} is not allowed in a model file; allowed: {sorted(quantization_classes())}")
    values = {}
    for key, raw in fields.items():
        _check_field_name(cls, key, f"{path}.{key}")
        values[key] = decoder(raw, f"{path}.{key}")
    if cls is QuantizedModule:
        values = _module_arguments(values, path)
    parameters = _constructor_parameters(cls)
    missing = [p.name for p in parameters if p.default is p.empty and p.name not in values]
    if missing:
        fail(path, f"{name} needs the field(s) {missing}")
    kwargs = {p.name: values.pop(p.name) for p in parameters if p.name in values}
    if issubclass(cls, QuantizedOp):
        _check_op_names(kwargs, path)
    try:
        obj = cls(**kwargs)
    except Exception as err:  # constructors of allowed classes have no side effect
        fail(path, f"{name}: {err}")
    for key, value in values.items():
        derived = vars(obj).get(key)
        if derived is not None and not _same(derived, value):
            fail(f"{path}.{key}", f"does not match the value {name} derives from its other fields")
        setattr(obj, key, value)
    if cls is QuantizedModule:
        check_module(obj, path)
    return obj


def _module_arguments(values: dict, path: str) -> dict:
    """A saved QuantizedModule's constructor arguments (it stores its inputs as two lists)."""
    names, quantizers = values.pop("input_names", None), values.pop("input_quantizers", None)
    if (
        not isinstance(names, list)
        or not isinstance(quantizers, list)
        or len(names) != len(quantizers)
        or not all(isinstance(n, str) for n in names)
        or len(set(names)) != len(names)
    ):
        fail(f"{path}.input_names", "must be distinct names, one per entry of input_quantizers")
    if not all(isinstance(q, QUANTIZERS) for q in quantizers):
        fail(f"{path}.input_quantizers", "must be quantizers")
    if not isinstance(values.get("ops"), list) or not all(isinstance(op, QuantizedOp) for op in values["ops"]):
        fail(f"{path}.ops", "must be a list of quantized ops")
    if not isinstance(values.get("output_names"), list) or not all(isinstance(n, str) for n in values["output_names"]):
        fail(f"{path}.output_names", "must be a list of value names")
    values["inputs"] = dict(zip(names, quantizers))
    values["outputs"] = values.pop("output_names")
    return values


def _check_op_names(kwargs: dict, path: str) -> None:
    if not isinstance(kwargs.get("name"), str):
        fail(f"{path}.name", "an op's name must be a string")
    inputs = kwargs.get("inputs")
    if not isinstance(inputs, list) or not inputs or not all(isinstance(n, str) for n in inputs):
        fail(f"{path}.inputs", "must be a non-empty list of value names")


def _constructor_parameters(cls: type) -> list[inspect.Parameter]:
    parameters = list(inspect.signature(cls).parameters.values())
    return [p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _check_field_name(cls: type, key: str, path: str) -> None:
    if not key.isidentifier() or key.startswith("_"):
        fail(path, "field names are public identifiers")
    attribute = inspect.getattr_static(cls, key, None)
    if callable(attribute) or hasattr(attribute, "__get__"):
        fail(path, f"cannot overwrite {cls.__name__}.{key}, a method or property")


def _same(a: Any, b: Any) -> bool:
    """Equality of decoded values (arrays by shape and values, dataclasses by fields)."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.shape(a) == np.shape(b) and bool(np.array_equal(a, b))
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(_same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    return type(a) is type(b) and a == b


# -- the integer graph as a whole ----------------------------------------------------------
def check_module(module: QuantizedModule, path: str) -> None:
    """Refuse a QuantizedModule whose inputs, ops, specs or shapes do not fit together."""
    shapes = module.input_shapes
    if (
        not isinstance(shapes, list)
        or len(shapes) != module.n_inputs
        or not all(isinstance(s, tuple) and all(type(n) is int and n >= 1 for n in s) for s in shapes)
    ):
        fail(f"{path}.input_shapes", f"must be one tuple of positive sizes per input, got {shapes!r}")
    for index, (quantizer, shape) in enumerate(zip(module.input_quantizers, shapes)):
        where = f"{path}.input_quantizers[{index}]"
        if not isinstance(quantizer, QUANTIZERS):
            fail(where, f"must be a quantizer, got {type(quantizer).__name__}")
        if math.prod(shape) > MAX_INPUT_ELEMENTS:
            fail(f"{path}.input_shapes[{index}]", f"over {MAX_INPUT_ELEMENTS} values per sample")
        for field in ("scale", "zero_point"):
            field_shape = np.shape(getattr(quantizer, field))
            if len(field_shape) > len(shape) or field_shape not in ((), shape[-len(field_shape) :], (1,)):
                fail(f"{where}.{field}", f"shape {field_shape} does not fit inputs of shape {shape}")
    for index, spec in enumerate(getattr(module, "client_output_specs", None) or []):
        _check_spec(spec, f"{path}.client_output_specs[{index}]")
    specs = dict(zip(module.input_names, module.input_specs))
    for index, op in enumerate(module.ops):
        _check_op(op, specs, f"{path}.ops[{index}]")
        specs[op.name] = op.output_spec
    if module.ops:
        _check_runs(module, path)


def _check_spec(spec: Any, path: str) -> None:
    if not isinstance(spec, TensorSpec):
        fail(path, f"must be a TensorSpec, got {type(spec).__name__}")


def _check_op(op: QuantizedOp, specs: dict[str, TensorSpec], path: str) -> None:
    if not isinstance(op, QuantizedOp):
        fail(path, f"must be a quantized op, got {type(op).__name__}")
    input_specs = getattr(op, "input_specs", None)
    if not isinstance(input_specs, list) or len(input_specs) != len(op.inputs):
        fail(f"{path}.input_specs", f"must be a list of {len(op.inputs)} TensorSpec (one per input)")
    for i, (name, spec) in enumerate(zip(op.inputs, input_specs)):
        _check_spec(spec, f"{path}.input_specs[{i}]")
        if not _same(spec, specs[name]):
            fail(f"{path}.input_specs[{i}]", f"differs from the spec of its input {name!r}")
    _check_spec(op.output_spec, f"{path}.output_spec")
    for key, value in vars(op).items():
        for array in _arrays(value):
            if array.ndim > MAX_GRAPH_ARRAY_DIMS:
                fail(f"{path}.{key}", f"arrays of an integer graph have at most {MAX_GRAPH_ARRAY_DIMS} dimensions")
    try:
        op.check_bit_width()
    except ValueError as err:
        fail(f"{path}.output_spec", str(err))


def _arrays(value: Any) -> list[np.ndarray]:
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (list, tuple)):
        return [a for v in value for a in _arrays(v)]
    if dataclasses.is_dataclass(value) or isinstance(value, UniformQuantizer):
        return _arrays(list(vars(value).values()))
    return []


def _check_runs(module: QuantizedModule, path: str) -> None:
    """Run the graph op by op on the extreme rows of its inputs and on random ones: any shape
    or index error shows now, and every op must stay within the worst-case range its output
    spec declares (the bit-widths the circuit is compiled with)."""
    rng = np.random.default_rng(0)
    # an encoding quantizer (unary digits) sends more integers than the features
    shapes = [getattr(q, "encoded_shape", lambda s: s)(s) for q, s in zip(module.input_quantizers, module.input_shapes)]
    extremes = [extreme_rows(q, shape) for q, shape in zip(module.input_quantizers, shapes)]
    n_extreme = max(len(e) for e in extremes)  # inputs of fewer extreme rows repeat their last
    rows = [
        np.concatenate(
            [e, np.repeat(e[-1:], n_extreme - len(e), axis=0), random_rows(q, shape, CHECK_ROWS - n_extreme, rng)]
        )
        for q, shape, e in zip(module.input_quantizers, shapes, extremes)
    ]
    values = dict(zip(module.input_names, rows))
    for index, op in enumerate(module.ops):
        where = f"{path}.ops[{index}]"
        try:
            with np.errstate(all="ignore"):
                out = np.asarray(op.q_impl(*[values[n] for n in op.inputs]))
                outside = out.dtype.kind not in "iu" or bool(
                    np.any((out < op.output_spec.lo) | (out > op.output_spec.hi))
                )
        except Exception as err:  # any failure means a malformed op
            fail(where, f"does not run on its input range ({type(err).__name__}: {err})")
        if outside:
            fail(where, "computes integers outside the range its output_spec declares")
        values[op.name] = out
    try:
        with np.errstate(all="ignore"):
            outputs = module.quantized_forward(*rows, fhe="disable")
    except Exception as err:  # any failure means a malformed graph
        fail(path, f"the integer graph does not run on its input range ({type(err).__name__}: {err})")
    for name, output in zip(module.output_names, outputs if isinstance(outputs, tuple) else (outputs,)):
        if output.shape != values[name].shape or not np.array_equal(output, values[name]):
            fail(path, f"output {name!r} of the fused graph differs from its ops run one by one")

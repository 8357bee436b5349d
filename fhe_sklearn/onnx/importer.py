"""ONNX graph → QuantizedModule, through the same GraphBuilder and op registry as the
estimators (post-training quantization).

Each ONNX node becomes registered quantized ops (:data:`ONNX_CONVERTERS`); nodes whose
inputs are all constants are folded with ONNX's reference evaluator; BatchNormalization is
folded into the Conv/Gemm before it; a final Softmax/LogSoftmax/ArgMax is left to the clear
side. An unsupported op is refused at import, with its name and position.

Quantization-aware models export QuantizeLinear → [Clip] → DequantizeLinear pairs: on a
weight they are constant-folded (the weights become the fake-quantized ones); on encrypted
data their grid becomes a quantizer — the input's, the output quantizer of the activation
before them, or else a re-quantizing lookup (:class:`QuantizedQuantizeDequantize`); see :mod:`.qdq`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..quantization import GraphBuilder, QuantizedModule
from ..quantization.custom_ops import QuantizedCustomGemm, defines_q_impl
from ..quantization.quantizers import (
    MAX_BIT_WIDTH,
    MAX_LEVELED_BIT_WIDTH,
    check_n_bits,
)
from ..quantization.registry import custom_onnx_op
from ._nodes import attributes as _attributes
from ._nodes import where as _where
from .calibration import input_quantizer, mark_truncated
from .qdq import Grid, clip, dequantize_grid, dequantize_linear, quantize_linear

#: keys of the ``n_bits`` dict form
N_BITS_KEYS = ("model_inputs", "op_inputs", "op_weights", "model_outputs")
#: ops that move integers without widening them
PASS_THROUGH_OPS = ("Reshape", "Transpose", "Concat", "MaxPool", "Identity")
#: ops that are dropped at the end of a graph: their work happens on the client
CLEAR_SIDE_OUTPUTS = {"Softmax": "softmax", "LogSoftmax": "log_softmax", "ArgMax": "argmax"}


def resolve_network_n_bits(n_bits: Any) -> dict[str, int]:
    """``n_bits`` as an int, or a dict with keys among :data:`N_BITS_KEYS` (``op_inputs``
    required; the model's inputs and outputs default to it, weights too)."""
    if isinstance(n_bits, Mapping):
        unknown = set(n_bits) - set(N_BITS_KEYS)
        if unknown or "op_inputs" not in n_bits:
            raise ValueError(
                f"n_bits dict takes the keys {list(N_BITS_KEYS)} with 'op_inputs' required; got {sorted(n_bits)}"
            )
        base = check_n_bits(n_bits["op_inputs"], "n_bits['op_inputs']")
        return {k: check_n_bits(n_bits.get(k, base), f"n_bits[{k!r}]") for k in N_BITS_KEYS}
    value = check_n_bits(n_bits)
    return dict.fromkeys(N_BITS_KEYS, value)


@dataclass
class _Import:
    """State of one import: constants, encrypted values, the builder."""

    bits: dict[str, int]
    rounding_threshold_bits: int | None
    #: bound of a Gemm/MatMul accumulator that is an output of the graph (no lookup reads it)
    output_accumulator_bits: int = MAX_BIT_WIDTH
    #: ONNX names of the graph's outputs
    outputs: set[str] = field(default_factory=set)
    builder: GraphBuilder = field(default_factory=GraphBuilder)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    #: ONNX tensor name → builder value name (encrypted tensors)
    values: dict[str, str] = field(default_factory=dict)
    consumers: dict[str, int] = field(default_factory=dict)
    #: rank of each tensor (with the batch axis), from ONNX shape inference
    ranks: dict[str, int] = field(default_factory=dict)
    post_processing: str | None = None
    #: QuantizeLinear outputs on encrypted data, by ONNX tensor name
    grids: dict[str, Grid] = field(default_factory=dict)
    #: constant-folded DequantizeLinear outputs (fake-quantized weights) → their grid,
    #: broadcast to the tensor's shape
    weight_grids: dict[str, np.ndarray] = field(default_factory=dict)
    #: Add/Sub of two encrypted tensors: builder value → ONNX output tensor
    sum_nodes: dict[str, str] = field(default_factory=dict)
    #: ONNX outputs of the Add/Sub nodes whose operands are re-quantized first
    narrowed_sums: set[str] = field(default_factory=set)

    def value(self, tensor: str, node: Any) -> str:
        if tensor not in self.values:
            raise ValueError(f"{_where(node)}: input {tensor!r} is neither encrypted data nor a constant")
        return self.values[tensor]

    def constant(self, tensor: str, node: Any, what: str) -> np.ndarray:
        if tensor not in self.constants:
            raise ValueError(f"{_where(node)}: {what} must be a constant (an initializer), not computed data")
        return self.constants[tensor]

    def add(self, node: Any, op_type: str | type, *inputs: str, **params: Any) -> str:
        name = self._fresh(node.name or f"{node.op_type.lower()}_{len(self.values)}")
        return self.builder.add(op_type, *inputs, name=name, **params)

    def lookup_input(self, node: Any, source: str) -> str:
        """The value a lookup reads: narrowed to ``rounding_threshold_bits`` first if set."""
        if self.rounding_threshold_bits is None:
            return source
        name = self._fresh(f"{node.name or node.op_type.lower()}_round")
        mark_truncated(self.builder, source, self.rounding_threshold_bits)
        return self.builder.add("TruncateToBits", source, name=name, target_bits=self.rounding_threshold_bits)

    def narrow(self, node: Any, source: str) -> str:
        """``source`` itself if its integers are narrow (an input or a lookup's output, maybe
        reshaped, concatenated or scaled); else re-quantized to ``op_inputs`` bits by one
        lookup (after ``rounding_threshold_bits`` truncation), so an op whose lookups read
        it (the product of two tensors) does not read a wide accumulator."""
        if self._is_narrow(source):
            return source
        name = self._fresh(f"{node.name or node.op_type.lower()}_requantize")
        return self.builder.add("Identity", self.lookup_input(node, source), name=name, n_bits=self.bits["op_inputs"])

    def _is_narrow(self, value: str) -> bool:
        if value in self.builder._inputs:
            return True
        op = self.builder.op(value)
        if op.is_univariate or op.op_type == "CustomOnnx":  # custom ops re-quantize their output
            return True
        if op.op_type in PASS_THROUGH_OPS or (op.op_type in ("Add", "Mul") and op.is_elementwise):
            return all(self._is_narrow(name) for name in op.inputs)
        return False

    def _fresh(self, name: str) -> str:
        taken = {*self.builder._inputs, *(op.name for op in self.builder._ops)}
        candidate, index = name, 1
        while candidate in taken:
            candidate, index = f"{name}_{index}", index + 1
        return candidate


# -- converters: one per ONNX op type ---------------------------------------------------------------
def _gemm(ctx: _Import, node: Any, attrs: dict, op_class: type | None = None, **custom: Any) -> str:
    a, b, *c = node.input
    weight = ctx.constant(b, node, "the second Gemm input (weights)")
    if attrs.get("transA", 0):
        raise ValueError(f"{_where(node)}: transA=1 is not supported")
    grid = ctx.weight_grids.get(b)
    if attrs.get("transB", 0):
        weight, grid = weight.T, None if grid is None else grid.T
    alpha = attrs.get("alpha", 1.0)
    weight, grid = weight * alpha, None if grid is None else grid * abs(alpha)
    bias = ctx.constant(c[0], node, "the Gemm bias") * attrs.get("beta", 1.0) if c and c[0] else None
    if bias is not None:
        bias = np.broadcast_to(bias, weight.shape[1:]).astype(np.float64)
    weight_scale = _per_output(grid, axis=1)
    return _linear(ctx, node, op_class or "Gemm", a, weight=weight, bias=bias, weight_scale=weight_scale, **custom)


def _matmul(ctx: _Import, node: Any, attrs: dict) -> str:
    a, b = node.input
    weight = ctx.constant(b, node, "the second MatMul input")
    if weight.ndim != 2:
        raise ValueError(f"{_where(node)}: only 2-D constant weights are supported, got shape {weight.shape}")
    return _linear(ctx, node, "Gemm", a, weight=weight, weight_scale=_per_output(ctx.weight_grids.get(b), axis=1))


def _conv(ctx: _Import, node: Any, attrs: dict) -> str:
    x, w, *b = node.input
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise ValueError(f"{_where(node)}: auto_pad is not supported, export with explicit pads")
    return _linear(
        ctx,
        node,
        "Conv",
        x,
        weight=ctx.constant(w, node, "the Conv weights"),
        weight_scale=_per_output(ctx.weight_grids.get(w), axis=0),
        bias=ctx.constant(b[0], node, "the Conv bias") if b and b[0] else None,
        strides=attrs.get("strides"),
        pads=attrs.get("pads"),
        dilations=attrs.get("dilations"),
        group=attrs.get("group", 1),
    )


def _per_output(grid: np.ndarray | None, axis: int) -> np.ndarray | None:
    """A fake-quantized weight's grid as one scale per output (``axis``), or None if it is
    not constant along the other axes (then the weights are re-quantized)."""
    if grid is None:
        return None
    per_output = np.moveaxis(grid, axis, 0).reshape(grid.shape[axis], -1)
    if not np.all(per_output == per_output[:, :1]):
        return None
    return per_output[:, 0]


def _linear(ctx: _Import, node: Any, op_type: str | type, source: str, **params: Any) -> str:
    # an accumulator that leaves the circuit is de-quantized by the client: leveled only, so
    # it may be wider than a lookup could read
    kind = op_type if isinstance(op_type, str) else op_type.op_type
    leaves = kind == "Gemm" and node.output[0] in ctx.outputs
    bound = ctx.output_accumulator_bits if leaves else MAX_BIT_WIDTH
    if params.get("weight_scale") is not None:  # learned integer weights: n_bits cannot help
        hint = "train with fewer weight or activation bits, or prune the layer (fewer inputs per neuron)"
    else:
        hint = (
            "lower n_bits (the inputs': 'model_inputs'/'op_inputs'; the weights': 'op_weights'), "
            "or prune the layer (fewer inputs per neuron)"
        )
    value = ctx.add(
        node,
        op_type,
        ctx.value(source, node),
        n_bits=ctx.bits["op_weights"],
        max_accumulator_bits=bound,
        overflow_hint=hint,
        **params,
    )
    if leaves and ctx.rounding_threshold_bits is not None and bound <= MAX_BIT_WIDTH:
        # the client reads an output accumulator at about model_outputs bits, and at least one
        # bit finer than the lookups (its error reaches the prediction unsmoothed: a digits
        # CNN at rounding_threshold_bits=6 lost 2 points at 6). A caller that allows a wider
        # one (the hybrid model: outputs feeding float layers) keeps the weights' bits.
        target = max(ctx.bits["model_outputs"], ctx.rounding_threshold_bits + 1)
        mark_truncated(ctx.builder, value, target)
    return value


def _batch_norm(ctx: _Import, node: Any, attrs: dict) -> str:
    x, gamma, beta, mean, var = node.input[:5]
    gamma, beta, mean, var = (ctx.constant(t, node, "BatchNormalization parameters") for t in (gamma, beta, mean, var))
    factor = gamma / np.sqrt(var + attrs.get("epsilon", 1e-5))
    shift = beta - mean * factor
    source = ctx.value(x, node)
    producer = next((op for op in ctx.builder._ops if op.name == source), None)
    if producer is not None and producer.op_type in ("Gemm", "Conv") and ctx.consumers.get(x) == 1:
        # folded into the linear op before it: no extra rounding, no op
        if producer.op_type == "Gemm":
            producer.weight = producer.weight * factor
        else:
            producer.weight = producer.weight * factor.reshape((-1,) + (1,) * (producer.weight.ndim - 1))
        producer.bias = producer.bias * factor + shift
        if producer.weight_scale is not None:  # still integers on a grid, scaled per output
            producer.weight_scale = producer.weight_scale * np.abs(factor)
        return source
    # per channel: axis 1 of the batch, so (C, 1, ...) over the sample's remaining axes
    per_channel = (-1,) + (1,) * (ctx.ranks.get(x, 2) - 2)
    scaled = ctx.add(node, "Mul", source, constant=factor.reshape(per_channel))
    return ctx.add(node, "Add", scaled, constant=shift.reshape(per_channel))


def _activation(op_type: str, **defaults: Any) -> Callable:
    def convert(ctx: _Import, node: Any, attrs: dict) -> str:
        params = {k: attrs.get(k, v) for k, v in defaults.items()}
        source = ctx.lookup_input(node, ctx.value(node.input[0], node))
        return ctx.add(node, op_type, source, n_bits=ctx.bits["op_inputs"], **params)

    return convert


def _add_sub(sign: float) -> Callable:
    def convert(ctx: _Import, node: Any, attrs: dict) -> str:
        a, b = node.input
        if a in ctx.constants and b in ctx.values and sign > 0:
            a, b = b, a
        if b in ctx.constants:
            return ctx.add(node, "Add", ctx.value(a, node), constant=sign * _sample(ctx.constants[b]))
        if a in ctx.constants:  # constant - x: -x, then + constant
            negated = ctx.add(node, "Mul", ctx.value(b, node), constant=-1.0)
            return ctx.add(node, "Add", negated, constant=_sample(ctx.constants[a]))
        operands = [ctx.value(t, node) for t in (a, b)]
        if node.output[0] in ctx.narrowed_sums:  # its sum outgrew 16 bits on the accumulator's grid
            operands = [ctx.narrow(node, v) for v in operands]
        value = ctx.add(node, "Add" if sign > 0 else "Sub", *operands)
        ctx.sum_nodes[value] = node.output[0]
        return value

    return convert


def _mul_div(divide: bool) -> Callable:
    def convert(ctx: _Import, node: Any, attrs: dict) -> str:
        a, b = node.input
        if a in ctx.constants and not divide:
            a, b = b, a
        if not divide and b in ctx.values:  # two encrypted tensors: two lookups per element
            operands = [ctx.narrow(node, ctx.value(t, node)) for t in (a, b)]
            return ctx.add(node, "Mul", *operands, n_bits=ctx.bits["op_inputs"])
        constant = _sample(ctx.constant(b, node, f"one {node.op_type} operand"))
        return ctx.add(node, "Mul", ctx.value(a, node), constant=1.0 / constant if divide else constant)

    return convert


def _concat(ctx: _Import, node: Any, attrs: dict) -> str:
    constants = [name for name in node.input if name in ctx.constants]
    if constants:
        raise ValueError(f"{_where(node)}: concatenating a constant tensor ({constants[0]!r}) is not supported")
    return ctx.add(node, "Concat", *(ctx.value(name, node) for name in node.input), axis=attrs.get("axis", 1))


def _sample(constant: np.ndarray) -> np.ndarray:
    """A broadcast constant as it applies to one sample (a leading batch axis of 1 dropped)."""
    return constant[0] if constant.ndim >= 2 and constant.shape[0] == 1 else constant


def _flatten(ctx: _Import, node: Any, attrs: dict) -> str:
    if attrs.get("axis", 1) != 1:
        raise ValueError(f"{_where(node)}: only Flatten(axis=1) is supported (the batch axis stays)")
    return ctx.add(node, "Reshape", ctx.value(node.input[0], node), shape=(-1,))


def _reshape(ctx: _Import, node: Any, attrs: dict) -> str:
    shape = ctx.constant(node.input[1], node, "the Reshape shape")
    if shape[0] not in (-1, 0, 1) and len(shape) > 1:
        raise ValueError(f"{_where(node)}: the first axis is the batch axis; reshape to (-1, ...) or (0, ...)")
    return ctx.add(node, "Reshape", ctx.value(node.input[0], node), shape=tuple(int(s) for s in shape[1:]) or (-1,))


def _transpose(ctx: _Import, node: Any, attrs: dict) -> str:
    return ctx.add(node, "Transpose", ctx.value(node.input[0], node), perm=attrs["perm"])


def _pool(op_type: str) -> Callable:
    def convert(ctx: _Import, node: Any, attrs: dict) -> str:
        if attrs.get("ceil_mode", 0) or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            raise ValueError(f"{_where(node)}: ceil_mode and auto_pad are not supported")
        params = {"kernel_shape": attrs["kernel_shape"], "strides": attrs.get("strides")}
        if op_type == "AveragePool":
            if any(attrs.get("pads", [])) and not attrs.get("count_include_pad", 0):
                raise ValueError(f"{_where(node)}: padded average pooling needs count_include_pad=1")
            params["pads"] = attrs.get("pads")
        elif any(attrs.get("pads", [])) or any(d != 1 for d in attrs.get("dilations", [])):
            raise ValueError(f"{_where(node)}: MaxPool with padding or dilation is not supported")
        return ctx.add(node, op_type, ctx.value(node.input[0], node), **params)

    return convert


def _global_average_pool(ctx: _Import, node: Any, attrs: dict) -> str:
    raise ValueError(f"{_where(node)}: GlobalAveragePool needs the input's spatial size; use AvgPool2d(kernel)")


def _identity(ctx: _Import, node: Any, attrs: dict) -> str:
    return ctx.value(node.input[0], node)


#: ONNX op type → converter(import state, node, attributes) → builder value name
ONNX_CONVERTERS: dict[str, Callable[[_Import, Any, dict], str]] = {
    "Gemm": _gemm,
    "MatMul": _matmul,
    "Conv": _conv,
    "BatchNormalization": _batch_norm,
    "Relu": _activation("Relu"),
    "Sigmoid": _activation("Sigmoid"),
    "Tanh": _activation("Tanh"),
    "Gelu": _activation("Gelu"),
    "Softplus": _activation("Softplus"),
    "Abs": _activation("Abs"),
    "LeakyRelu": _activation("LeakyRelu", alpha=0.01),
    "Elu": _activation("Elu", alpha=1.0),
    "HardSigmoid": _activation("HardSigmoid", alpha=0.2, beta=0.5),
    "Add": _add_sub(1.0),
    "Sub": _add_sub(-1.0),
    "Mul": _mul_div(divide=False),
    "Div": _mul_div(divide=True),
    "Concat": _concat,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "AveragePool": _pool("AveragePool"),
    "MaxPool": _pool("MaxPool"),
    "GlobalAveragePool": _global_average_pool,
    "Identity": _identity,
    "Dropout": _identity,
    "QuantizeLinear": quantize_linear,
    "Clip": clip,
    "DequantizeLinear": dequantize_linear,
}


def _custom_converter(cls: type) -> Callable:
    """The conversion of a node by a user's custom op class (Concrete ML's custom-op API)."""

    def convert(ctx: _Import, node: Any, attrs: dict) -> str:
        if node.op_type == "Gemm" and defines_q_impl(cls):  # the built-in's quantization, the user's integers
            return _gemm(ctx, node, attrs, op_class=QuantizedCustomGemm, impl_class=cls, node_attrs=attrs)
        positions = [i for i, t in enumerate(node.input) if t and t not in ctx.constants]
        sources = [ctx.value(node.input[i], node) for i in positions]
        if not sources:
            raise ValueError(f"{_where(node)}: a custom op needs an encrypted input")
        if defines_q_impl(cls):  # products of its inputs must not read wide accumulators
            sources = [ctx.narrow(node, s) for s in sources]
        else:  # one lookup, read as the built-in activations read theirs
            sources = [ctx.lookup_input(node, s) for s in sources]
        return ctx.add(
            node,
            "CustomOnnx",
            *sources,
            impl_class=cls,
            onnx_node=node,
            positions=positions,
            constants={i: ctx.constants[t] for i, t in enumerate(node.input) if t in ctx.constants},
            attrs=attrs,
            n_bits=ctx.bits["op_inputs"],
            weight_bits=ctx.bits["op_weights"],
        )

    return convert


def _fold_constant(node: Any, constants: dict[str, np.ndarray]) -> None:
    from onnx.reference import ReferenceEvaluator

    if node.op_type == "Constant":
        from onnx import numpy_helper

        attrs = {a.name: a for a in node.attribute}
        constants[node.output[0]] = numpy_helper.to_array(attrs["value"].t)
        return
    evaluator = ReferenceEvaluator(node)
    feeds = {name: constants[name] for name in node.input if name}
    for name, value in zip(node.output, evaluator.run(None, feeds)):
        constants[name] = np.asarray(value)


def onnx_to_module(
    onnx_model: Any,
    calibration: Any,
    n_bits: Any = 8,
    rounding_threshold_bits: int | None = 6,
    output_accumulator_bits: int = MAX_BIT_WIDTH,
) -> QuantizedModule:
    """Import ``onnx_model`` and calibrate it on ``calibration`` (an array, or a tuple of
    arrays for a graph of several inputs); see :func:`compile_onnx_model`."""
    import onnx

    if isinstance(output_accumulator_bits, bool) or output_accumulator_bits not in range(1, MAX_LEVELED_BIT_WIDTH + 1):
        raise ValueError(
            f"output_accumulator_bits must be an integer in [1, {MAX_LEVELED_BIT_WIDTH}], "
            f"got {output_accumulator_bits!r}"
        )

    model = onnx.load_model_from_string(onnx_model) if isinstance(onnx_model, bytes) else onnx_model
    if isinstance(onnx_model, str):
        model = onnx.load(onnx_model)
    if not isinstance(model, onnx.ModelProto):
        raise TypeError(f"expected an onnx.ModelProto, bytes or a path, got {type(onnx_model).__name__}")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as err:
        raise ValueError(f"invalid ONNX model: {err}") from None
    graph = onnx.shape_inference.infer_shapes(model).graph
    arrays = calibration if isinstance(calibration, (tuple, list)) else (calibration,)
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    narrowed: set[str] = set()
    while True:
        ctx = _import_graph(
            graph, arrays, resolve_network_n_bits(n_bits), rounding_threshold_bits, narrowed, output_accumulator_bits
        )
        try:
            module = ctx.builder.build(*arrays, post_processing=ctx.post_processing)
        except ValueError:
            # a sum of two tensors kept on the accumulator's grid (one small lookup, full
            # precision) outgrew 16 bits: import again with its operands re-quantized first
            # (measured on a residual MLP at n_bits=6: 120 PBS vs 132 when always re-quantized)
            overflowing = [
                ctx.sum_nodes[op.name]
                for op in ctx.builder._ops
                if op.name in ctx.sum_nodes and op.output_spec is not None and op.output_spec.bit_width > MAX_BIT_WIDTH
            ]
            if not overflowing or overflowing[0] in narrowed:
                raise
            narrowed.add(overflowing[0])
            continue
        return module


def _import_graph(
    graph: Any,
    arrays: list[np.ndarray],
    bits: dict[str, int],
    rounding_threshold_bits: int | None,
    narrowed: set[str],
    output_accumulator_bits: int = MAX_BIT_WIDTH,
) -> _Import:
    """The builder of ``graph``'s ops, not yet calibrated."""
    from onnx import numpy_helper

    ctx = _Import(bits, rounding_threshold_bits, output_accumulator_bits, {o.name for o in graph.output})
    ctx.narrowed_sums = narrowed
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.tensor_type.HasField("shape"):
            ctx.ranks[info.name] = len(info.type.tensor_type.shape.dim)
    ctx.constants = {t.name: _as_constant(numpy_helper.to_array(t)) for t in graph.initializer}
    data_inputs = [i for i in graph.input if i.name not in ctx.constants]
    if len(arrays) != len(data_inputs):
        raise ValueError(f"the graph has {len(data_inputs)} input(s), got {len(arrays)} calibration array(s)")
    for spec, array in zip(data_inputs, arrays):
        ctx.values[spec.name] = ctx.builder.input(input_quantizer(array, ctx.bits["model_inputs"]), name=spec.name)
    for node in graph.node:
        for name in node.input:
            ctx.consumers[name] = ctx.consumers.get(name, 0) + 1
    outputs = {o.name for o in graph.output}
    for index, node in enumerate(graph.node):
        try:
            _import_node(ctx, node, outputs)
        except ValueError as err:
            raise ValueError(f"node #{index}: {err}") from None
    ctx.builder.output(*[ctx.values[o.name] for o in graph.output])
    _requantize_outputs(ctx)
    return ctx


def _import_node(ctx: _Import, node: Any, outputs: set[str]) -> None:
    if all(name in ctx.constants or not name for name in node.input):
        _fold_constant(node, ctx.constants)
        if node.op_type == "DequantizeLinear":  # a fake-quantized weight: keep its grid
            ctx.weight_grids[node.output[0]] = dequantize_grid(ctx, node)
        return
    if node.op_type in CLEAR_SIDE_OUTPUTS and set(node.output) <= outputs:
        ctx.post_processing = CLEAR_SIDE_OUTPUTS[node.op_type]
        ctx.values[node.output[0]] = ctx.value(node.input[0], node)
        return
    custom = custom_onnx_op(node.op_type)
    convert = ONNX_CONVERTERS.get(node.op_type) if custom is None else _custom_converter(custom)
    if convert is None:
        raise ValueError(
            f"{_where(node)} is not supported in FHE; supported ops: {sorted(ONNX_CONVERTERS)} "
            f"(and {sorted(CLEAR_SIDE_OUTPUTS)} as the last op)"
        )
    value = convert(ctx, node, _attributes(node))
    if value is not None:  # None: a QuantizeLinear waiting for its DequantizeLinear
        ctx.values[node.output[0]] = value


def _as_constant(array: np.ndarray) -> np.ndarray:
    """Floats in float64; integers (shapes, zero points) keep their type."""
    return array if np.issubdtype(array.dtype, np.integer) else array.astype(np.float64)


def _requantize_outputs(ctx: _Import) -> None:
    """An output produced by a lookup is quantized to ``model_outputs`` bits."""
    for op in ctx.builder._ops:
        if op.name in ctx.builder._outputs and getattr(op, "n_bits_role", None) == "op_inputs":
            op.n_bits = ctx.bits["model_outputs"]

"""The one lowering path: op registry, graph builder, multi-input/output modules, fusion."""

import numpy as np
import pytest

from fhe_sklearn.quantization import (
    OP_REGISTRY,
    GraphBuilder,
    QuantizedOp,
    QuantizedUnivariateOp,
    TensorSpec,
    register_op,
)
from fhe_sklearn.quantization.post_training import input_quantizer


@pytest.fixture
def scratch_registry():
    """Ops a test registers are removed afterwards."""
    before = dict(OP_REGISTRY)
    yield
    OP_REGISTRY.clear()
    OP_REGISTRY.update(before)


def assert_simulate_equals_disable(module, *x_q):
    def as_tuple(value):
        return value if isinstance(value, tuple) else (value,)

    simulated = as_tuple(module.quantized_forward(*x_q, fhe="simulate"))
    disabled = as_tuple(module.quantized_forward(*x_q))
    assert len(simulated) == len(disabled) == module.n_outputs
    for a, b in zip(simulated, disabled):
        np.testing.assert_array_equal(a, b)


def test_every_family_op_is_registered_under_its_type():
    for op_type in ("Gemm", "Relu", "LessOrEqual", "Gather", "IntegerMatMul", "TableLookup", "Add", "Reshape"):
        assert OP_REGISTRY[op_type].op_type == op_type
    with pytest.raises(ValueError, match=r"unknown op type 'LSTM'; registered: \[.*'Gemm'"):
        GraphBuilder().add("LSTM", "input")


def test_a_type_cannot_be_registered_twice(scratch_registry):
    class Again(QuantizedUnivariateOp):
        op_type = "Relu"

    with pytest.raises(ValueError, match="already registered by QuantizedRelu"):
        register_op(Again)


def test_a_new_elementwise_op_is_one_registered_class(rng, scratch_registry):
    @register_op
    class QuantizedSquare(QuantizedUnivariateOp):
        op_type = "Square"

        def _f(self, x):
            return x * x

    x = rng.normal(size=(200, 3))
    weight = rng.normal(size=(3, 4))
    builder = GraphBuilder()
    builder.input(input_quantizer(x, 5))
    builder.add("Gemm", weight=weight, n_bits=5)
    builder.add("Square", n_bits=5)
    builder.add("Relu", n_bits=4)
    module = builder.build(x)
    np.testing.assert_allclose(module.forward(x), (x @ weight) ** 2, atol=0.1 * np.ptp((x @ weight) ** 2))
    circuit = module.compile(x)
    assert circuit.programmable_bootstrap_count == 4  # Square and Relu: one fused lookup per output
    assert_simulate_equals_disable(module, module.quantize_input(x[:30]))


def test_chains_fuse_even_when_other_ops_sit_between_them(rng):
    x = rng.normal(size=(100, 2))
    builder = GraphBuilder()
    builder.input(input_quantizer(x, 4))
    builder.add("Relu", "input", name="relu", n_bits=4)
    builder.add("Abs", "input", name="abs", n_bits=3)
    builder.add("Sigmoid", "relu", name="sigmoid", n_bits=3)  # its producer is two ops back
    builder.add("Add", "sigmoid", "abs", name="sum")
    module = builder.build(x)
    assert [[op.name for op in g] for g in module._fusion_groups()] == [["relu", "sigmoid"], ["abs"], ["sum"]]
    circuit = module.compile(x)
    # relu∘sigmoid and abs: two lookups per element; concrete folds the sum's re-scaling of
    # abs into abs's lookup
    assert circuit.programmable_bootstrap_count == 2 * 2
    assert_simulate_equals_disable(module, module.quantize_input(x[:30]))


def test_leveled_elementwise_chain_costs_no_lookup(rng):
    x = rng.normal(size=(50, 3))
    builder = GraphBuilder()
    builder.input(input_quantizer(x, 4))
    builder.add("Add", constant=1.0)
    builder.add("Add", constant=-0.25)
    module = builder.build(x)
    assert module.compile(x).programmable_bootstrap_count == 0
    x_hat = module.input_quantizer.dequant(module.quantize_input(x))
    np.testing.assert_allclose(module.forward(x), x_hat + 0.75, atol=module.input_quantizer.scale.max())


def test_two_inputs_and_two_outputs(rng):
    a, b = rng.normal(size=(150, 3)), rng.uniform(0, 2, size=(150, 3))
    builder = GraphBuilder()
    builder.input(input_quantizer(a, 5), name="a")
    builder.input(input_quantizer(b, 4), name="b")
    total = builder.add("Add", "a", "b", name="total")
    positive = builder.add("Relu", total, name="positive", n_bits=5)
    magnitude = builder.add("Abs", "a", name="magnitude", n_bits=4)
    builder.output(positive, magnitude)
    module = builder.build(a, b)
    assert module.n_inputs == 2 and module.n_outputs == 2 and module.input_names == ["a", "b"]
    relu, absolute = module.forward(a, b)
    np.testing.assert_allclose(relu, np.maximum(a + b, 0), atol=0.3)
    np.testing.assert_allclose(absolute, np.abs(a), atol=0.3)
    module.compile((a, b))
    assert_simulate_equals_disable(module, *module.quantize_input(a[:20], b[:20]))
    with pytest.raises(ValueError, match="takes 2 input"):
        module.forward(a)
    with pytest.raises(ValueError, match="has 2 outputs"):
        _ = module.output_spec
    with pytest.raises(ValueError, match=r"input 'b' of shape \(n_samples, 3\)"):
        module.quantize_input(a, b[:, :2])


class PairMax(QuantizedOp):
    """A family's own traced function (the escape hatch): max of two encrypted inputs on one
    grid, written with numpy so concrete traces it like any op."""

    op_type = "PairMax"

    def float_forward(self, a, b):
        return np.maximum(a, b)

    def _calibrate(self, float_output, a, b):
        first, second = self.input_specs
        if not (np.array_equal(first.scale, second.scale) and np.array_equal(first.zero_point, second.zero_point)):
            raise ValueError("PairMax needs both inputs on one grid")
        return TensorSpec(
            first.scale, first.zero_point, np.maximum(first.lo, second.lo), np.maximum(first.hi, second.hi)
        )

    def q_impl(self, a, b):
        return np.maximum(a, b)


def test_escape_hatch_op_with_its_own_traced_function(rng, scratch_registry):
    register_op(PairMax)
    a = rng.normal(size=(100, 4))
    quantizer = input_quantizer(np.concatenate([a, -a]), 4)
    builder = GraphBuilder()
    builder.input(quantizer, name="a")
    builder.input(quantizer, name="b")
    builder.add("PairMax", "a", "b")
    module = builder.build(a, -a)
    np.testing.assert_allclose(module.forward(a, -a), np.abs(a), atol=quantizer.scale.max())
    module.compile((a, -a))
    assert_simulate_equals_disable(module, *module.quantize_input(a[:20], -a[:20]))


def test_builder_errors_are_clear():
    builder = GraphBuilder()
    with pytest.raises(ValueError, match="no input yet"):
        builder.add("Relu")
    builder.input(input_quantizer(np.zeros((2, 2)), 3))
    builder.add("Relu", name="r", n_bits=3)
    with pytest.raises(ValueError, match="already used"):
        builder.add("Abs", name="r", n_bits=3)
    with pytest.raises(ValueError, match=r"reads \['nothing'\]"):
        builder.add("Abs", "nothing", n_bits=3)

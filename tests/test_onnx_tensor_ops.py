"""ONNX ops between two encrypted tensors: residual Add, Sub, Mul, Concat (and constant - x)."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fhe_sklearn.onnx import compile_onnx_model, onnx_to_module
from fhe_sklearn.quantization import GraphBuilder
from fhe_sklearn.quantization.post_training import input_quantizer
from fhe_sklearn.torch import compile_torch_model

RNG = np.random.default_rng(0)
SHAPES = {"wa": (6, 6), "wb": (6, 4), "wr": (6, 6), "wo": (6, 3)}
W = {name: RNG.normal(size=shape) / np.sqrt(shape[0]) for name, shape in SHAPES.items()}


def _graph(nodes, out_width=3, extra=()):
    initializer = [numpy_helper.from_array(w.astype(np.float32), name) for name, w in W.items()]
    initializer += [numpy_helper.from_array(np.asarray(v, dtype=np.float32), name) for name, v in extra]
    graph = helper.make_graph(
        nodes,
        "two_branches",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, out_width])],
        initializer=initializer,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _relu(v):
    return np.maximum(v, 0)


CASES = {
    # residual: x + relu(x @ wa), then the output layer
    "residual Add": (
        [
            helper.make_node("MatMul", ["x", "wa"], ["h"], name="inner"),
            helper.make_node("Relu", ["h"], ["a"], name="act"),
            helper.make_node("Add", ["x", "a"], ["r"], name="residual"),
            helper.make_node("MatMul", ["r", "wo"], ["y"], name="out"),
        ],
        lambda x: (x + _relu(x @ W["wa"])) @ W["wo"],
        (),
    ),
    # residual over a linear layer: the accumulator keeps its grid, the input is re-scaled
    "residual Add over a linear layer": (
        [
            helper.make_node("MatMul", ["x", "wa"], ["h"], name="inner"),
            helper.make_node("Relu", ["h"], ["a"], name="act"),
            helper.make_node("MatMul", ["a", "wr"], ["f"], name="linear"),
            helper.make_node("Add", ["x", "f"], ["r"], name="residual"),
            helper.make_node("Relu", ["r"], ["ra"], name="act2"),
            helper.make_node("MatMul", ["ra", "wo"], ["y"], name="out"),
        ],
        lambda x: _relu(x + _relu(x @ W["wa"]) @ W["wr"]) @ W["wo"],
        (),
    ),
    "Mul of two activations (a gate)": (
        [
            helper.make_node("MatMul", ["x", "wa"], ["h"], name="inner"),
            helper.make_node("Relu", ["h"], ["a"], name="act"),
            helper.make_node("Sigmoid", ["x"], ["s"], name="gate"),
            helper.make_node("Mul", ["a", "s"], ["m"], name="product"),
            helper.make_node("MatMul", ["m", "wo"], ["y"], name="out"),
        ],
        lambda x: (_relu(x @ W["wa"]) * (1 / (1 + np.exp(-x)))) @ W["wo"],
        (),
    ),
    "Mul of two linear layers": (
        [
            helper.make_node("MatMul", ["x", "wa"], ["h1"], name="left"),
            helper.make_node("MatMul", ["x", "wr"], ["h2"], name="right"),
            helper.make_node("Mul", ["h1", "h2"], ["m"], name="product"),
            helper.make_node("MatMul", ["m", "wo"], ["y"], name="out"),
        ],
        lambda x: ((x @ W["wa"]) * (x @ W["wr"])) @ W["wo"],
        (),
    ),
    "Mul of a tensor by itself": (
        [
            helper.make_node("Tanh", ["x"], ["t"], name="act"),
            helper.make_node("Mul", ["t", "t"], ["m"], name="square"),
            helper.make_node("MatMul", ["m", "wo"], ["y"], name="out"),
        ],
        lambda x: np.tanh(x) ** 2 @ W["wo"],
        (),
    ),
    "Sub of two branches": (
        [
            helper.make_node("MatMul", ["x", "wa"], ["h"], name="inner"),
            helper.make_node("Relu", ["h"], ["a"], name="act"),
            helper.make_node("Sigmoid", ["x"], ["s"], name="gate"),
            helper.make_node("Sub", ["a", "s"], ["d"], name="difference"),
            helper.make_node("MatMul", ["d", "wo"], ["y"], name="out"),
        ],
        lambda x: (_relu(x @ W["wa"]) - 1 / (1 + np.exp(-x))) @ W["wo"],
        (),
    ),
    "Concat of two branches": (
        [
            helper.make_node("MatMul", ["x", "wb"], ["h1"], name="left"),
            helper.make_node("Relu", ["h1"], ["a1"], name="left_act"),
            helper.make_node("MatMul", ["x", "wcut"], ["xs"], name="right"),
            helper.make_node("Tanh", ["xs"], ["a2"], name="right_act"),
            helper.make_node("Concat", ["a1", "a2"], ["c"], name="join", axis=1),
            helper.make_node("MatMul", ["c", "wo"], ["y"], name="out"),
        ],
        lambda x: np.concatenate([_relu(x @ W["wb"]), np.tanh(x[:, :2])], axis=1) @ W["wo"],
        (("wcut", np.eye(6)[:, :2]),),
    ),
    "constant minus x": (
        [
            helper.make_node("Sub", ["c", "x"], ["d"], name="flip"),
            helper.make_node("Relu", ["d"], ["a"], name="act"),
            helper.make_node("MatMul", ["a", "wo"], ["y"], name="out"),
        ],
        lambda x: _relu(0.5 - x) @ W["wo"],
        (("c", np.full(6, 0.5)),),
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_ops_between_encrypted_tensors_match_the_float_graph(case):
    nodes, reference, extra = CASES[case]
    x = RNG.normal(size=(300, 6))
    module = compile_onnx_model(_graph(nodes, extra=extra), x, n_bits=7, rounding_threshold_bits=7)
    expected = reference(x)
    error = np.abs(module.forward(x) - expected)
    assert error.mean() < 0.03 * np.ptp(expected), (case, error.mean(), np.ptp(expected))
    x_q = module.quantize_input(x[:40])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))


def test_concat_and_sub_cost_no_lookup_of_their_own():
    nodes, _, extra = CASES["Sub of two branches"]
    x = RNG.normal(size=(100, 6))
    module = onnx_to_module(_graph(nodes, extra=extra), x, n_bits=6)
    sub = next(op for op in module.ops if op.op_type == "Sub")
    assert sub.inputs == ["act", "gate"]


def test_concat_of_a_constant_and_division_by_a_tensor_are_refused_by_name():
    concat = _graph(
        [
            helper.make_node("Concat", ["x", "c"], ["z"], name="with_constant", axis=1),
            helper.make_node("MatMul", ["z", "wo"], ["y"], name="out"),
        ],
        extra=(("c", np.zeros((1, 0))),),
    )
    with pytest.raises(ValueError, match=r"'Concat' \('with_constant'\).*constant tensor"):
        onnx_to_module(concat, RNG.normal(size=(20, 6)))
    div = _graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="act"),
            helper.make_node("Div", ["x", "a"], ["m"], name="ratio"),
            helper.make_node("MatMul", ["m", "wo"], ["y"], name="out"),
        ]
    )
    with pytest.raises(ValueError, match=r"node #1: ONNX node 'Div' \('ratio'\).*must be a constant"):
        onnx_to_module(div, RNG.normal(size=(20, 6)))


def test_mul_of_wide_accumulators_reads_requantized_inputs():
    """The product's lookups read n_bits-wide integers, not the linear layers' accumulators."""
    nodes, _, extra = CASES["Mul of two linear layers"]
    x = RNG.normal(size=(100, 6))
    module = onnx_to_module(_graph(nodes, extra=extra), x, n_bits=5, rounding_threshold_bits=5)
    product = next(op for op in module.ops if op.op_type == "Mul")
    widths = module.bit_widths()
    assert all(widths[name] == 5 for name in product.inputs), widths  # one re-quantizing lookup each
    assert max(widths["left"], widths["right"]) > 8
    # the squares read one bit more than the inputs, and the product is re-quantized too
    assert max(np.max(np.abs(r)) for r in (*product.sum_range, *product.difference_range)) < 2**6
    assert widths["product"] <= 5 + 2 and product.divisor > 1


def test_an_exact_product_of_two_encrypted_inputs():
    """n_bits=None: the two lookups give the exact product of the centred integers."""
    a = RNG.normal(size=(200, 3))
    b = RNG.uniform(-1, 2, size=(200, 3))
    builder = GraphBuilder()
    builder.input(input_quantizer(a, 5), name="a")
    builder.input(input_quantizer(b, 4), name="b")
    builder.add("Mul", "a", "b", name="product")
    module = builder.build(a, b)
    qa, qb = module.quantize_input(a, b)
    (sa, sb) = module.input_specs
    expected = (qa - sa.zero_point) * (qb - sb.zero_point)
    np.testing.assert_array_equal(module.quantized_forward(qa, qb), expected)
    assert module.ops[0].divisor == 1.0
    module.compile((a, b))
    np.testing.assert_array_equal(module.quantized_forward(qa[:20], qb[:20], fhe="simulate"), expected[:20])
    assert module.fhe_circuit.programmable_bootstrap_count == 2 * 3  # two lookups per element


@pytest.mark.fhe_execute
def test_a_product_of_two_encrypted_tensors_executes():
    nodes, _, extra = CASES["Mul of two activations (a gate)"]
    x = RNG.normal(size=(100, 6))
    module = compile_onnx_model(_graph(nodes, extra=extra), x, n_bits=4, rounding_threshold_bits=4)
    x_q = module.quantize_input(x[:1])
    executed = module.quantized_forward(x_q, fhe="execute")
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q, fhe="simulate"))
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q))


def test_a_product_whose_lookups_outgrow_16_bits_is_a_clear_error():
    a = RNG.normal(size=(50, 2))
    builder = GraphBuilder()
    builder.input(input_quantizer(a, 16), name="a")
    builder.input(input_quantizer(a, 3), name="b")
    builder.add("Mul", "a", "b", name="product", n_bits=6)
    with pytest.raises(ValueError, match=r"Mul 'product'.*17-bit table lookups.*16-bit FHE limit: re-quantize"):
        builder.build(a, a)


def test_a_rounded_product_is_within_one_step():
    a = RNG.normal(size=(200, 3))
    b = RNG.normal(size=(200, 3))
    builder = GraphBuilder()
    builder.input(input_quantizer(a, 6), name="a")
    builder.input(input_quantizer(b, 6), name="b")
    builder.add("Mul", "a", "b", name="product", n_bits=5)
    module = builder.build(a, b)
    qa, qb = module.quantize_input(a, b)
    op = module.ops[0]
    exact = (qa - module.input_specs[0].zero_point) * (qb - module.input_specs[1].zero_point) / op.divisor
    out = module.quantized_forward(qa, qb)
    assert op.divisor > 1 and np.all(np.abs(out - exact) <= 1)
    assert np.all((out >= op.output_spec.lo) & (out <= op.output_spec.hi))
    assert op.output_spec.bit_width <= 7


class _ResidualMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(6, 6)
        self.side = torch.nn.Linear(6, 2)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x):
        h = x + torch.relu(self.inner(x))
        return self.out(torch.cat([h, torch.tanh(self.side(x))], dim=1))


def test_a_torch_residual_network_with_a_concat_compiles():
    torch.manual_seed(0)
    net = _ResidualMLP().eval()
    x = RNG.normal(size=(300, 6))
    module = compile_torch_model(net, x, n_bits=7, rounding_threshold_bits=7)
    assert {"Add", "Concat"} <= {op.op_type for op in module.ops}
    with torch.no_grad():
        expected = net(torch.tensor(x, dtype=torch.float32)).numpy()
    assert np.mean(module.forward(x).argmax(1) == expected.argmax(1)) >= 0.95
    x_q = module.quantize_input(x[:40])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))


class _GatedResidualMLP(torch.nn.Module):
    """A residual block over a linear layer, a gate multiplying two branches, a concat."""

    def __init__(self):
        super().__init__()
        self.inner = torch.nn.Linear(64, 16)
        self.block = torch.nn.Linear(16, 16)
        self.gate = torch.nn.Linear(64, 16)
        self.out = torch.nn.Linear(32, 10)

    def forward(self, x):
        h = torch.relu(self.inner(x))
        r = torch.relu(h + self.block(h))
        return self.out(torch.cat([r * torch.sigmoid(self.gate(x)), h], dim=1))


def test_a_torch_gated_residual_network_on_digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from benchmarks.byo_network import train

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.2, random_state=0)
    torch.manual_seed(0)
    net = train(_GatedResidualMLP(), X_train, y_train)
    with torch.no_grad():
        float_accuracy = np.mean(net(torch.tensor(X_test, dtype=torch.float32)).argmax(1).numpy() == y_test)
    module = compile_torch_model(net, X_train, n_bits=7, rounding_threshold_bits=7)
    assert {"Add", "Mul", "Concat"} <= {op.op_type for op in module.ops}
    product = next(op for op in module.ops if op.op_type == "Mul")
    assert product.constant is None and product.output_spec.bit_width <= 7 + 2
    accuracy = np.mean(module.forward(X_test).argmax(1) == y_test)
    assert accuracy >= float_accuracy - 0.02, (accuracy, float_accuracy)
    x_q = module.quantize_input(X_test[:30])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))

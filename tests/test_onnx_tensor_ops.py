"""ONNX ops between two encrypted tensors: residual Add, Sub, Concat (and constant - x)."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from fhe_sklearn.onnx import compile_onnx_model, onnx_to_module
from fhe_sklearn.torch import compile_torch_model

RNG = np.random.default_rng(0)
SHAPES = {"wa": (6, 6), "wb": (6, 4), "wo": (6, 3)}
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


def test_concat_of_a_constant_and_mul_of_two_tensors_are_refused_by_name():
    concat = _graph(
        [
            helper.make_node("Concat", ["x", "c"], ["z"], name="with_constant", axis=1),
            helper.make_node("MatMul", ["z", "wo"], ["y"], name="out"),
        ],
        extra=(("c", np.zeros((1, 0))),),
    )
    with pytest.raises(ValueError, match=r"'Concat' \('with_constant'\).*constant tensor"):
        onnx_to_module(concat, RNG.normal(size=(20, 6)))
    mul = _graph(
        [
            helper.make_node("Relu", ["x"], ["a"], name="act"),
            helper.make_node("Mul", ["x", "a"], ["m"], name="product"),
            helper.make_node("MatMul", ["m", "wo"], ["y"], name="out"),
        ]
    )
    with pytest.raises(ValueError, match=r"'Mul' \('product'\)"):
        onnx_to_module(mul, RNG.normal(size=(20, 6)))


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

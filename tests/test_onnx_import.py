"""Bring your own network: torch and ONNX graphs through the one QuantizedModule."""

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from benchmarks.byo_network import QATLinear, fake_quantize, train
from fhe_sklearn.onnx import compile_onnx_model, onnx_to_module
from fhe_sklearn.torch import compile_torch_model


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X / 16.0, y, test_size=0.2, random_state=0)


def float_accuracy(net, X, y):
    with torch.no_grad():
        return float(np.mean(net(torch.tensor(X, dtype=torch.float32)).argmax(1).numpy() == y))


def check_fhe_model(module, X_test, y_test, float_acc, n_simulated=60):
    x_q = module.quantize_input(X_test[:n_simulated])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))
    accuracy = float(np.mean(module.forward(X_test).argmax(1) == y_test))
    assert accuracy >= float_acc - 0.02, (accuracy, float_acc)
    return accuracy


def test_mlp_on_digits(digits):
    X_train, X_test, y_train, y_test = digits
    torch.manual_seed(0)
    net = train(
        torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)), X_train, y_train
    )
    module = compile_torch_model(net, X_train, n_bits=6, rounding_threshold_bits=6)
    check_fhe_model(module, X_test, y_test, float_accuracy(net, X_test, y_test))
    # no lookup reads more than the rounding threshold: the 32 ReLUs read 6-bit values
    truncations = [op for op in module.ops if op.op_type == "TruncateToBits"]
    assert len(truncations) == 1 and truncations[0].output_spec.bit_width - truncations[0].lsbs <= 6


def test_cnn_on_digits_with_batchnorm_folded(digits):
    X_train, X_test, y_train, y_test = (a.reshape(-1, 1, 8, 8) if a.ndim == 2 else a for a in digits)
    torch.manual_seed(0)
    layers = [
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(36, 10),
        torch.nn.Softmax(dim=1),
    ]
    net = train(torch.nn.Sequential(*layers), X_train, y_train)
    module = compile_torch_model(net, X_train, n_bits=6, rounding_threshold_bits=6)
    assert [op.op_type for op in module.ops] == ["Conv", "TruncateToBits", "Relu", "AveragePool", "Reshape", "Gemm"]
    assert module.post_processing == "softmax"  # left to the client
    check_fhe_model(module, X_test, y_test, float_accuracy(net, X_test, y_test))


def handmade_graph(op_type="Relu", weight=None):
    """A Gemm → op → Gemm graph written with onnx.helper (not exported by torch)."""
    rng = np.random.default_rng(0)
    w1 = weight if weight is not None else rng.normal(size=(4, 3))
    w2 = rng.normal(size=(3, 2))
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        helper.make_node(op_type, ["h"], ["a"], name="activation"),
        helper.make_node("Gemm", ["a", "w2", "b2"], ["y"], name="second"),
    ]
    graph = helper.make_graph(
        nodes,
        "handmade",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w1.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        initializer=[
            numpy_helper.from_array(w1.astype(np.float32), "w1"),
            numpy_helper.from_array(w2.astype(np.float32), "w2"),
            numpy_helper.from_array(np.array([0.5, -0.5], dtype=np.float32), "b2"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w1, w2


def test_a_graph_built_with_onnx_helper_compiles(rng):
    model, w1, w2 = handmade_graph("Tanh")
    x = rng.normal(size=(200, 4))
    module = compile_onnx_model(model, x, n_bits=7)
    reference = np.tanh(x @ w1) @ w2 + np.array([0.5, -0.5])
    error = np.abs(module.forward(x) - reference)
    assert error.mean() < 0.03 * np.ptp(reference) and error.max() < 0.2 * np.ptp(reference)
    x_q = module.quantize_input(x[:30])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))
    # the same graph as serialized bytes
    assert onnx_to_module(model.SerializeToString(), x, n_bits=7).ops[0].op_type == "Gemm"


def test_unsupported_op_is_refused_at_import_with_its_position(rng):
    model, *_ = handmade_graph("Cos")
    with pytest.raises(ValueError, match=r"node #1: ONNX node 'Cos' \('activation'\) is not supported in FHE"):
        onnx_to_module(model, rng.normal(size=(20, 4)))


def test_accumulator_over_16_bits_is_a_clear_error_naming_the_op(rng):
    model, *_ = handmade_graph("Relu", weight=np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"'first'.*cannot fit a 16-bit accumulator.*lower the n_bits.*prune"):
        onnx_to_module(model, rng.normal(size=(20, 4)), n_bits={"op_inputs": 6, "model_inputs": 16})


def test_every_op_reports_its_bit_width(rng):
    model, *_ = handmade_graph("Relu")
    module = onnx_to_module(model, rng.normal(size=(50, 4)), n_bits=5, rounding_threshold_bits=4)
    widths = module.bit_widths()
    assert list(widths) == ["x", *(op.name for op in module.ops)]
    assert widths["x"] == 5 and widths["activation"] <= 6  # a 5-bit unsigned grid, maybe widened by the fusion
    truncate = next(op for op in module.ops if op.op_type == "TruncateToBits")
    # the lookup reads the accumulator's 4 high bits (the cleared low bits stay zeros)
    assert widths[truncate.name] - truncate.lsbs <= 4 < widths["first"]


def test_n_bits_dict_is_validated(rng):
    model, *_ = handmade_graph()
    with pytest.raises(ValueError, match="'op_inputs' required"):
        onnx_to_module(model, rng.normal(size=(20, 4)), n_bits={"op_weights": 4})
    with pytest.raises(ValueError, match="graph has 1 input"):
        onnx_to_module(model, (rng.normal(size=(20, 4)), rng.normal(size=(20, 4))))
    with pytest.raises(TypeError, match=r"onnx\.ModelProto"):
        onnx_to_module(42, rng.normal(size=(20, 4)))
    with pytest.raises(TypeError, match=r"torch\.nn\.Module"):
        compile_torch_model(model, rng.normal(size=(20, 4)))


@pytest.mark.fhe_execute
def test_execute_equals_simulate_on_one_row(rng):
    model, *_ = handmade_graph("Relu")
    x = rng.normal(size=(100, 4))
    module = compile_onnx_model(model, x, n_bits=4, rounding_threshold_bits=4)
    x_q = module.quantize_input(x[:1])
    executed = module.quantized_forward(x_q, fhe="execute")
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q, fhe="simulate"))
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q))


def test_qat_mlp_on_digits_keeps_the_learned_grids(digits):
    from fhe_sklearn.torch import compile_qat_model

    X_train, X_test, y_train, y_test = digits
    torch.manual_seed(0)
    layers = [fake_quantize(4), QATLinear(64, 32, 4), torch.nn.ReLU(), fake_quantize(4), QATLinear(32, 10, 4)]
    net = train(torch.nn.Sequential(*layers), X_train, y_train, epochs=200)
    input_scale = float(layers[0].scale)
    module = compile_qat_model(net, X_train, n_bits=8, rounding_threshold_bits=6)
    # the learned 4-bit grids are the circuit's: input quantizer, ReLU output
    assert module.input_quantizer.options.n_bits == 4
    assert np.isclose(float(module.input_quantizer.scale), input_scale)
    relu = next(op for op in module.ops if op.op_type == "Relu")
    assert relu.output_quantizer.options.n_bits == 4 and np.isclose(relu.output_quantizer.scale, float(layers[3].scale))
    assert float(layers[0].scale) == input_scale  # export froze the observers
    # the learned integer weights are the circuit's, not re-quantized to n_bits=8
    gemms = [op for op in module.ops if op.op_type == "Gemm"]
    for gemm, layer in zip(gemms, (layers[1], layers[4])):
        fq = layer.weight_quantizer  # called directly, its observer would move the scale
        args = (fq.scale, fq.zero_point, fq.ch_axis, fq.quant_min, fq.quant_max)
        with torch.no_grad():
            fake_quantized = torch.fake_quantize_per_channel_affine(layer.weight, *args).double().numpy()
        scale = fq.scale.detach().double().numpy()
        learned = np.rint(fake_quantized / scale[:, None])
        np.testing.assert_array_equal(gemm.weight_q.T, learned)
        assert np.abs(learned).max() <= 8 and np.allclose(gemm.weight_scale, scale)
    check_fhe_model(module, X_test, y_test, float_accuracy(net, X_test, y_test))


def test_qat_weights_half_way_between_levels_keep_torchs_integers(rng):
    """torch rounds w * (1 / scale), ONNX's QuantizeLinear w / scale: on weights half-way
    between two levels they differ, and the circuit must keep the integers torch trained."""
    from fhe_sklearn.torch import compile_qat_model

    scales = torch.tensor([0.1, 0.07, 0.3, 0.013])
    halves = (torch.arange(-7, 7).float() + 0.5)[None, :] * scales[:, None]
    weight = torch.cat([halves, torch.nextafter(halves, halves.sign() * 1e9)], dim=1)
    layers = [fake_quantize(4), QATLinear(weight.shape[1], 4, 4)]
    with torch.no_grad():
        layers[1].weight.copy_(weight)
    quantizer = layers[1].weight_quantizer
    quantizer.disable_observer()
    quantizer.scale, quantizer.zero_point = scales.clone(), torch.zeros(4, dtype=torch.int32)
    net = torch.nn.Sequential(*layers).eval()
    x = rng.normal(size=(50, weight.shape[1]))
    net(torch.tensor(x, dtype=torch.float32))  # the input observer sees the data once
    args = (scales, quantizer.zero_point, 0, -8, 7)
    trained = torch.fake_quantize_per_channel_affine(weight, *args) / scales[:, None]
    trained = torch.round(trained).numpy()
    divided = np.clip(np.rint(weight.numpy() / scales.numpy()[:, None]), -8, 7)
    assert np.any(divided != trained)  # the case this test is about
    module = compile_qat_model(net, x, n_bits=8, rounding_threshold_bits=6)
    np.testing.assert_array_equal(module.ops[0].weight_q.T, trained)
    np.testing.assert_array_equal(layers[1].weight.detach().numpy(), weight.numpy())  # restored after export


def test_fake_quantized_conv_weights_stay_on_their_grid_through_batchnorm(rng):
    """QuantizeLinear → DequantizeLinear on a Conv weight (per channel), then a folded
    BatchNormalization: the circuit's integers are the learned ones (signs flipped where the
    BatchNorm factor is negative), whatever n_bits says."""
    ints = rng.integers(-8, 8, size=(3, 2, 3, 3))
    scales = np.array([0.05, 0.2, 0.011], dtype=np.float32)
    gamma = np.array([1.5, -0.7, 0.9], dtype=np.float32)
    constants = {
        "w": (ints * scales[:, None, None, None]).astype(np.float32),
        "s": scales,
        "z": np.zeros(3, dtype=np.int8),
        "gamma": gamma,
        "beta": np.array([0.1, 0.0, -0.2], dtype=np.float32),
        "mean": np.array([0.3, -0.1, 0.0], dtype=np.float32),
        "var": np.array([2.0, 0.5, 1.0], dtype=np.float32),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"], axis=0),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wdq"], axis=0),
        helper.make_node("Conv", ["x", "wdq"], ["c"], name="conv"),
        helper.make_node("BatchNormalization", ["c", "gamma", "beta", "mean", "var"], ["y"], name="bn"),
    ]
    graph = helper.make_graph(
        nodes,
        "qat_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 4, 4])],
        initializer=[numpy_helper.from_array(v, k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    x = rng.normal(size=(40, 2, 6, 6))
    module = onnx_to_module(model, x, n_bits=8)
    conv = module.ops[0]
    np.testing.assert_array_equal(conv.weight_q, ints * np.sign(gamma).astype(int)[:, None, None, None])
    factor = gamma / np.sqrt(constants["var"] + 1e-5)
    np.testing.assert_allclose(conv.weight_scale, scales * np.abs(factor), rtol=1e-6)
    reference = ReferenceEvaluator(model).run(None, {"x": x.astype(np.float32)})[0]
    assert np.abs(module.forward(x) - reference).mean() < 0.02 * np.ptp(reference)


def test_learned_weights_over_16_bits_name_the_op_and_the_fix(rng):
    """Learned integer weights are not coarsened to fit: the error names the layer and asks
    for fewer training bits or pruning (n_bits cannot help)."""
    constants = {
        "w": np.full((40, 2), 7 * 0.1, np.float32),
        "s": np.array(0.1, np.float32),
        "z": np.int8(0),
        "sx": np.array(0.02, np.float32),
        "zx": np.uint8(128),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),  # a learned 8-bit input grid
        helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xdq"]),
        helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"]),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wdq"]),
        helper.make_node("MatMul", ["xdq", "wdq"], ["y"], name="learned"),
    ]
    graph = helper.make_graph(
        nodes,
        "qat_wide",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 40])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    with pytest.raises(ValueError, match=r"'learned' needs a 17-bit integer.*16-bit FHE limit: train with fewer"):
        onnx_to_module(model, rng.normal(size=(20, 40)))


def test_qat_model_without_fake_quantization_is_refused(rng):
    from fhe_sklearn.torch import compile_qat_model

    with pytest.raises(ValueError, match=r"no torch\.ao FakeQuantize"):
        compile_qat_model(torch.nn.Linear(4, 2), rng.normal(size=(20, 4)))


def test_quantize_dequantize_without_activation_becomes_a_lookup(rng):
    """A Q/DQ pair right after a Gemm re-quantizes it onto the grid (onnx.helper graph)."""
    w = rng.normal(size=(4, 3))
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("QuantizeLinear", ["h", "s", "z"], ["q"], name="q"),
        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq"),
    ]
    graph = helper.make_graph(
        nodes,
        "qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3])],
        initializer=[
            numpy_helper.from_array(w.astype(np.float32), "w"),
            numpy_helper.from_array(np.array(0.05, dtype=np.float32), "s"),
            numpy_helper.from_array(np.array(-3, dtype=np.int8), "z"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.normal(size=(100, 4))
    module = compile_onnx_model(model, x, n_bits=8)
    assert [op.op_type for op in module.ops] == ["Gemm", "TruncateToBits", "QuantizeDequantize"]
    y = module.forward(x)
    np.testing.assert_allclose(y / 0.05, np.rint(y / 0.05), atol=1e-4)  # on the grid
    reference = (np.clip(np.rint(x @ w / 0.05) - 3, -128, 127) + 3) * 0.05
    assert np.mean(np.abs(y - reference)) < 0.1 * np.ptp(reference)  # 6-bit rounding before the lookup

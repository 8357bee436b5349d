"""Lean imported networks (issue 28): weights take only the bits the truncation after them
keeps, and constant input features get a step like the others. The figures are those
``python -m benchmarks.lean`` reports for the digits MLP (benchmarks/results/lean.md)."""

import numpy as np
import pytest

from benchmarks.byo_network import train
from benchmarks.lean_networks import build, digits, shaped
from fhe_sklearn.onnx.calibration import input_quantizer
from fhe_sklearn.quantization.weight_bits import fewest_weight_bits, truncation_variance, weight_error_variance

torch = pytest.importorskip("torch")
from fhe_sklearn.torch import compile_torch_model  # noqa: E402


@pytest.fixture(scope="module")
def digits_mlp():
    X_train, X_test, y_train, y_test = digits()
    net = train(build("mlp"), X_train, y_train, 150)
    with torch.no_grad():
        float_accuracy = np.mean(net(torch.tensor(X_test, dtype=torch.float32)).argmax(1).numpy() == y_test)
    module = compile_torch_model(net, X_train, n_bits=6, rounding_threshold_bits=5)
    return module, X_test, y_test, float_accuracy


def test_constant_features_get_the_step_of_the_others():
    x = np.array([[0.0, 0.0, 2.0], [0.0, 1.0, 2.0], [0.0, 0.3, 2.0]])  # no lattice: min-max grids
    quantizer = input_quantizer(x, 4)
    np.testing.assert_allclose(quantizer.scale, [1 / 15] * 3)
    # centred on the constant: it and unseen values around it stay on the grid
    q = quantizer.quant(np.array([[0.0, 0.0, 2.0], [0.4, 0.0, 1.6]]))
    np.testing.assert_allclose(quantizer.dequant(q), [[0.0, 0.0, 2.0], [0.4, 0.0, 1.6]], atol=0.5 / 15)
    # all constant: nothing to take a step from, the default grid
    assert np.all(input_quantizer(np.zeros((3, 2)), 4).scale == 1.0)


def test_fewest_weight_bits_stops_at_the_first_noisier_width():
    errors = {6: 0.1, 5: 0.2, 4: 0.5, 3: 2.0, 2: 0.1}
    assert fewest_weight_bits(6, lambda b: (errors[b], 1.0)) == 4
    assert fewest_weight_bits(6, lambda b: (9.0, 1.0)) == 6
    assert truncation_variance(np.array([1.0, 2.0]), 7, 5) == pytest.approx((16 + 64) / 12)
    assert truncation_variance(np.array([1.0]), 4, 5) == pytest.approx(1 / 12)
    # the mean error is not counted (bias correction removes it)
    assert weight_error_variance(np.array([[1.0, 3.0], [1.0, 5.0]])) == pytest.approx(1.0)


def test_digits_mlp_accumulators_stay_narrow(digits_mlp):
    module, X_test, y_test, float_accuracy = digits_mlp
    circuit = module.fhe_circuit
    gemms = [op for op in module.ops if op.op_type == "Gemm"]
    # 6-bit weights gave 16-bit accumulators, 320 truncation PBS and 277 MB of keys; 3 bits
    # add less error than the truncation to 5 bits, for the output too (read at 6 bits); the
    # pixels' 17-level lattice (a min-max grid: 64 codes) makes the first one 11 bits, not 13
    assert [op.weight_bits for op in gemms] == [3, 3]
    assert [op.output_spec.bit_width for op in gemms] == [11, 12]
    assert circuit.graph.maximum_integer_bit_width() == 12
    assert circuit.programmable_bootstrap_count == 32 * (11 - 5) + 32
    assert len(circuit.statistics["programmable_bootstrap_count_per_parameter"]) == 2
    assert circuit.complexity <= 2.0e10  # Concrete ML 1.9, same net and bits: 3.77e10
    x_q = module.quantize_input(X_test)
    simulated = module.quantized_forward(x_q, fhe="simulate")
    np.testing.assert_array_equal(simulated, module.quantized_forward(x_q, fhe="disable"))
    assert np.mean(module.dequantize_output(simulated).argmax(1) == y_test) >= float_accuracy - 0.01


@pytest.mark.fhe_execute
def test_digits_mlp_keys_and_execute(digits_mlp):
    module, X_test, _, _ = digits_mlp
    circuit = module.fhe_circuit
    circuit.keygen(force=True)
    assert len(circuit.keys.evaluation.serialize()) / 1e6 <= 130  # 114 MB; issue 28: <= 150
    x_q = module.quantize_input(X_test[:1])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="execute"), module.quantized_forward(x_q))


def test_without_rounding_weights_keep_their_bits():
    X_train, _, y_train, _ = digits()
    net = train(build("mlp"), X_train[:200], y_train[:200], 20)
    from fhe_sklearn.onnx import onnx_to_module
    from fhe_sklearn.torch import export_onnx

    module = onnx_to_module(export_onnx(net, X_train[:200]), X_train[:200], n_bits=4, rounding_threshold_bits=None)
    assert [op.weight_bits for op in module.ops if op.op_type == "Gemm"] == [4, 4]


def test_cnn_conv_weights_follow_the_truncation():
    X_train, X_test, y_train, _ = digits()
    X_train, X_test = shaped("cnn", X_train), shaped("cnn", X_test)
    net = train(build("cnn"), X_train, y_train, 150)
    module = compile_torch_model(net, X_train, n_bits=6, rounding_threshold_bits=5)
    conv = next(op for op in module.ops if op.op_type == "Conv")
    assert conv.weight_bits == 3 and conv.output_spec.bit_width == 10  # 6-bit weights: 15; min-max pixels: 12
    assert module.fhe_circuit.graph.maximum_integer_bit_width() <= 15
    x_q = module.quantize_input(X_test[:20])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))

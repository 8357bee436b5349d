"""Brevitas QAT networks: the circuit computes brevitas' integer model exactly."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from fhe_sklearn.quantization.report import integer_values
from fhe_sklearn.torch import compile_brevitas_qat_model

qnn = pytest.importorskip("brevitas.nn")
Int32Bias = pytest.importorskip("brevitas.quant").Int32Bias
N_SIMULATED = 120


class MLP(torch.nn.Module):
    """64-32-10, 3-bit input, weights (per tensor) and activations."""

    def __init__(self, bits: int = 3) -> None:
        super().__init__()
        self.q0 = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
        self.fc1 = qnn.QuantLinear(64, 32, weight_bit_width=bits, bias_quant=Int32Bias, return_quant_tensor=True)
        self.r1 = qnn.QuantReLU(bit_width=bits, return_quant_tensor=True)
        self.fc2 = qnn.QuantLinear(32, 10, weight_bit_width=bits, bias_quant=Int32Bias)

    def hidden(self, x):
        return self.r1(self.fc1(self.q0(x)))

    def forward(self, x):
        return self.fc2(self.hidden(x))


class CNN(torch.nn.Module):
    """4-bit Conv(1→4, 3×3, stride 2, per-channel weights) → ReLU → Linear(36→10)."""

    def __init__(self, bits: int = 4) -> None:
        super().__init__()
        self.q0 = qnn.QuantIdentity(bit_width=bits, return_quant_tensor=True)
        self.conv = qnn.QuantConv2d(
            1,
            4,
            3,
            stride=2,
            weight_bit_width=bits,
            weight_scaling_per_output_channel=True,
            bias_quant=Int32Bias,
            return_quant_tensor=True,
        )
        self.r1 = qnn.QuantReLU(bit_width=bits, return_quant_tensor=True)
        self.fc = qnn.QuantLinear(36, 10, weight_bit_width=bits, bias_quant=Int32Bias)

    def hidden(self, x):
        return self.r1(self.conv(self.q0(x)))

    def forward(self, x):
        return self.fc(torch.flatten(self.hidden(x), 1))


def _train(net, X, y, epochs=3):
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(net.parameters(), 0.03)
    X, y = torch.tensor(X), torch.tensor(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs):
            order = torch.randperm(len(X))
            for start in range(0, len(X), 128):
                batch = order[start : start + 128]
                optimizer.zero_grad()
                torch.nn.functional.cross_entropy(net(X[batch]), y[batch]).backward()
                optimizer.step()
    return net.eval()


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    return train_test_split((X / 16.0).astype(np.float32), y, test_size=0.2, random_state=0)


@pytest.fixture(scope="module")
def mlp(digits):
    X_train, _, y_train, _ = digits
    torch.manual_seed(0)
    return _train(MLP(), X_train, y_train)


def _check_exact(net, module, X_test, y_test):
    with torch.no_grad():
        quantized_input = net.q0(torch.tensor(X_test))
        hidden = net.hidden(torch.tensor(X_test))
        fake_quantized = net(torch.tensor(X_test)).numpy()
    # the input grid: brevitas' signed integers, shifted onto the circuit's unsigned ones
    qmin = -(2 ** (quantized_input.bit_width.int().item() - 1))
    np.testing.assert_array_equal(module.quantize_input(X_test), quantized_input.int().numpy() - qmin)
    values = integer_values(module, X_test)
    relu = next(op for op in module.ops if op.op_type == "Relu")
    np.testing.assert_array_equal(values[relu.name], hidden.int().numpy())
    linear = [op for op in module.ops if op.op_type in ("Gemm", "Conv")]
    layers = [m for m in net.modules() if isinstance(m, (qnn.QuantLinear, qnn.QuantConv2d))]
    for op, layer in zip(linear, layers):
        integers = layer.quant_weight().int().numpy()
        np.testing.assert_array_equal(op.weight_q, integers.T if op.op_type == "Gemm" else integers)
    # the de-quantized output is brevitas' float output (float32 rounding apart)
    disabled = module.forward(X_test)
    np.testing.assert_allclose(disabled, fake_quantized, atol=1e-4)
    rows = slice(0, N_SIMULATED)
    simulated = module.forward(X_test[rows], fhe="simulate")
    np.testing.assert_array_equal(simulated, disabled[rows])
    accuracy = np.mean(simulated.argmax(1) == y_test[rows])
    brevitas_accuracy = np.mean(fake_quantized[rows].argmax(1) == y_test[rows])
    print(
        f"\n{type(net).__name__}: simulate {accuracy:.3f}, brevitas {brevitas_accuracy:.3f}, {module.circuit_report()}"
    )
    assert abs(accuracy - brevitas_accuracy) <= 0.01
    assert accuracy >= 0.8
    return linear


def test_brevitas_mlp_3_bits_is_exact(mlp, digits):
    _, X_test, _, y_test = digits
    module = compile_brevitas_qat_model(mlp, digits[0])
    linear = _check_exact(mlp, module, X_test, y_test)
    assert all(np.ndim(op.weight_scale) == 0 or np.unique(op.weight_scale).size == 1 for op in linear)


@pytest.fixture(scope="module")
def cnn_case(digits):
    X_train, X_test, y_train, y_test = (a.reshape(-1, 1, 8, 8) if a.ndim == 2 else a for a in digits)
    return _train(CNN(), X_train, y_train), X_train, X_test, y_test


def test_brevitas_cnn_4_bits_per_channel_is_exact(cnn_case):
    cnn, X_train, X_test, y_test = cnn_case
    module = compile_brevitas_qat_model(cnn, X_train)
    conv = _check_exact(cnn, module, X_test, y_test)[0]
    assert np.unique(conv.weight_scale).size == 4  # one learned scale per output channel


@pytest.mark.fhe_execute
@pytest.mark.parametrize("case", ["mlp", "cnn"])
def test_exact_brevitas_circuit_executes(case, mlp, digits, request):
    """The exact circuit itself (brevitas' integers): its ~10-bit lookups are decomposed into
    narrower ones (quantization/wide_lookup.py), so its keys are ~160 MB, not gigabytes."""
    if case == "mlp":
        net, X_train, X_test = mlp, digits[0], digits[1]
    else:
        net, X_train, X_test, _ = request.getfixturevalue("cnn_case")
    module = compile_brevitas_qat_model(net, X_train)
    report = module.circuit_report()
    assert report["max_bit_width"] >= 10 and max(report["pbs_by_precision"]) <= 5, report
    row = X_test[:1]
    np.testing.assert_array_equal(module.forward(row, fhe="execute"), module.forward(row, fhe="simulate"))
    assert len(module.fhe_circuit.keys.evaluation.serialize()) < 300e6  # one 10-bit lookup: ~14 GB


def test_a_model_without_brevitas_layers_is_refused(digits):
    with pytest.raises(ValueError, match="no brevitas layer: use compile_torch_model"):
        compile_brevitas_qat_model(torch.nn.Linear(64, 10), digits[0])

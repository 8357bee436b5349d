"""Concrete ML's custom-op API: QuantizedOp subclasses named after ONNX ops, used by the import."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from sklearn.preprocessing import StandardScaler

from fhe_sklearn.onnx import onnx_to_module
from fhe_sklearn.quantization import (
    CUSTOM_ONNX_OPS,
    QuantizedAbs,
    QuantizedArray,
    QuantizedCustomGemm,
    QuantizedCustomOp,
    QuantizedOp,
    unregister_custom_op,
)
from fhe_sklearn.torch import compile_torch_model, export_onnx


class AbsNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(4, 8), torch.nn.Linear(8, 3)

    def forward(self, x):
        return self.b(torch.abs(self.a(x)))


@pytest.fixture(scope="module")
def abs_net():
    X, y = load_iris(return_X_y=True)
    X = StandardScaler().fit_transform(X).astype(np.float32)
    torch.manual_seed(0)
    net = AbsNet()
    optimizer = torch.optim.Adam(net.parameters(), 0.05)
    for _ in range(150):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(torch.tensor(X)), torch.tensor(y)).backward()
        optimizer.step()
    return net, X, y


@pytest.fixture
def clean_registry():
    yield
    for name in list(CUSTOM_ONNX_OPS):
        unregister_custom_op(name)


def define_guide_ops():
    """The guide's QuantizedGemm and QuantizedAbs, completed (Gemm as Concrete ML's own ends:
    the integer product, returned with make_output_quant_parameters)."""

    class QuantizedGemm(QuantizedOp):
        """Quantized Gemm op."""

        _impl_for_op_named: str = "Gemm"

        def q_impl(self, *q_inputs: QuantizedArray, **attrs) -> QuantizedArray:
            prepared_inputs = self._prepare_inputs_with_constants(
                *q_inputs, calibrate=False, quantize_actual_values=True
            )
            q_input: QuantizedArray = prepared_inputs[0]
            q_weights: QuantizedArray = prepared_inputs[1]
            q_bias = None if len(prepared_inputs) == 2 or attrs.get("beta", 1) == 0 else prepared_inputs[2]
            weights = np.transpose(q_weights.qvalues) if attrs.get("transB", 0) else q_weights.qvalues
            product = (q_input.qvalues - q_input.quantizer.zero_point) @ (weights - q_weights.quantizer.zero_point)
            m_matmul = q_input.quantizer.scale * q_weights.quantizer.scale
            zero_point = 0 if q_bias is None else -q_bias.values / m_matmul
            return self.make_output_quant_parameters(product, m_matmul, zero_point)

    class QuantizedAbs(QuantizedOp):
        """Quantized Abs op."""

        _impl_for_op_named: str = "Abs"

    return QuantizedGemm, QuantizedAbs


def test_guide_ops_compile_and_match_the_builtin_ones(abs_net, clean_registry):
    net, X, _ = abs_net
    onnx_model = export_onnx(net, X)
    builtin = onnx_to_module(onnx_model, X, n_bits=4)
    gemm, abs_op = define_guide_ops()
    unregister_custom_op("Gemm")  # the element-wise Abs alone: the built-in Abs's integers exactly
    abs_only = onnx_to_module(onnx_model, X, n_bits=4)
    assert [op.impl_class for op in abs_only.ops if isinstance(op, QuantizedCustomOp)] == [abs_op]
    np.testing.assert_array_equal(abs_only.forward(X), builtin.forward(X))

    assert CUSTOM_ONNX_OPS == {"Abs": abs_op}
    gemm, abs_op = define_guide_ops()  # same module and name: replaces the earlier definitions
    module = compile_torch_model(net, X, n_bits=4)
    kinds = [op.impl_class.__name__ for op in module.ops if isinstance(op, (QuantizedCustomOp, QuantizedCustomGemm))]
    assert kinds == ["QuantizedGemm", "QuantizedAbs", "QuantizedGemm"]
    # the built-in Gemm's quantization, the user's integer product: the built-in results exactly
    x_q = builtin.quantize_input(X)
    np.testing.assert_array_equal(module.quantized_forward(x_q), builtin.quantized_forward(x_q))
    np.testing.assert_array_equal(module.forward(X), builtin.forward(X))
    np.testing.assert_array_equal(module.forward(X[:12], fhe="simulate"), builtin.forward(X[:12]))
    builtin.compile(X)
    assert module.fhe_circuit.programmable_bootstrap_count == builtin.fhe_circuit.programmable_bootstrap_count
    unregister_custom_op(gemm)
    assert type(onnx_to_module(onnx_model, X, n_bits=4).ops[0]).__name__ == "QuantizedGemm"


def test_a_gemm_q_impl_must_return_the_accumulator(abs_net, clean_registry):
    net, X, _ = abs_net

    class FloatGemm(QuantizedOp):
        _impl_for_op_named = "Gemm"

        def q_impl(self, *q_inputs, **attrs):
            q_input, q_weights, q_bias = self._prepare_inputs_with_constants(*q_inputs, quantize_actual_values=True)
            return q_input.values @ q_weights.values + q_bias.values  # floats: would need a wide lookup

    with pytest.raises(ValueError, match=r"FloatGemm \(Gemm .*must return the integer product.*make_output_quant"):
        onnx_to_module(export_onnx(net, X), X, n_bits=4)


def test_ambiguous_registration_is_refused_until_unregistered(clean_registry):
    class First(QuantizedOp):
        _impl_for_op_named = "Abs"

    with pytest.raises(ValueError, match=r"'Abs' already has the custom implementation .*First.*ambiguous.*unregister"):

        class Second(QuantizedOp):
            _impl_for_op_named = "Abs"

    assert unregister_custom_op("Abs") is First and unregister_custom_op("Abs") is None

    class Third(QuantizedOp):
        _impl_for_op_named = "Abs"

    assert CUSTOM_ONNX_OPS["Abs"] is Third
    assert unregister_custom_op(First) is None and unregister_custom_op(Third) is Third


def test_bad_custom_ops_get_clear_errors(abs_net, clean_registry):
    with pytest.raises(TypeError, match="has no __init__"):

        class WithInit(QuantizedOp):
            _impl_for_op_named = "Relu"

            def __init__(self):
                pass

    with pytest.raises(TypeError, match="derives from QuantizedOp, not from the built-in QuantizedAbs"):

        class FromBuiltin(QuantizedAbs):
            _impl_for_op_named = "Abs"

    with pytest.raises(ValueError, match="must name an ONNX op type"):

        class Unnamed(QuantizedOp):
            _impl_for_op_named = ""

    class QuantizedSoftmax(QuantizedOp):
        _impl_for_op_named = "Softmax"

    net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(dim=1), torch.nn.Linear(3, 2))
    X = abs_net[1]
    with pytest.raises(ValueError, match=r"QuantizedSoftmax .* must be element-wise .* write its q_impl"):
        onnx_to_module(export_onnx(net, X), X, n_bits=4)

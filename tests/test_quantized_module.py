import numpy as np
import pytest

from fhe_sklearn.quantization import (
    PostTrainingQuantizer,
    QuantizationOptions,
    QuantizedAbs,
    QuantizedAdd,
    QuantizedGemm,
    QuantizedGreater,
    QuantizedIdentity,
    QuantizedLess,
    QuantizedLessOrEqual,
    QuantizedModule,
    QuantizedRelu,
    QuantizedReshape,
    QuantizedSigmoid,
    UniformQuantizer,
)
from fhe_sklearn.quantization.post_training import input_quantizer


def two_layer(rng, n_in=3, n_hidden=3, n_bits=2):
    x = rng.normal(size=(300, n_in))
    w1, b1 = rng.normal(size=(n_in, n_hidden)), rng.normal(size=n_hidden) * 0.1
    w2, b2 = rng.normal(size=(n_hidden, 2)), rng.normal(size=2) * 0.1
    layers = [
        {"type": "gemm", "weight": w1, "bias": b1},
        {"type": "relu"},
        {"type": "gemm", "weight": w2, "bias": b2},
    ]
    module = PostTrainingQuantizer(n_bits=n_bits).quantize_module(layers, x)
    reference = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    return module, x, reference


def test_ptq_tracks_float_model(rng):
    module, x, reference = two_layer(rng, n_in=4, n_hidden=6, n_bits=6)
    err = np.abs(module.forward(x) - reference)
    assert err.mean() < 0.08 * np.abs(reference).mean()


def test_more_bits_less_error(rng):
    errors = []
    for n_bits in (3, 4, 6):
        module, x, reference = two_layer(np.random.default_rng(1), n_in=4, n_hidden=6, n_bits=n_bits)
        errors.append(np.abs(module.forward(x) - reference).mean())
    assert errors[0] > errors[1] > errors[2]


def test_disable_equals_simulate_and_one_tlu_per_activation(rng):
    module, x, _ = two_layer(rng, n_in=4, n_hidden=5, n_bits=3)
    circuit = module.compile(x)
    assert module.fhe_circuit is circuit
    assert circuit.programmable_bootstrap_count == 5
    x_q = module.quantize_input(x[:60])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))


def test_fused_activation_chain_is_one_tlu(rng):
    x = rng.normal(size=(100, 3))
    ops = [
        QuantizedGemm("g", rng.normal(size=(3, 4)), n_bits=3),
        QuantizedRelu("r", inputs=["g"], n_bits=3),
        QuantizedSigmoid("s", inputs=["r"], n_bits=3),
        QuantizedIdentity("i", inputs=["s"], n_bits=2),
    ]
    module = QuantizedModule(input_quantizer(x, 3), ops)
    module.calibrate(x)
    circuit = module.compile(x)
    assert circuit.programmable_bootstrap_count == 4  # 4 elements, three ops fused per element
    x_q = module.quantize_input(x)
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))
    # fusing does not change the integer result: same as applying ops one by one
    staged = x_q
    for op in ops:
        staged = op.q_impl(staged)
    np.testing.assert_array_equal(module.quantized_forward(x_q), staged)


@pytest.mark.fhe_execute
def test_execute_equals_simulate_and_disable(rng):
    module, x, _ = two_layer(rng, n_in=3, n_hidden=3, n_bits=2)
    module.compile(x)
    x_q = module.quantize_input(x[:2])
    executed = module.quantized_forward(x_q, fhe="execute")
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q, fhe="simulate"))
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q, fhe="disable"))


def test_leveled_ops_and_comparisons(rng):
    x = rng.normal(size=(200, 4))
    ops = [
        QuantizedAbs("abs", n_bits=3),
        QuantizedAdd("shift", inputs=["abs"], constant=-0.5),
        QuantizedReshape("flat", (2, 2), inputs=["shift"]),
        QuantizedReshape("back", (4,), inputs=["flat"]),
        QuantizedLess("lt", threshold=0.0),
        QuantizedGreater("gt", threshold=np.array([0.0, 0.5, -0.5, 1.0])),
        QuantizedLessOrEqual("le", inputs=["back"], threshold=0.25),
        QuantizedAdd("sum", inputs=["lt", "gt"]),
        QuantizedAdd("total", inputs=["sum", "le"]),
    ]
    module = QuantizedModule(input_quantizer(x, 4), ops)
    module.calibrate(x)
    x_hat = module.input_quantizer.dequant(module.quantize_input(x))
    abs_q = ops[0].output_quantizer
    shifted = abs_q.dequant(abs_q.quant(np.abs(x_hat)))
    shifted_q = np.rint(shifted / abs_q.scale) + np.rint(-0.5 / abs_q.scale)
    expected = (x_hat < 0).astype(int) + (x_hat > ops[5].threshold) + (shifted_q * abs_q.scale <= 0.25)
    np.testing.assert_array_equal(module.forward(x), expected)
    circuit = module.compile(x)
    # lt, gt: one TLU per element each; abs and the constant shift fuse into one lookup, which
    # concrete merges with le's across the two reshapes
    assert circuit.programmable_bootstrap_count == 3 * 4
    x_q = module.quantize_input(x[:40])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))


def test_add_rescales_second_input(rng):
    x = rng.normal(size=(200, 2))
    ops = [
        QuantizedRelu("a", n_bits=4),
        QuantizedAbs("b", n_bits=3),
        QuantizedAdd("sum", inputs=["a", "b"]),
    ]
    module = QuantizedModule(input_quantizer(x, 5), ops)
    module.calibrate(x)
    assert ops[2].rescale
    y = module.forward(x)
    np.testing.assert_allclose(y, np.maximum(x, 0) + np.abs(x), atol=0.6)
    module.compile(x)
    x_q = module.quantize_input(x[:30])
    np.testing.assert_array_equal(module.quantized_forward(x_q, fhe="simulate"), module.quantized_forward(x_q))


def test_accumulator_over_16_bits_is_a_clear_error(rng):
    x = rng.normal(size=(50, 40))
    weight = rng.normal(size=(40, 1))
    with pytest.raises(ValueError, match=r"QuantizedGemm 'gemm_0' needs a 2\d-bit integer.*16-bit FHE limit"):
        PostTrainingQuantizer(n_bits=12).quantize_module([{"type": "gemm", "weight": weight}], x)


def test_exactly_17_bit_accumulator_is_refused():
    # 4 features in [0, 1] at 8 bits, centred (0..255 - 127) times 8-bit weights of 127:
    # 4 * 127 * 128 = 65024 > 2**15 - 1
    x = np.linspace(0, 1, 20)[:, None].repeat(4, axis=1)
    with pytest.raises(ValueError, match=r"QuantizedGemm 'gemm_0' needs a 17-bit integer \(range \[-64516, 65024\]\)"):
        PostTrainingQuantizer(n_bits=8).quantize_module([{"type": "gemm", "weight": np.ones((4, 1))}], x)
    module = PostTrainingQuantizer(n_bits=8).quantize_module([{"type": "gemm", "weight": np.ones((2, 1))}], x[:, :2])
    assert module.output_spec.bit_width == 16  # 2 * 127 * 128 = 32512 fits 16 bits


def test_accumulator_aware_gemm_fits_the_budget(rng):
    x = rng.normal(size=(50, 40))
    weight = rng.normal(size=(40, 3))
    module = PostTrainingQuantizer(n_bits=8, max_accumulator_bits=16).quantize_module(
        [{"type": "gemm", "weight": weight, "bias": np.ones(3)}], x
    )
    assert module.output_spec.bit_width <= 16
    # 40 inputs of 8 bits leave the weights ~2 effective bits: small mean error, no overflow
    err = np.abs(module.forward(x) - (x @ weight + 1))
    assert err.mean() < 0.02 * np.ptp(x @ weight)
    with pytest.raises(ValueError, match="cannot fit a 16-bit accumulator"):
        PostTrainingQuantizer(n_bits=12, max_accumulator_bits=16).quantize_module(
            [{"type": "gemm", "weight": weight}], x
        )


def test_errors_are_clear(rng):
    module, x, _ = two_layer(rng)
    with pytest.raises(ValueError, match="fhe must be one of"):
        module.forward(x, fhe="encrypt")
    with pytest.raises(RuntimeError, match="compile"):
        module.forward(x[:1], fhe="execute")
    with pytest.raises(RuntimeError, match="compile"):
        module.forward(x[:1], fhe="simulate")
    with pytest.raises(ValueError, match="NaN"):
        module.forward(np.full((1, 3), np.nan))
    with pytest.raises(ValueError, match=r"shape \(n_samples, 3\)"):
        module.forward(x[:, :2])
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\]"):
        module.quantized_forward(np.full((1, 3), 9))
    with pytest.raises(ValueError, match="must be integers"):
        module.quantized_forward(x[:1])
    with pytest.raises(ValueError, match="unknown type 'lstm'"):
        PostTrainingQuantizer().quantize_module([{"type": "lstm"}], x)
    with pytest.raises(ValueError, match="exactly the keys"):
        PostTrainingQuantizer(n_bits={"op_inputs": 4}).quantize_module([{"type": "relu"}], x)
    with pytest.raises(ValueError, match="reads"):
        QuantizedModule(UniformQuantizer(QuantizationOptions(2), scale=1.0), [QuantizedRelu("r", inputs=["nothing"])])

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fhe_sklearn.quantization import (
    MinMaxQuantizationStats,
    QuantizationOptions,
    QuantizedArray,
    UniformQuantizer,
    integer_bit_width,
)


def test_seed_reference_values(quantization_reference):
    ref = quantization_reference
    np.random.seed(0)  # noqa: NPY002 -- the reference is defined with the legacy global RNG
    values = np.random.uniform(-2, 2, 10)  # noqa: NPY002
    np.testing.assert_allclose(values, ref["input_A"], atol=1e-8)
    for case in ref["cases"]:
        qa = QuantizedArray(case["n_bits"], values, is_signed=case["is_signed"], is_symmetric=case["is_symmetric"])
        assert qa.qvalues.tolist() == case["qvalues"], case["call"]
        assert int(qa.quantizer.zero_point) == case["zero_point"], case["call"]
        if "scale" in case:
            assert float(qa.quantizer.scale) == pytest.approx(case["scale"], abs=1e-12)
        if "dequant" in case:
            np.testing.assert_allclose(qa.dequant(), case["dequant"], atol=1e-8)


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(
    values=arrays(np.float64, st.integers(2, 40), elements=finite),
    n_bits=st.integers(2, 8),
    variant=st.sampled_from([(False, False), (True, False), (True, True)]),
)
def test_dequant_quant_within_half_step(values, n_bits, variant):
    is_signed, is_symmetric = variant
    qa = QuantizedArray(n_bits, values, is_signed=is_signed, is_symmetric=is_symmetric)
    scale = float(qa.quantizer.scale)
    assert qa.qvalues.min() >= qa.quantizer.options.qmin
    assert qa.qvalues.max() <= qa.quantizer.options.qmax
    # x in the calibrated range: the error is at most half a step (plus float slack)
    assert np.max(np.abs(qa.dequant() - values)) <= scale / 2 * (1 + 1e-9) + 1e-12 * np.abs(values).max()


@pytest.mark.parametrize("value", [0.0, 3.5, -2.0])
def test_constant_array_does_not_divide_by_zero(value):
    qa = QuantizedArray(4, np.full(5, value))
    assert np.all(np.isfinite(qa.quantizer.scale))
    np.testing.assert_allclose(qa.dequant(), value, atol=1e-12)


def test_power_of_two_scale_keeps_range():
    values = np.linspace(-1.3, 2.1, 50)
    qa = QuantizedArray(5, values, power_of_two_scale=True)
    log2 = np.log2(float(qa.quantizer.scale))
    assert log2 == np.round(log2)
    assert np.max(np.abs(qa.dequant() - values)) <= float(qa.quantizer.scale) / 2 + 1e-12


def test_per_feature_quantization():
    x = np.column_stack([np.linspace(0, 1, 20), np.linspace(-100, 100, 20)])
    qa = QuantizedArray(6, x, per_axis=0)
    assert qa.quantizer.scale.shape == (2,)
    assert qa.qvalues[:, 0].max() == 63 and qa.qvalues[:, 1].max() == 63
    np.testing.assert_allclose(qa.dequant(), x, atol=float(qa.quantizer.scale.max()) / 2 + 1e-9)


def test_update_values_reuses_parameters():
    qa = QuantizedArray(4, np.array([0.0, 1.0]))
    q = qa.update_values(np.array([0.5, 2.0]))  # 2.0 is out of range: clipped
    assert q.tolist() == [8, 15]


@pytest.mark.parametrize("n_bits", [0, 17, 2.5, True, "8"])
def test_n_bits_out_of_range(n_bits):
    with pytest.raises(ValueError, match="n_bits"):
        QuantizationOptions(n_bits)


def test_nan_is_refused():
    with pytest.raises(ValueError, match="NaN"):
        QuantizedArray(4, np.array([0.0, np.nan]))
    quantizer = UniformQuantizer(QuantizationOptions(4), MinMaxQuantizationStats(0.0, 1.0))
    with pytest.raises(ValueError, match="NaN or infinite"):
        quantizer.quant(np.array([np.inf]))


def test_integer_values_need_a_scale():
    with pytest.raises(ValueError, match="explicit scale"):
        QuantizedArray(4, np.array([1, 2]), value_is_float=False)
    qa = QuantizedArray(4, np.array([1, 2]), value_is_float=False, scale=0.5, zero_point=1)
    np.testing.assert_allclose(qa.values, [0.0, 0.5])


@pytest.mark.parametrize(("lo", "hi", "bits"), [(0, 1, 1), (0, 255, 8), (-128, 127, 8), (-129, 0, 9), (0, 0, 1)])
def test_integer_bit_width(lo, hi, bits):
    assert integer_bit_width(lo, hi) == bits

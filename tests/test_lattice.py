"""Inputs on their own lattice (pixel intensities, counts, binary columns): exact codes, narrower
accumulators, and the grid survives deployment."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from fhe_sklearn.deployment.client_spec import ClientModule, ClientSpec
from fhe_sklearn.onnx import onnx_to_module
from fhe_sklearn.onnx.calibration import input_quantizer
from fhe_sklearn.quantization.lattice import LatticeQuantizer
from fhe_sklearn.torch import export_onnx


def lattice_columns(n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(0)
    return np.column_stack(
        [
            rng.integers(0, 17, n) / 16 - 0.25,  # 17 levels, from -4/16
            rng.integers(0, 2, n).astype(float),  # binary
            np.full(n, 2.0),  # constant: the lattices' median step, in the middle
            rng.integers(0, 5, n) * 3.0,  # counts of 3
        ]
    )


def test_lattice_features_get_exact_codes_spread_to_the_widest_lattice():
    x = lattice_columns()
    q = input_quantizer(x, 6)
    assert isinstance(q, LatticeQuantizer)
    np.testing.assert_array_equal(q.column_max, [16, 16, 16, 16])
    np.testing.assert_allclose(q.scale[[0, 1, 3]], [1 / 16, 1 / 16, 3 / 4])
    assert q.quant(x)[0, 2] == 8  # the constant: exact, in the middle
    codes = q.quant(x)
    np.testing.assert_allclose(q.dequant(codes), x, atol=1e-12)
    assert codes[:, 0].min() == 0 and codes[:, 0].max() == 16
    # beyond the calibration lattice: clipped to its range, as a min-max grid clips
    outside = x[:1].copy()
    outside[0, 0], outside[0, 1] = 5.0, -3.0
    assert q.quant(outside)[0, 0] == 16 and q.quant(outside)[0, 1] == 0
    # a continuous feature among them, a lattice as fine as the grid, one whose points are not
    # multiples of its step (standardized counts): min-max grids
    rng = np.random.default_rng(1)
    assert not isinstance(input_quantizer(np.column_stack([x, rng.normal(size=len(x))]), 6), LatticeQuantizer)
    assert not isinstance(input_quantizer(np.arange(64.0)[:, None], 6), LatticeQuantizer)
    assert not isinstance(input_quantizer(np.repeat(np.arange(10.0), 4)[:, None] + 0.3, 6), LatticeQuantizer)
    # too few rows per level to tell a lattice from a few continuous values; huge values
    assert not isinstance(input_quantizer(np.array([[0.0], [0.7]]), 6), LatticeQuantizer)
    assert not isinstance(
        input_quantizer(np.repeat([1e6 + 0.5, 1e6 + 1.5, 1e6 + 2.5], 8)[:, None], 6), LatticeQuantizer
    )
    assert input_quantizer(np.repeat(np.arange(63.0), 4)[:, None], 6).column_max[0] == 62  # qmax - 1 steps


def test_images_get_one_lattice_and_clear_errors():
    images = np.random.default_rng(0).integers(0, 5, (40, 1, 4, 4)) / 4.0
    q = input_quantizer(images, 6)
    assert isinstance(q, LatticeQuantizer) and q.column_max == 4 and q.scale == pytest.approx(0.25)
    np.testing.assert_allclose(q.dequant(q.quant(images)), images)


@pytest.fixture(scope="module")
def digits_module():
    X = load_digits().data[:300] / 16.0
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    onnx_model = export_onnx(net, X)
    module = onnx_to_module(onnx_model, X, n_bits=6, rounding_threshold_bits=5)
    module.compile(X)
    return X, module, onnx_model


def test_pixels_on_their_lattice_narrow_the_first_accumulator(digits_module):
    X, module, onnx_model = digits_module
    assert isinstance(module.input_quantizers[0], LatticeQuantizer)
    assert module.input_specs[0].hi.max() == 16  # constant border pixels included
    # the same images, nudged off the lattice: a min-max grid of 64 codes per pixel
    rng = np.random.default_rng(0)
    nudged = X + rng.uniform(0, 1e-3, X.shape) * (X > 0)
    plain = onnx_to_module(onnx_model, nudged, n_bits=6, rounding_threshold_bits=5)
    assert not isinstance(plain.input_quantizers[0], LatticeQuantizer)
    assert module.bit_widths()["/0/Gemm"] <= plain.bit_widths()["/0/Gemm"] - 2
    np.testing.assert_array_equal(module.forward(X[:20], fhe="simulate"), module.forward(X[:20]))


def test_the_lattice_grid_survives_the_client_spec(digits_module):
    X, module, _ = digits_module
    client = ClientModule(ClientSpec.from_json(ClientSpec.from_model(module).to_json()))
    assert isinstance(client.input_quantizers[0], LatticeQuantizer)
    np.testing.assert_array_equal(client.quantize_input(X[:20]), module.quantize_input(X[:20]))
    with pytest.raises(ValueError, match=r"quantized input column \d+ must lie in \[0, 16\], got 63"):
        module.quantized_forward(np.full((1, 64), 63))
    tampered = ClientSpec.from_model(module).to_json()
    for column_max in ([3], [-1] * 64, [70] * 64):
        tampered["inputs"][0]["column_max"] = {
            **tampered["inputs"][0]["column_max"],
            "shape": [len(column_max)],
            "data": column_max,
        }
        with pytest.raises(ValueError, match="column_max"):
            ClientSpec.from_json(tampered)

"""Exact wide lookups built from narrower ones (quantization/wide_lookup.py)."""

import numpy as np
import torch

from fhe_sklearn.torch import compile_torch_model


def test_wide_exact_lookups_equal_the_table_beyond_the_calibration_data():
    """A 4-bit net without truncation: its ReLU tables read 10-bit accumulators, built from
    narrow lookups. Calibrated on a narrow distribution, the circuit must still hold every
    input the client may send (concrete sizes what it sees; the decomposition hints the rest)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.ReLU(), torch.nn.Linear(6, 2))
    rng = np.random.default_rng(0)
    calibration = rng.normal(size=(30, 8)).astype(np.float32) * 0.3
    module = compile_torch_model(net, calibration, n_bits=4, rounding_threshold_bits=None)
    relu = next(op for op in module.ops if op.op_type == "Relu")
    assert relu.input_specs[0].bit_width >= 9
    # not one 10-bit lookup per neuron: lookups read at most 5 bits
    assert max(module.circuit_report()["pbs_by_precision"]) <= 5
    q = module.quantize_input(rng.uniform(-3, 3, size=(40, 8)).astype(np.float32))  # clipped to the grid
    np.testing.assert_array_equal(module.quantized_forward(q, fhe="simulate"), module.quantized_forward(q))

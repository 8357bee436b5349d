"""Debugging reports: per-op integer ranges and bit-widths, circuit statistics, and the
explanation of a circuit concrete cannot compile."""

import numpy as np
import pytest
import torch

from fhe_sklearn import LogisticRegression
from fhe_sklearn.quantization.report import format_report
from fhe_sklearn.torch import compile_torch_model


@pytest.fixture(scope="module")
def mlp_module(scaled_wine):
    X_train, X_test, *_ = scaled_wine
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(13, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    return compile_torch_model(net, X_train.astype(np.float32), n_bits=4, rounding_threshold_bits=5), X_test


def test_bitwidth_and_range_report_of_a_network(mlp_module):
    module, X = mlp_module
    report = module.bitwidth_and_range_report(X)
    assert list(report) == [*module.input_names, *(op.name for op in module.ops)]
    x_q = module.quantize_input(X)
    assert report[module.input_names[0]]["range"] == (int(x_q.min()), int(x_q.max()))
    out = module.quantized_forward(x_q)
    assert report[module.output_names[0]]["range"] == (int(out.min()), int(out.max()))
    for name, entry in report.items():
        lo, hi = entry["range"]
        assert entry["worst_case_range"][0] <= lo <= hi <= entry["worst_case_range"][1], name
        assert entry["bitwidth"] <= entry["worst_case_bitwidth"] == module.bit_widths()[name]
    assert [e["op_type"] for e in report.values() if e["lookup"]] == ["Relu"]
    # without data: the worst case only
    assert all(e["range"] == e["worst_case_range"] for e in module.bitwidth_and_range_report().values())
    table = format_report(report)
    assert "Relu" in table and "worst-case range" in table.splitlines()[0]

    stats = module.circuit_report()
    circuit = module.fhe_circuit
    relu = next(op for op in module.ops if op.op_type == "Relu")
    truncation = module._op(relu.inputs[0])
    # each of the 6 ReLU lookups reads the 5 bits its accumulator is truncated to, and the
    # truncation costs one PBS per removed bit
    assert stats["pbs_by_precision"] == {5: 6}
    removed = truncation.input_specs[0].bit_width - 5
    assert stats["pbs_bit_removal"] == 6 * removed
    assert stats["pbs"] == circuit.programmable_bootstrap_count == 6 + 6 * removed
    assert stats["max_bit_width"] == circuit.graph.maximum_integer_bit_width()
    assert sum(stats["encrypted_matmuls"].values()) == 2 and stats["encrypted_products"] == 0
    assert stats["bootstrap_key_bytes"] > 0 and stats["complexity"] == circuit.complexity


def test_estimator_reports_and_compile_failure_explanation(scaled_cancer, monkeypatch):
    from concrete.fhe.compilation import module_compiler

    X_train, X_test, y_train, _ = scaled_cancer
    model = LogisticRegression(n_bits=4).fit(X_train, y_train)
    report = model.bitwidth_and_range_report(X_test)
    assert report["input"]["bitwidth"] <= 4 and len(report) == 1 + len(model.quantized_module_.ops)
    with pytest.raises(RuntimeError, match="not compiled yet"):
        model.circuit_report()

    def failing_backend(*args, **kwargs):
        raise RuntimeError("no cryptographic parameters found")

    monkeypatch.setattr(module_compiler, "FheModule", failing_backend)
    with pytest.raises(RuntimeError) as info:
        model.compile(X_train)
    message = str(info.value)
    widest = max(model.quantized_module_.ops, key=lambda op: op.output_spec.bit_width)
    assert "no cryptographic parameters found" in message
    assert f"the widest integer has {widest.output_spec.bit_width} bits: {widest.op_type} '{widest.name}'" in message
    assert widest.overflow_hint in message and "bitwidth_and_range_report" in message

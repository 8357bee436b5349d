"""Bring your own network: the digits MLP and CNN (torch, post-training) and a QAT MLP,
compiled through ONNX; float vs simulated accuracy, circuit figures, keys, latency.

    python -m benchmarks.byo_network
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from benchmarks.common import RESULTS, machine
from benchmarks.lean import circuit_figures, key_and_run_figures
from fhe_sklearn.torch import compile_qat_model, compile_torch_model


def train(net: torch.nn.Module, X: np.ndarray, y: np.ndarray, epochs: int = 150) -> torch.nn.Module:
    """Adam, full batch, cross-entropy, seed 0; returns ``net`` in eval mode."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    inputs, targets = torch.tensor(X, dtype=torch.float32), torch.tensor(y)
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(inputs), targets).backward()
        optimizer.step()
    return net.eval()


def fake_quantize(bits: int, weights: bool = False) -> torch.nn.Module:
    """torch.ao fake quantizer: unsigned per tensor, or symmetric per output neuron for weights."""
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

    if weights:
        return FakeQuantize(
            observer=MovingAveragePerChannelMinMaxObserver,
            quant_min=-(2 ** (bits - 1)),
            quant_max=2 ** (bits - 1) - 1,
            dtype=torch.qint8,
            qscheme=torch.per_channel_symmetric,
            ch_axis=0,
        )
    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=2**bits - 1, dtype=torch.quint8)


class QATLinear(torch.nn.Linear):
    """A Linear whose weights are fake-quantized while training."""

    def __init__(self, n_in: int, n_out: int, bits: int) -> None:
        super().__init__(n_in, n_out)
        self.weight_quantizer = fake_quantize(bits, weights=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(x, self.weight_quantizer(self.weight), self.bias)


def _cases() -> dict[str, tuple]:
    torch.manual_seed(0)
    mlp = [torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10)]
    cnn = [
        torch.nn.Conv2d(1, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AvgPool2d(2),
        torch.nn.Flatten(),
        torch.nn.Linear(36, 10),
    ]
    qat = [fake_quantize(4), QATLinear(64, 32, 4), torch.nn.ReLU(), fake_quantize(4), QATLinear(32, 10, 4)]
    return {
        "MLP 64-32-10 (PTQ, n_bits=6)": (mlp, compile_torch_model, {"n_bits": 6}, 150),
        "CNN conv4-pool-fc (PTQ, n_bits=6)": (cnn, compile_torch_model, {"n_bits": 6}, 150),
        "MLP 64-32-10 (QAT 4-bit)": (qat, compile_qat_model, {"n_bits": 8}, 200),
    }


def run_case(label: str, layers: list, compile_fn: Any, params: dict, epochs: int, data: tuple) -> dict[str, Any]:
    X_train, X_test, y_train, y_test = data
    if label.startswith("CNN"):  # images: (n, 1, 8, 8)
        X_train, X_test = X_train.reshape(-1, 1, 8, 8), X_test.reshape(-1, 1, 8, 8)
    net = train(torch.nn.Sequential(*layers), X_train, y_train, epochs)
    with torch.no_grad():
        float_acc = float(np.mean(net(torch.tensor(X_test, dtype=torch.float32)).argmax(1).numpy() == y_test))
    start = time.perf_counter()
    module = compile_fn(net, X_train, rounding_threshold_bits=6, **params)
    module.fhe_circuit.enable_fhe_execution()  # built on first use: part of the compile time
    compile_s = time.perf_counter() - start
    x_q = module.quantize_input(X_test)
    simulated = module.quantized_forward(x_q, fhe="simulate")
    sim_acc = float(np.mean(module.dequantize_output(simulated).argmax(1) == y_test))
    row = {"model": label, "float_accuracy": float_acc, "simulate_accuracy": sim_acc, "compile_s": compile_s}
    row.update(circuit_figures(module.fhe_circuit))
    keys = key_and_run_figures(module.fhe_circuit, [(x_q[i : i + 1],) for i in range(2)], n_execute=1)
    executed = keys.pop("executed")
    row["execute_equals_simulate"] = bool(np.array_equal(np.asarray(executed[0]).reshape(-1), simulated[1]))
    row.update(keys)
    return row


COLUMNS = (
    ("model", "model", "{}"),
    ("float_accuracy", "float acc", "{:.3f}"),
    ("simulate_accuracy", "FHE acc (simulate)", "{:.3f}"),
    ("pbs_count", "PBS", "{}"),
    ("max_bit_width", "max bits", "{}"),
    ("complexity", "complexity", "{:.2e}"),
    ("evaluation_keys_mb", "eval keys MB", "{:.0f}"),
    ("keygen_s", "keygen s", "{:.1f}"),
    ("execute_s_per_row", "execute s/row", "{:.1f}"),
    ("execute_equals_simulate", "execute == simulate", "{}"),
)


def write(rows: list[dict], notes: str) -> str:
    """``results/byo_network.json`` and ``.md``; returns the markdown table."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "byo_network.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2))
    lines = ["| " + " | ".join(title for _, title, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(fmt.format(row[key]) for key, _, fmt in COLUMNS) + " |" for row in rows]
    table = "\n".join(lines)
    title = "# Bring your own network (torch → ONNX → FHE)"
    (RESULTS / "byo_network.md").write_text(f"{title}\n\nMachine: {machine()}\n\n{notes}\n\n{table}\n")
    return table


NOTES = (
    "sklearn digits (8x8, 1437 train / 360 test); accumulators rounded to 6 bits before every lookup "
    "(rounding_threshold_bits=6), PTQ weights with the bits that truncation keeps (4 hidden, 4 output); max "
    "bits is the widest leveled integer (an accumulator), lookups read 6 bits; one row executed after a "
    "warm-up run, on the 2-core machine (shared: times vary by ±30% between runs)."
)


def main() -> None:
    X, y = load_digits(return_X_y=True)
    data = train_test_split(X / 16.0, y, test_size=0.2, random_state=0)
    rows = [run_case(label, *case, data) for label, case in _cases().items()]
    print(write(rows, NOTES))


if __name__ == "__main__":
    main()
    os._exit(0)

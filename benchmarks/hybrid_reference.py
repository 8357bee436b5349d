"""The remote linear layer of benchmarks/hybrid.py through Concrete ML 1.9, in its own virtualenv:

    /tmp/cml/bin/python benchmarks/hybrid_reference.py '{"n": 768, "n_bits": 8, "n_calls": 3}'

Prints one JSON line. Standalone on purpose (imports concrete-ml, torch and numpy only). Two
paths are measured:

- ``circuit``: what Concrete ML's hybrid server runs for a remote module,
  ``compile_torch_model(layer, X, n_bits)`` saved by ``FHEModelDev`` and run by
  ``FHEModelServer.run`` on ``FHEModelClient``'s ciphertexts (in process, no HTTP);
- ``glwe``: Concrete ML's GLWE executor (concrete-ml-extensions), which its HybridFHEModel
  uses for large linear layers in ``fhe="execute"`` only (its remote mode refuses it in 1.9).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def layer_and_data(n: int, seed: int = 0) -> tuple:
    """The same weights and inputs as benchmarks/hybrid.py builds (numpy's generator), and an
    edge row: every feature at +-1.5 (inside each feature's calibration range) with the sign
    of output 0's weights, the largest output 0 such inputs reach."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 1 / np.sqrt(n), size=(n, n))  # (out, in), as torch stores it
    bias = rng.normal(0, 0.02, size=n)
    X = rng.normal(size=(200, n))
    edge = 1.5 * np.sign(weight[0])[None, :]
    return weight, bias, X, edge


def call_figures(
    keys: bytes, encrypted: bytes, result: bytes, run_s: list, call_s: list, row: tuple, edge: tuple
) -> dict:
    """What both sides report of a remote layer's calls: bytes, median times, errors against
    float on a typical row and on the edge row (each ``(decrypted, reference)``)."""
    y, reference = (np.asarray(v).reshape(-1) for v in row)
    y_edge, edge_reference = (np.asarray(v).reshape(-1) for v in edge)
    return {
        "evaluation_key_bytes": len(keys),
        "bytes_sent_per_call": len(encrypted),
        "bytes_received_per_call": len(result),
        "server_run_s": float(np.median(run_s)),
        "call_s": float(np.median(call_s)),
        "max_abs_error": float(np.abs(y - reference).max()),
        "rms_error": float(np.sqrt(((y - reference) ** 2).mean())),
        "edge_row_max_abs_error": float(np.abs(y_edge - edge_reference).max()),
        "edge_row_output_0": [float(y_edge[0]), float(edge_reference[0])],
    }


def circuit_path(linear, X: np.ndarray, n_bits: int, n_calls: int, reference: np.ndarray, edge: tuple) -> dict:
    from concrete.ml.deployment import FHEModelClient, FHEModelDev, FHEModelServer
    from concrete.ml.torch.compile import compile_torch_model

    start = time.perf_counter()
    module = compile_torch_model(linear, X.astype(np.float32), n_bits=n_bits)
    compile_s = time.perf_counter() - start
    circuit = module.fhe_circuit
    with tempfile.TemporaryDirectory() as tmp:
        FHEModelDev(str(Path(tmp) / "dep"), module).save(via_mlir=True)
        client = FHEModelClient(str(Path(tmp) / "dep"), key_dir=str(Path(tmp) / "keys"))
        start = time.perf_counter()
        client.generate_private_and_evaluation_keys()
        keygen_s = time.perf_counter() - start
        keys = client.get_serialized_evaluation_keys()
        server = FHEModelServer(str(Path(tmp) / "dep"))
        server.load()
        row = X[:1]
        encrypted = client.quantize_encrypt_serialize(row)
        server.run(encrypted, keys)  # warm-up
        run_s, call_s = [], []
        for _ in range(n_calls):
            start = time.perf_counter()
            encrypted = client.quantize_encrypt_serialize(row)
            begin = time.perf_counter()
            result = server.run(encrypted, keys)
            run_s.append(time.perf_counter() - begin)
            y = client.deserialize_decrypt_dequantize(result)
            call_s.append(time.perf_counter() - start)
        edge_row, edge_reference = edge
        y_edge = client.deserialize_decrypt_dequantize(server.run(client.quantize_encrypt_serialize(edge_row), keys))
    return {
        "compile_s": compile_s,
        "pbs": int(circuit.programmable_bootstrap_count),
        "max_bit_width": int(circuit.graph.maximum_integer_bit_width()),
        "keygen_s": keygen_s,
        **call_figures(keys, encrypted, result, run_s, call_s, (y, reference), (y_edge, edge_reference)),
    }


def glwe_path(linear, X: np.ndarray, n_bits: int, n_calls: int, reference: np.ndarray) -> dict:
    import torch
    from concrete.ml.quantization.linear_op_glwe_backend import GLWELinearLayerExecutor, has_glwe_backend
    from concrete.ml.torch.compile import build_quantized_module

    if not has_glwe_backend():
        return {"error": "concrete-ml-extensions is not installed"}
    module = build_quantized_module(linear, X.astype(np.float32), n_bits=n_bits, keep_onnx=False)
    executor = GLWELinearLayerExecutor()
    start = time.perf_counter()
    executor.keygen()
    keygen_s = time.perf_counter() - start
    row = torch.tensor(X[:1], dtype=torch.float32)
    executor.forward(row, module, "execute")  # warm-up
    call_s = []
    for _ in range(n_calls):
        start = time.perf_counter()
        y = executor.forward(row, module, "execute")
        call_s.append(time.perf_counter() - start)
    out = {"keygen_s": keygen_s, "call_s": float(np.median(call_s))}
    out["max_abs_error"] = float(np.abs(y.detach().numpy().reshape(-1) - reference).max())
    fhext = executor.fhext
    try:
        out["evaluation_key_bytes"] = len(executor.compression_key.serialize())
        q_x = np.ascontiguousarray(np.zeros((1, X.shape[1]), dtype=np.uint64))
        encrypted = fhext.encrypt_matrix(pkey=executor.private_key, crypto_params=executor.glwe_crypto_params, data=q_x)
        out["bytes_sent_per_call"] = len(encrypted.serialize())
    except Exception as err:
        out["sizes_error"] = f"{type(err).__name__}: {err}"
    return out


def main(spec: dict) -> dict:
    import torch

    n, n_bits, n_calls = spec["n"], spec["n_bits"], spec.get("n_calls", 3)
    weight, bias, X, edge_row = layer_and_data(n, spec.get("seed", 0))
    linear = torch.nn.Linear(n, n)
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(weight, dtype=torch.float32))
        linear.bias.copy_(torch.tensor(bias, dtype=torch.float32))
    reference = (X[:1] @ weight.T + bias).reshape(-1)
    import concrete.ml

    result = {"concrete_ml_version": concrete.ml.__version__}
    edge = (edge_row, (edge_row @ weight.T + bias).reshape(-1))
    result["circuit"] = circuit_path(linear, X, n_bits, n_calls, reference, edge)
    try:
        result["glwe"] = glwe_path(linear, X, n_bits, n_calls, reference)
    except Exception as err:
        result["glwe"] = {"error": f"{type(err).__name__}: {err}"}
    return result


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
    sys.stdout.flush()
    import os

    os._exit(0)

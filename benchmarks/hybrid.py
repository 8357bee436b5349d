"""Hybrid models benchmark (issue 27).

1. A tiny GPT-2 (2 layers, built offline from a ``transformers`` config, trained here for a
   few seconds on a fixed text): every linear layer (``Conv1D``) of both blocks in FHE; next-
   token top-1 agreement ``fhe="simulate"`` vs float; the per-layer bit-width report and the
   accuracy-vs-n_bits sweep.
2. The same model deployed (``save_and_clear_private_info``, ``fhe-sklearn serve`` on
   127.0.0.1): ``fhe="remote"`` == ``"simulate"`` on a few tokens.
3. One linear layer 768x768 at n_bits=8: latency per call, evaluation-key bytes, bytes sent
   per call; in process as Concrete ML is measured (client encrypt + ``FHEModelServer.run`` +
   decrypt) and over HTTP; side by side with Concrete ML 1.9 (``benchmarks/hybrid_reference.py``
   in /tmp/cml's virtualenv), same weights, inputs and bits.

    python -m benchmarks.hybrid            # writes benchmarks/results/hybrid.{json,md}
    python -m benchmarks.hybrid --quick    # smaller (CI smoke: no Concrete ML, 64x64 layer)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch

from benchmarks.common import RESULTS, machine
from benchmarks.hybrid_reference import call_figures, layer_and_data
from fhe_sklearn.deployment import FHEModelClient, FHEModelServer
from fhe_sklearn.torch import HybridFHEModel
from fhe_sklearn.torch.hybrid import _table

CML_PYTHON = Path("/tmp/cml/bin/python")
TEXT = (
    "a client keeps its data and its secret keys. it sends only ciphertexts to the server, "
    "which holds the weights of a few layers and computes on the ciphertexts without ever "
    "seeing what they hold. the client decrypts the answer and runs the rest of the network "
    "in the clear. nothing else leaves the client, and the weights never leave the server. "
)
BLOCKS = ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def tiny_gpt2(vocab: int, n_embd: int = 64, seed: int = 0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(
        n_layer=2, n_embd=n_embd, n_head=4, n_positions=64, vocab_size=vocab, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    return GPT2LMHeadModel(config)


def trained_gpt2(steps: int) -> tuple:
    """A character-level GPT-2 trained on TEXT (seconds on a CPU); the model and the text's ids."""
    chars = sorted(set(TEXT))
    ids = torch.tensor([chars.index(c) for c in TEXT])
    model = tiny_gpt2(len(chars))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 65, (16,), generator=generator)
        batch = torch.stack([ids[s : s + 65] for s in starts])
        logits = model(batch[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, len(chars)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), ids, float(loss), len(chars)


class Server:
    """``fhe-sklearn serve`` on a free port of 127.0.0.1."""

    def __init__(self, directory: Path, key_dir: Path, log: Path) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "fhe_sklearn", "serve", str(directory), "--port", str(port)]
        command += ["--key-dir", str(key_dir), "--workers", "1"]
        with open(log, "ab") as out:
            self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=out)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError("the server did not start within 300 s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def transformer_case(steps: int, n_windows: int, n_remote_tokens: int, tmp: Path) -> dict:
    model, ids, loss, vocab = trained_gpt2(steps)
    names = [f"transformer.h.{i}.{block}" for i in range(2) for block in BLOCKS]
    hybrid = HybridFHEModel(model, names, model_name="tiny-gpt2")
    windows = ids[: 64 * (len(ids) // 64)].reshape(-1, 64)
    calibration, evaluation = windows[:2], windows[:n_windows]
    start = time.perf_counter()
    hybrid.compile_model(calibration, n_bits=8)
    compile_s = time.perf_counter() - start
    report = hybrid.bit_width_report(print_table=False)
    reference = hybrid(evaluation, fhe="torch").logits
    start = time.perf_counter()
    simulated = hybrid(evaluation, fhe="simulate").logits
    simulate_s = time.perf_counter() - start
    agreement = float((simulated.argmax(-1) == reference.argmax(-1)).float().mean())
    # the text itself: how often each model predicts the next character
    targets = torch.cat([ids[1:], ids[:1]])[: evaluation.numel()].reshape(evaluation.shape)
    float_accuracy = float((reference.argmax(-1) == targets)[:, :-1].float().mean())
    fhe_accuracy = float((simulated.argmax(-1) == targets)[:, :-1].float().mean())
    sweep = hybrid.sweep_n_bits(evaluation, n_bits=(3, 4, 5, 6, 7, 8), print_table=False)

    # remote: the owner saves, a client rebuilt from the config talks to the server
    few = evaluation[:1, :n_remote_tokens]
    expected = hybrid(few, fhe="simulate").logits
    integer = hybrid(few, fhe="disable").logits
    few_float = hybrid(few, fhe="torch").logits
    hybrid.save_and_clear_private_info(tmp / "gpt2")
    server = Server(tmp / "gpt2" / "server", tmp / "gpt2_server_keys", tmp / "gpt2_server.log")
    try:
        client = HybridFHEModel(
            tiny_gpt2(vocab, seed=1), names, server_remote_address=server.url, model_name="tiny-gpt2"
        )
        start = time.perf_counter()
        client.init_client(tmp / "gpt2" / "client", key_dir=tmp / "gpt2_client_keys")
        init_s = time.perf_counter() - start
        start = time.perf_counter()
        remote = client(few, fhe="remote").logits
        remote_s = time.perf_counter() - start
    finally:
        server.stop()
    return {
        "config": {"n_layer": 2, "n_embd": 64, "n_head": 4, "vocab": vocab, "train_steps": steps, "final_loss": loss},
        "fhe_modules": names,
        "n_bits": 8,
        "eval_positions": int(evaluation.numel()),
        "compile_s": compile_s,
        "simulate_s": simulate_s,
        "top1_agreement_simulate_vs_float": agreement,
        "next_char_accuracy_float": float_accuracy,
        "next_char_accuracy_simulate": fhe_accuracy,
        "bit_width_report": report,
        "sweep": sweep,
        "remote_tokens": n_remote_tokens,
        # the linear layers' noise budget: simulate and remote each draw their own noise
        "remote_tokens_equal_simulate": bool(torch.equal(remote.argmax(-1), expected.argmax(-1))),
        "remote_max_abs_diff_vs_simulate": float((remote - expected).abs().max()),
        "simulate_max_abs_diff_vs_disable": float((expected - integer).abs().max()),
        "disable_max_abs_error_vs_float": float((integer - few_float).abs().max()),
        "remote_init_s": init_s,
        "remote_forward_s": remote_s,
    }


def linear_case(
    n: int, n_bits: int, n_calls: int, tmp: Path, output_noise: float | None = None, http: bool = True
) -> dict:
    """Ours on the layer Concrete ML's reference measures (same weights, inputs, bits);
    ``output_noise`` as ``compile_model``'s (None: its default noise budget, 0: exact)."""
    weight, bias, X, edge_row = layer_and_data(n)
    layer = torch.nn.Sequential(torch.nn.Linear(n, n))
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor(weight, dtype=torch.float32))
        layer[0].bias.copy_(torch.tensor(bias, dtype=torch.float32))
    hybrid = HybridFHEModel(layer, ["0"], model_name=f"linear{n}")
    start = time.perf_counter()
    hybrid.compile_model(torch.tensor(X, dtype=torch.float32), n_bits=n_bits, output_noise=output_noise)
    compile_s = time.perf_counter() - start
    report = hybrid.bit_width_report(print_table=False)[0]
    tmp = tmp / f"linear_{output_noise}"
    hybrid.save_and_clear_private_info(tmp / "linear")
    reference = (X[:1] @ weight.T + bias).reshape(-1)
    edge_reference = (edge_row @ weight.T + bias).reshape(-1)

    # in process, as Concrete ML's figures are taken
    client = FHEModelClient(tmp / "linear" / "client" / "module_0", key_dir=tmp / "linear_keys")
    start = time.perf_counter()
    client.generate_private_and_evaluation_keys()
    keygen_s = time.perf_counter() - start
    keys = client.get_serialized_evaluation_keys()
    server = FHEModelServer(tmp / "linear" / "server" / "module_0").load()
    server.run(client.quantize_encrypt_serialize(X[:1])[0], keys)  # warm-up
    run_s, call_s = [], []
    for _ in range(n_calls):
        start = time.perf_counter()
        encrypted = client.quantize_encrypt_serialize(X[:1])[0]
        begin = time.perf_counter()
        result = server.run(encrypted, keys)
        run_s.append(time.perf_counter() - begin)
        y = client.deserialize_decrypt_dequantize([result])
        call_s.append(time.perf_counter() - start)
    y_edge = client.deserialize_decrypt_dequantize([server.run(client.quantize_encrypt_serialize(edge_row)[0], keys)])

    measured = {
        "layer": f"Linear({n}, {n})",
        "n_bits": n_bits,
        "output_noise": output_noise,
        "p_error": report["p_error"],
        "compile_s": compile_s,
        "pbs": report["pbs"],
        "accumulator_bits": report["accumulator_bits"],
        "complexity": report["complexity"],
        "keygen_s": keygen_s,
        **call_figures(keys, encrypted, result, run_s, call_s, (y, reference), (y_edge, edge_reference)),
    }
    if not http:
        return measured
    # over HTTP, through the hybrid client
    http = Server(tmp / "linear" / "server", tmp / "linear_server_keys", tmp / "linear_server.log")
    try:
        remote = HybridFHEModel(
            torch.nn.Sequential(torch.nn.Linear(n, n)), ["0"], server_remote_address=http.url, model_name=f"linear{n}"
        )
        remote.init_client(tmp / "linear" / "client", key_dir=tmp / "linear_http_keys")
        row = torch.tensor(X[:1], dtype=torch.float32)
        remote(row, fhe="remote")  # warm-up (the worker loads the keys)
        http_s = []
        for _ in range(n_calls):
            start = time.perf_counter()
            y_http = remote(row, fhe="remote")
            http_s.append(time.perf_counter() - start)
        module_client = remote.remote_modules["0"].remote
        http_bytes, http_keys = module_client.last_call_bytes, module_client.evaluation_key_bytes
    finally:
        http.stop()
    return {
        **measured,
        "http_call_s": float(np.median(http_s)),
        "http_bytes_sent_per_call": http_bytes["sent"],
        "http_evaluation_key_bytes": http_keys,
        "http_max_abs_error": float(np.abs(y_http.numpy().reshape(-1) - reference).max()),
    }


def concrete_ml_case(n: int, n_bits: int, n_calls: int) -> dict:
    if not CML_PYTHON.exists():
        return {"error": f"{CML_PYTHON} does not exist (Concrete ML is not installed here)"}
    script = Path(__file__).resolve().parent / "hybrid_reference.py"
    spec = json.dumps({"n": n, "n_bits": n_bits, "n_calls": n_calls})
    done = subprocess.run([str(CML_PYTHON), str(script), spec], capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        return {"error": f"Concrete ML's side failed: {done.stderr[-1500:]}"}
    return json.loads(lines[-1])


def markdown(results: dict) -> str:
    t, lin, cml = results["transformer"], results["linear"], results.get("concrete_ml", {})
    lines = [
        "## Tiny GPT-2, every linear layer of both blocks in FHE (n_bits=8)",
        "",
        f"- next-token top-1 agreement simulate vs float: **{t['top1_agreement_simulate_vs_float']:.4f}** "
        f"on {t['eval_positions']} positions of the fixed text (next-character accuracy: float "
        f"{t['next_char_accuracy_float']:.4f}, simulate {t['next_char_accuracy_simulate']:.4f})",
        f"- remote next tokens == simulate's on {t['remote_tokens']} tokens: **{t['remote_tokens_equal_simulate']}** "
        f"(logits: max |remote - simulate| {t['remote_max_abs_diff_vs_simulate']:.3g}, |simulate - disable| "
        f"{t['simulate_max_abs_diff_vs_disable']:.3g}: the linear layers' noise budget; |disable - float| "
        f"{t['disable_max_abs_error_vs_float']:.3g}: quantization)",
        f"- remote: init (keygen + 8 key uploads) {t['remote_init_s']:.1f} s; forward {t['remote_forward_s']:.1f} s",
        f"- compile {t['compile_s']:.1f} s (8 circuits); simulate {t['simulate_s']:.1f} s",
        "",
        "Per-layer bit widths:",
        "",
        _table(t["bit_width_report"]),
        "",
        "Accuracy (top-1 agreement with float) against n_bits, each layer alone and all together:",
        "",
        _table(t["sweep"]),
        "",
        f"## One remote {lin['layer']}, n_bits={lin['n_bits']}",
        "",
    ]
    keys = [
        ("p_error (noise budget)", "p_error"),
        ("complexity", "complexity"),
        ("latency per call, s (encrypt + server run + decrypt, in process)", "call_s"),
        ("server run, s", "server_run_s"),
        ("evaluation keys, bytes", "evaluation_key_bytes"),
        ("bytes sent per call", "bytes_sent_per_call"),
        ("bytes received per call", "bytes_received_per_call"),
        ("PBS", "pbs"),
        ("max |error| vs float, a calibration-like row", "max_abs_error"),
        ("rms error vs float, same row", "rms_error"),
        ("max |error| vs float, an edge row inside the calibration range", "edge_row_max_abs_error"),
    ]
    circuit, exact = cml.get("circuit", {}), results.get("linear_exact", {})
    lines += [
        "| | fhe_sklearn (default) | fhe_sklearn, output_noise=0 | Concrete ML 1.9 (its remote circuit) |",
        "|---|---|---|---|",
    ]
    for label, key in keys:
        theirs = circuit.get(key, cml.get("error", "n/a"))
        lines.append(f"| {label} | {_cell(lin.get(key))} | {_cell(exact.get(key, 'n/a'))} | {_cell(theirs)} |")
    widest = circuit.get("max_bit_width", "n/a")
    lines.append(
        f"| accumulator bits | {lin['accumulator_bits']} (worst case) | {exact.get('accumulator_bits', 'n/a')} "
        f"(worst case) | {widest} (calibration data) |"
    )
    lines += [
        "",
        f"Over HTTP (hybrid client, 127.0.0.1): {lin['http_call_s']:.2f} s per call, "
        f"{lin['http_bytes_sent_per_call']} bytes sent, {lin['http_evaluation_key_bytes']} bytes of keys; "
        f"max |error| vs float {lin['http_max_abs_error']:.3g}.",
    ]
    glwe = cml.get("glwe")
    if glwe:
        note = 'Concrete ML\'s GLWE executor (local `fhe="execute"` only in 1.9, not remote)'
        lines += ["", f"{note}: {json.dumps(glwe)}"]
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run (no Concrete ML, 64x64 layer)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    n, steps, windows, calls = (64, 60, 1, 1) if args.quick else (768, 300, 3, 7)
    with tempfile.TemporaryDirectory(prefix="fhe_sklearn_hybrid_") as tmp:
        tmp = Path(tmp)
        results = {"machine": machine(), "quick": args.quick}
        results["transformer"] = transformer_case(steps, windows, 4, tmp)
        print(_table(results["transformer"]["bit_width_report"]))
        print(_table(results["transformer"]["sweep"]))
        results["linear"] = linear_case(n, 8, calls, tmp)
        results["linear_exact"] = linear_case(n, 8, calls, tmp, output_noise=0, http=False)
    if not args.quick:
        results["concrete_ml"] = concrete_ml_case(n, 8, calls)
    text = markdown(results)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "hybrid.json").write_text(json.dumps(results, indent=2))
    (args.output / "hybrid.md").write_text(f"# Hybrid models\n\nMachine: {machine()}\n\n{text}\n")
    print(text)
    return results


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # concrete's runtime resets the exit status at interpreter exit

"""HybridFHEModel: named sub-modules of a torch network in FHE (local modes and a real server)."""

import shutil
import socket

import numpy as np
import pytest
import torch
from http_server_process import ServerProcess, ignore_sigpipe
from scipy import special

from fhe_sklearn.quantization.noise_budget import leveled_p_error
from fhe_sklearn.torch import HybridFHEModel

transformers = pytest.importorskip("transformers")

REMOTE = ["transformer.h.0.mlp.c_fc", "transformer.h.1.attn.c_proj"]


def tiny_gpt2(seed=0):
    """A 2-layer GPT-2 with random weights, built offline from a config."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=2, n_positions=16, vocab_size=20, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0
    )
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def tokens():
    return torch.randint(0, 20, (4, 16), generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def compiled_gpt2(tokens):
    hybrid = HybridFHEModel(tiny_gpt2(), REMOTE, model_name="tiny-gpt2")
    return hybrid.compile_model(tokens[:3], n_bits=8)


def test_transformer_tracks_float_and_simulate_carries_the_noise_budget(compiled_gpt2, tokens):
    x = tokens[3:]
    float_logits = compiled_gpt2(x, fhe="torch").logits
    integer = compiled_gpt2(x, fhe="disable").logits
    simulated = compiled_gpt2(x, fhe="simulate").logits
    assert float((integer - float_logits).abs().max()) < 0.05 * float(float_logits.abs().max())
    assert (integer.argmax(-1) == float_logits.argmax(-1)).float().mean() >= 0.9
    # the linear layers' noise: a fraction of the quantization error, not a new error source
    assert 0 < float((simulated - integer).abs().max()) < 0.5 * float((integer - float_logits).abs().max())
    report = compiled_gpt2.bit_width_report(print_table=False)
    # linear layers: no lookup, the accumulator leaves the circuit at full width
    assert [r["pbs"] for r in report] == [0, 0] and all(16 < r["accumulator_bits"] <= 32 for r in report)
    module = compiled_gpt2.remote_modules[REMOTE[0]].q_module
    rows = compiled_gpt2._calibration[REMOTE[0]]
    noise = (module.forward(rows, fhe="simulate") - module.forward(rows, fhe="disable")) / module.output_specs[0].scale
    sigma = 0.5 / (np.sqrt(2) * special.erfcinv(report[0]["p_error"]))  # what concrete was asked for
    assert 0.3 * sigma < noise.std() < 1.2 * sigma
    sweep = compiled_gpt2.report(x, n_bits=(3, 8))["sweep"]
    assert [(r["n_bits"], r["modules"]) for r in sweep] == [(b, m) for b in (3, 8) for m in (*REMOTE, "all")]
    by_bits = {r["n_bits"]: r["score"] for r in sweep if r["modules"] == "all"}
    assert by_bits[8] >= by_bits[3] and by_bits[8] >= 0.9


def test_bad_module_names_and_modules_that_do_not_import(tokens):
    with pytest.raises(ValueError, match=r"no sub-module named 'transformer.h.0.mlp.cfc'.*c_fc"):
        HybridFHEModel(tiny_gpt2(), ["transformer.h.0.mlp.cfc"])
    with pytest.raises(ValueError, match="is inside"):
        HybridFHEModel(tiny_gpt2(), ["transformer.h.0.mlp", "transformer.h.0.mlp.c_fc"])
    hybrid = HybridFHEModel(tiny_gpt2(), ["transformer.h.0.ln_1"])
    with pytest.raises(ValueError, match=r"module 'transformer.h.0.ln_1' \(LayerNorm\) cannot run in FHE"):
        hybrid.compile_model(tokens[:1])
    with pytest.raises(RuntimeError, match="call compile_model"):
        hybrid(tokens[:1], fhe="simulate")
    with pytest.raises(ValueError, match="fhe must be one of"):
        hybrid(tokens[:1], fhe="clear")
    with pytest.raises(RuntimeError, match="init_client"):
        hybrid(tokens[:1], fhe="remote")
    with pytest.raises(ValueError, match="set it or p_error/global_p_error, not both"):
        hybrid.compile_model(tokens[:1], output_noise=0.1, p_error=1e-3)
    with pytest.raises(ValueError, match=r"output_noise must be a fraction in \[0, 1\], got nan"):
        hybrid.compile_model(tokens[:1], output_noise=float("nan"))


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.ReLU(), torch.nn.AvgPool2d(2))
        self.head = torch.nn.Linear(27, 4)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_cnn_block_and_head():
    torch.manual_seed(0)
    cnn = SmallCNN().eval()
    x = torch.randn(40, 1, 8, 8)
    # output_noise=0: the linear head's accumulator decrypts exactly, as the lookups do
    hybrid = HybridFHEModel(cnn, ["features", "head"]).compile_model(x[:30], n_bits=6, output_noise=0)
    reference = hybrid(x[30:], fhe="torch")
    integer = hybrid(x[30:], fhe="disable")
    torch.testing.assert_close(integer, hybrid(x[30:], fhe="simulate"), rtol=0, atol=0)
    # the conv accumulators are truncated to rounding_threshold_bits=6 before the ReLU lookup
    assert float((integer - reference).abs().max()) < 0.2 * float(reference.abs().max())
    assert (integer.argmax(1) == reference.argmax(1)).float().mean() >= 0.8
    report = {r["module"]: r for r in hybrid.bit_width_report(print_table=False)}
    assert report["features"]["pbs"] > 0 and report["features"]["max_lookup_bits"] <= 6
    assert report["head"]["pbs"] == 0 and report["head"]["p_error"] is None
    with pytest.raises(ValueError, match="without table lookups only"):
        leveled_p_error(hybrid.remote_modules["features"].q_module, x[:30].numpy(), reference[:1], 1 / 16)


@pytest.mark.fhe_execute
def test_remote_equals_simulate_on_a_real_server(compiled_gpt2, tokens, tmp_path):
    x = tokens[3:, :6]
    expected = compiled_gpt2(x, fhe="disable").logits
    owner = HybridFHEModel(tiny_gpt2(), REMOTE, model_name="tiny-gpt2")
    owner.compile_model(tokens[:3], n_bits=8, output_noise=0)  # exact: remote must equal it bit for bit
    torch.testing.assert_close(owner(x, fhe="simulate").logits, expected, rtol=0, atol=0)
    owner.save_and_clear_private_info(tmp_path / "deployed")
    with pytest.raises(RuntimeError, match="call compile_model"):
        owner(x, fhe="simulate")
    server_copy, client_copy = tmp_path / "deployed" / "server", tmp_path / "deployed" / "client"
    assert not list(client_copy.rglob("server.zip")) and len(list(server_copy.rglob("server.zip"))) == 2
    state = torch.load(client_copy / "model_state.pt", weights_only=True)
    assert not [k for k in state if any(k.startswith(name) for name in REMOTE)]
    assert "transformer.h.0.attn.c_attn.weight" in state  # the clear part stays with the client

    server = ServerProcess(server_copy, tmp_path / "server_keys", tmp_path / "server.log", "--workers", "1")
    ignore_sigpipe()
    try:
        # the client rebuilds the architecture; the clear weights come from its copy
        client = HybridFHEModel(tiny_gpt2(seed=5), REMOTE, server_remote_address=server.url, model_name="tiny-gpt2")
        client.init_client(client_copy, key_dir=tmp_path / "client_keys")
        assert all(w.private_module is None for w in client.remote_modules.values())
        remote = client(x, fhe="remote").logits
        torch.testing.assert_close(remote, expected, rtol=0, atol=0)
        client(x[:, :2], fhe="remote")  # keys reused: still one key set per module
        assert sorted(p.parent.parent.name for p in (tmp_path / "server_keys").glob("module_*/*/meta.json")) == [
            "module_0",
            "module_1",
        ]
        sent = client.remote_modules[REMOTE[0]].remote.last_call_bytes["sent"]
        assert 0 < sent < 20_000 * 2  # 2 tokens of 32 encrypted (compressed) values

        other = HybridFHEModel(tiny_gpt2(), REMOTE, server_remote_address=server.url, model_name="other")
        with pytest.raises(ValueError, match="not 'other'"):
            other.init_client(client_copy)
        # a client copy of another model, pointed at this server
        renamed = tmp_path / "other_client"
        shutil.copytree(client_copy, renamed, ignore=shutil.ignore_patterns("keys"))
        manifest = renamed / "hybrid.json"
        manifest.write_text(manifest.read_text().replace("tiny-gpt2", "other"))
        with pytest.raises(ValueError, match="serves model 'tiny-gpt2', not 'other'"):
            other.init_client(renamed)
    finally:
        server.stop()

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        stalled = HybridFHEModel(tiny_gpt2(), REMOTE, server_remote_address=url, model_name="tiny-gpt2")
        with pytest.raises(TimeoutError, match=r"did not answer within 0\.5 s"):
            stalled.init_client(client_copy, timeout=0.5)

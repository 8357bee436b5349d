"""Row back-ends are looked up by name: the built-in threads, the deployment's processes and
Dask (entry points), and a user's own."""

import numpy as np
import pytest

from fhe_sklearn.quantization import PostTrainingQuantizer, execution


class Recorder:
    def __init__(self):
        self.forgotten = []

    def run_rows(self, circuit, rows, n_jobs, progress):
        self.rows = len(rows)
        return [circuit.encrypt_run_decrypt(*row) for row in rows]

    def forget(self, circuit):
        self.forgotten.append(circuit)


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(execution, "_registered", dict(execution._registered))
    monkeypatch.setattr(execution, "_loaded", dict(execution._loaded))


def test_deployment_back_ends_come_from_entry_points(registry):
    from fhe_sklearn.deployment import batch

    assert execution.backend_names() == ["threads", "dask", "processes"]
    assert execution.get_backend(None) is execution.get_backend("threads")
    assert execution.get_backend("processes") is batch.PROCESSES and execution.get_backend("dask") is batch.DASK


@pytest.mark.fhe_execute
def test_a_registered_back_end_runs_the_rows_of_a_module(registry):
    mine = Recorder()
    calls = []
    execution.register_backend("mine", lambda: calls.append(1) or mine)  # loaded on first use, once
    x = np.random.default_rng(0).normal(size=(20, 2))
    module = PostTrainingQuantizer(n_bits=3).quantize_module([{"type": "relu"}], x)
    module.compile(x)
    x_q = module.quantize_input(x[:3])
    executed = module.quantized_forward(x_q, fhe="execute", backend="mine")
    np.testing.assert_array_equal(executed, module.quantized_forward(x_q, fhe="simulate"))
    assert mine.rows == 3 and calls == [1] and execution.get_backend("mine") is mine
    module.keygen(force=True)  # new keys: every back-end in use drops what it kept
    assert mine.forgotten == [module.fhe_circuit]
    with pytest.raises(ValueError, match=r"backend must be 'threads', 'dask', 'mine' or 'processes', got 'gpu'"):
        execution.get_backend("gpu")
    with pytest.raises(ValueError, match="non-empty name"):
        execution.register_backend("", mine)

"""A failure after a circuit ran must still fail the process (concrete's runtime resets the
exit status to 0 at interpreter exit once a circuit ran)."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_wine

from fhe_sklearn.cli import main

ROOT = Path(__file__).resolve().parents[1]

FAILS_AFTER_A_CIRCUIT = textwrap.dedent(
    """
    import numpy as np
    from fhe_sklearn.quantization import PostTrainingQuantizer

    x = np.random.default_rng(0).normal(size=(20, 2))
    module = PostTrainingQuantizer(n_bits=3).quantize_module([{"type": "relu"}], x)
    module.compile(x)
    module.forward(x[:2], fhe="simulate")  # a circuit ran in this process
    assert False, "failing on purpose after a circuit ran"
    """
)


def run(args, cwd):
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["one process", "xdist"])
def test_pytest_run_failing_after_a_circuit_exits_non_zero(tmp_path, workers):
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    body = FAILS_AFTER_A_CIRCUIT.replace("\n", "\n    ")
    # with xdist, the circuit runs (and the test fails) in a worker, whose report must count
    (tmp_path / "test_fails.py").write_text(f"def test_fails():{body}\n\n\ndef test_passes():\n    pass\n")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *workers, str(tmp_path)]
    done = run(command, tmp_path)
    assert "failing on purpose after a circuit ran" in done.stdout
    assert "1 failed, 1 passed" in done.stdout
    assert done.returncode == 1


def test_script_failing_after_a_circuit_exits_non_zero(tmp_path):
    script = "from fhe_sklearn.cli import exit_with_status\n\ndef main():" + FAILS_AFTER_A_CIRCUIT.replace(
        "\n", "\n    "
    )
    (tmp_path / "script.py").write_text(script + "\n\nexit_with_status(main)\n")
    done = run([sys.executable, str(tmp_path / "script.py")], tmp_path)
    assert "failing on purpose after a circuit ran" in done.stderr
    assert done.returncode == 1


def test_cli_predict_failing_after_encrypted_execution_exits_non_zero(tmp_path):
    X, y = load_wine(return_X_y=True)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])]).assign(label=y)
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.drop(columns=["label"]).iloc[:1].to_csv(tmp_path / "new.csv", index=False)
    main(["compile", str(tmp_path / "train.csv"), "--model", "LogisticRegression", "--output", str(tmp_path / "dep")])
    (tmp_path / "taken").mkdir()  # the output path is a directory: writing the CSV fails last
    command = [sys.executable, "-m", "fhe_sklearn", "predict", str(tmp_path / "dep"), str(tmp_path / "new.csv")]
    done = run([*command, "--output", str(tmp_path / "taken"), "--key-dir", str(tmp_path / "keys")], tmp_path)
    assert "IsADirectoryError" in done.stderr
    assert done.returncode == 1

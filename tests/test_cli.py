import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine

from fhe_sklearn.cli import main


def test_demo_runs_real_encrypted_predictions(capsys):
    rows = main(["demo", "--dataset", "wine", "--n-samples", "2", "--n-bits", "6", "--model", "LogisticRegression"])
    assert [r["model"] for r in rows] == ["LogisticRegression"]
    row = rows[0]
    assert row["execute_equals_simulate"] and row["n_execute"] == 2 and row["pbs_count"] == 0
    assert row["simulate_score"] >= row["float_score"] - 0.05
    assert "| LogisticRegression | accuracy |" in capsys.readouterr().out


def test_demo_on_a_csv_with_a_named_target(tmp_path):
    X, y = load_wine(return_X_y=True)
    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(X.shape[1])])
    frame.insert(0, "label", y)
    path = tmp_path / "wine.csv"
    frame.to_csv(path, index=False)
    rows = main(
        ["demo", "--dataset", str(path), "--target", "label", "--n-samples", "1", "--model", "LogisticRegression"]
    )
    assert rows[0]["simulate_score"] > 0.9
    with pytest.raises(SystemExit, match="not in"):
        main(["demo", "--dataset", str(path), "--target", "nope"])
    with pytest.raises(SystemExit, match="unknown dataset"):
        main(["demo", "--dataset", "no_such_thing"])
    assert np.isfinite(rows[0]["execute_ms_per_sample"])

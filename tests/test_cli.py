from pathlib import Path

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
    with pytest.raises(SystemExit, match="at least 1"):
        main(["demo", "--n-samples", "0"])
    assert np.isfinite(rows[0]["execute_ms_per_sample"])


def test_compile_then_predict_from_csv_files(tmp_path):
    X, y = load_wine(return_X_y=True)
    names = [f"x{i}" for i in range(X.shape[1])]
    frame = pd.DataFrame(X, columns=names).assign(label=y)
    frame.to_csv(tmp_path / "train.csv", index=False)
    # prediction data: shuffled columns and no target; the model picks its own columns
    new = frame.drop(columns=["label"]).iloc[:3, ::-1]
    new.to_csv(tmp_path / "new.csv", index=False)
    deployment = tmp_path / "deployment"
    report = main(
        ["compile", str(tmp_path / "train.csv"), "--model", "LogisticRegression", "--output", str(deployment)]
    )
    assert sorted(p.name for p in deployment.iterdir()) == ["client.json", "server.zip"]
    assert report["simulate_score"] >= report["float_score"] - 0.05 and report["pbs_count"] == 0
    keys = tmp_path / "keys"
    out = main(
        [
            "predict",
            str(deployment),
            str(tmp_path / "new.csv"),
            "--output",
            str(tmp_path / "p.csv"),
            "--key-dir",
            str(keys),
        ]
    )
    written = pd.read_csv(tmp_path / "p.csv")
    model = report["estimator"]
    np.testing.assert_array_equal(written["prediction"], model.predict(new[names]))
    proba = model.predict_proba(new[names], fhe="simulate")
    np.testing.assert_allclose(written[[f"proba_{c}" for c in model.classes_]].to_numpy(), proba)
    assert out.shape == (3, 4) and any(keys.iterdir())  # private keys stay on the client's side


def test_compile_and_predict_errors(tmp_path):
    X, y = load_wine(return_X_y=True)
    pd.DataFrame(X[:, :3], columns=["a", "b", "c"]).assign(y=y).to_csv(tmp_path / "d.csv", index=False)
    with pytest.raises(SystemExit, match="unknown model 'Nope'"):
        main(["compile", str(tmp_path / "d.csv"), "--model", "Nope", "--output", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["compile", str(tmp_path / "d.csv"), "--param", "max_depth", "--output", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="bad parameters for LogisticRegression"):
        main(["compile", str(tmp_path / "d.csv"), "--param", "depth=3", "--output", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="no such CSV file"):
        main(["compile", str(tmp_path / "missing.csv"), "--output", str(tmp_path / "o")])
    params = ["--model", "DecisionTreeClassifier", "--param", "max_depth=2", "--n-bits", "3"]
    main(["compile", str(tmp_path / "d.csv"), *params, "--output", str(tmp_path / "dep")])
    pd.DataFrame({"a": [1.0], "b": [2.0]}).to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(SystemExit, match=r"lacks the model's columns \['c'\]"):
        main(["predict", str(tmp_path / "dep"), str(tmp_path / "short.csv"), "--output", str(tmp_path / "p.csv")])
    pd.DataFrame({"a": [np.nan], "b": [2.0], "c": [1.0]}).to_csv(tmp_path / "nan.csv", index=False)
    with pytest.raises(SystemExit, match="NaN"):
        main(["predict", str(tmp_path / "dep"), str(tmp_path / "nan.csv"), "--output", str(tmp_path / "p.csv")])


def test_private_keys_default_to_a_per_user_cache_not_the_working_directory(monkeypatch, tmp_path):
    from fhe_sklearn.cli import default_key_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_key_dir() == tmp_path / "cache" / "fhe_sklearn" / "keys"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_key_dir().is_relative_to(Path.home())

"""The benchmark suite's --quick mode runs end to end and writes its results and plots."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_benchmark_smoke(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--output", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "benchmarks.json").read_text())
    rows = {r["model"]: r for r in results["rows"]}
    assert {r["family"] for r in rows.values()} == {"linear", "tree", "boosting", "neural net"}
    assert rows["LogisticRegression"]["execute_equals_simulate"] is True
    assert rows["LogisticRegression"]["simulate_score"] >= rows["LogisticRegression"]["float_score"] - 0.02
    assert rows["DecisionTreeClassifier"]["pbs_count"] > 0
    assert all(r["peak_memory_mb"] > 0 for r in rows.values())
    assert results["bit_width_sweep"]
    assert (tmp_path / "accuracy_vs_n_bits.png").stat().st_size > 1000
    assert (tmp_path / "latency_vs_pbs.png").stat().st_size > 1000
    assert "| linear | LogisticRegression | breast_cancer |" in (tmp_path / "benchmarks.md").read_text()


def test_failing_benchmark_exits_non_zero(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--no-such-flag"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0

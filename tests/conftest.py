import json
from pathlib import Path

import numpy as np
import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "quantization_seed_examples.json"


@pytest.fixture(scope="session")
def quantization_reference() -> dict:
    if not REFERENCE.exists():
        pytest.fail(f"reference file missing: {REFERENCE} (CI clones the repo with shared/ beside it)")
    return json.loads(REFERENCE.read_text())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

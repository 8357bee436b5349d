import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "quantization_seed_examples.json"

# CI must be reproducible: the same examples on every run
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

_EXIT_STATUS: dict[str, int] = {}


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    _EXIT_STATUS["status"] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config):
    # concrete's runtime turns the process exit status into 0 at interpreter exit once a
    # circuit has been simulated or executed, which would make a failing run look green:
    # leave with pytest's own status before that can happen
    if "status" in _EXIT_STATUS:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["status"])


@pytest.fixture(scope="session")
def quantization_reference() -> dict:
    if not REFERENCE.exists():
        pytest.fail(f"reference file missing: {REFERENCE} (CI clones the repo with shared/ beside it)")
    return json.loads(REFERENCE.read_text())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)

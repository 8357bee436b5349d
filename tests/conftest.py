import json
import os
import sys
from pathlib import Path

# the suite runs on pytest-xdist workers, one per core: a worker's BLAS and OpenMP pools (numpy,
# scikit-learn, concrete's runtime) get one thread each, set before those libraries load. More
# threads than cores spin against the other worker (a 0.1 s lbfgs fit measured 100 s that way)
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_variable, "1")

import numpy as np
import pytest
from hypothesis import settings
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

# copied from ../shared/reference: the suite must pass in a standalone clone
REFERENCE = Path(__file__).resolve().parent / "data" / "quantization_seed_examples.json"

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
    # leave with pytest's own status before that can happen. An xdist worker reports its
    # results to the controller, whose status counts: it must exit normally
    if "status" in _EXIT_STATUS and not hasattr(config, "workerinput"):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_EXIT_STATUS["status"])


#: the modules of the suite's longest tests, longest first (a fresh-clone run's --durations)
SLOWEST_MODULES = (
    "test_brevitas.py",
    "test_http_training.py",
    "test_notebooks.py",
    "test_lean_networks.py",
    "test_deploy_image.py",
    "test_neighbors.py",
    "test_onnx_tensor_ops.py",
    "test_http_server.py",
    "test_serialization.py",
    "test_dataframes_private.py",
)


def pytest_collection_modifyitems(config, items):
    # longest first, then the other modules that run real FHE, then the rest: on two xdist
    # workers a minute-long test left for the end runs while the other worker idles. Whole
    # modules move, so their module-scoped fixtures (compiled circuits) are still built once
    heavy = {item.module for item in items if item.get_closest_marker("fhe_execute")}

    def rank(item):
        name = Path(str(item.fspath)).name
        return (
            SLOWEST_MODULES.index(name)
            if name in SLOWEST_MODULES
            else len(SLOWEST_MODULES) + (item.module not in heavy)
        )

    items.sort(key=rank)


@pytest.fixture(scope="session")
def quantization_reference() -> dict:
    if not REFERENCE.exists():
        pytest.fail(f"reference file missing: {REFERENCE}")
    return json.loads(REFERENCE.read_text())


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def split_dataset(loader, scale: bool = False):
    """X_train, X_test, y_train, y_test with test_size=0.2, random_state=0 (as the issues)."""
    X, y = loader(return_X_y=True)
    if scale:
        X = StandardScaler().fit_transform(X)
    return train_test_split(X, y, test_size=0.2, random_state=0)


def _dataset_fixture(loader, scale):
    return pytest.fixture(scope="session")(lambda: split_dataset(loader, scale))


cancer = _dataset_fixture(load_breast_cancer, False)
wine = _dataset_fixture(load_wine, False)
diabetes = _dataset_fixture(load_diabetes, False)
scaled_cancer = _dataset_fixture(load_breast_cancer, True)
scaled_wine = _dataset_fixture(load_wine, True)
scaled_diabetes = _dataset_fixture(load_diabetes, True)

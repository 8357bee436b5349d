"""``python -m benchmarks [--quick]``: see :mod:`benchmarks.run`."""

from benchmarks.run import main
from fhe_sklearn.cli import exit_with_status

if __name__ == "__main__":
    exit_with_status(main)

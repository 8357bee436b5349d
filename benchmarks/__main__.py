"""``python -m benchmarks [--quick]``: see :mod:`benchmarks.run`."""

import os
import sys

from benchmarks.run import main

if __name__ == "__main__":
    status = 0
    try:
        main()
    except SystemExit as err:  # argparse errors and --help
        status = err.code if isinstance(err.code, int) else 1
    except BaseException:  # leave with a failing status, see below
        import traceback

        traceback.print_exc()
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # concrete's runtime resets the exit status to 0 at interpreter exit once a circuit ran
    os._exit(status)

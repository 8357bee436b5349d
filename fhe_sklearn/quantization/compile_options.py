"""The configuration a circuit is compiled with: error budget, MLIR printing, debug dumps.

Concrete ML's ``compile(X, configuration, show_mlir, p_error, global_p_error, verbose)``
semantics, with this library's safe error budget as the default:

- an error probability set by the user, as an argument **or** in ``configuration``, is used
  as is; without one, the whole circuit run may be wrong with probability
  ``DEFAULT_GLOBAL_P_ERROR``;
- ``p_error`` (per PBS) and ``global_p_error`` (per circuit run) together are refused;
- concrete dumps its debug artifacts on an unexpected compiler failure into ``./.artifacts``
  by default. Here the dump happens only when the user's configuration asks for it
  (``dump_artifacts_on_unexpected_failures``, concrete's default for a configuration built by
  the user), and goes to a fresh temporary directory named in the error, never into the
  working directory.
"""

from __future__ import annotations

import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from concrete import fhe

#: error budget of a whole circuit run when the caller sets none. concrete's default (1e-5)
#: gave 2 wrong rows in 890 simulated runs of a 184-PBS forest; 1e-7 gave none in 5304, for
#: ~1.6x the latency of that default
DEFAULT_GLOBAL_P_ERROR = 1e-7


@dataclass
class CompileOptions:
    """What :func:`resolve_compile_options` hands to ``fhe.Compiler.compile``.

    Attributes
    ----------
    configuration : concrete.fhe.Configuration
        The configuration to compile with (a fork: the user's object is never modified).
    artifacts : concrete.fhe.compilation.DebugArtifacts or None
        Where concrete dumps its debug information if the compiler fails unexpectedly
        (a temporary directory, created only then); None when no dump is asked for.
    """

    configuration: fhe.Configuration
    artifacts: fhe.compilation.DebugArtifacts | None

    @property
    def artifacts_directory(self) -> Path | None:
        """The dump directory if the compiler wrote one, else None."""
        if self.artifacts is None:
            return None
        directory = Path(self.artifacts.module_artifacts.output_directory)
        return directory if directory.exists() else None


def default_configuration() -> fhe.Configuration:
    """What ``compile`` uses without a ``configuration``: evaluation keys and input
    ciphertexts in their seeded (compressed) form, and no debug dump. Measured on a depth-5
    tree (benchmarks/results/lean.md, README): keys 662 → 151 MB and an input 1.97 MB → 1 KB,
    same key generation and execution times; the server expands them once.

    ``compile`` builds the simulator (which runs the same parameter optimizer, so a circuit
    that does not fit fails there); the execution library is built on first use (key
    generation, ``execute``, the circuit's statistics or its server). Each takes about as long
    as the other (k-NN, 30 points: 5.4 and 5.7 s), and compiling then simulating, the loop of
    model selection, needed both."""
    return fhe.Configuration(
        dump_artifacts_on_unexpected_failures=False,
        compress_evaluation_keys=True,
        compress_input_ciphertexts=True,
        fhe_simulation=True,
        fhe_execution=False,
    )


def check_probability(value: float | None, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is None or a probability in (0, 1)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{name} must be a probability in (0, 1), got {value!r}")


def _merge(argument: float | None, configured: float | None, name: str) -> float | None:
    """The argument, or the configuration's value; both set and different is ambiguous."""
    if argument is not None and configured is not None and argument != configured:
        raise ValueError(
            f"{name}={argument!r} contradicts configuration.{name}={configured!r}: set it in one place only"
        )
    return argument if argument is not None else configured


def resolve_compile_options(
    configuration: fhe.Configuration | None = None,
    p_error: float | None = None,
    global_p_error: float | None = None,
    show_mlir: bool = False,
    verbose: bool = False,
    default_global_p_error: float | None = None,
) -> CompileOptions:
    """The configuration and debug-artifact location of one compilation.

    Parameters
    ----------
    configuration : concrete.fhe.Configuration, optional
        The user's configuration; its ``p_error``/``global_p_error`` count as set by the user.
    p_error : float, optional
        Error probability of each programmable bootstrap.
    global_p_error : float, optional
        Error probability of a whole circuit run.
    show_mlir : bool
        Print the MLIR of the circuit (as ``configuration.show_mlir``).
    verbose : bool
        Print concrete's compilation details (as ``configuration.verbose``).
    default_global_p_error : float, optional
        The budget of a run when neither error probability is set (None:
        ``DEFAULT_GLOBAL_P_ERROR``); a module gives its own.

    Returns
    -------
    options : CompileOptions

    Raises
    ------
    ValueError
        If ``p_error`` and ``global_p_error`` are both set (as arguments, in the
        configuration, or one in each), if an argument contradicts the configuration, or if
        a value is not a probability.

    Examples
    --------
    >>> from concrete import fhe
    >>> resolve_compile_options(fhe.Configuration()).configuration.global_p_error
    1e-07
    >>> resolve_compile_options(fhe.Configuration(p_error=1e-3)).configuration.global_p_error is None
    True
    """
    if configuration is not None and not isinstance(configuration, fhe.Configuration):
        raise TypeError(f"configuration must be a concrete.fhe.Configuration, got {type(configuration).__name__}")
    user_config = configuration is not None
    if configuration is None:
        configuration = default_configuration()
    p_error = _merge(p_error, configuration.p_error, "p_error")
    global_p_error = _merge(global_p_error, configuration.global_p_error, "global_p_error")
    check_probability(p_error, "p_error")
    check_probability(global_p_error, "global_p_error")
    if p_error is not None and global_p_error is not None:
        raise ValueError(
            f"set either p_error ({p_error}, per programmable bootstrap) or global_p_error "
            f"({global_p_error}, per circuit run), not both (arguments and configuration included)"
        )
    if p_error is None and global_p_error is None:
        global_p_error = DEFAULT_GLOBAL_P_ERROR if default_global_p_error is None else default_global_p_error
    overrides: dict = {"p_error": p_error, "global_p_error": global_p_error}
    # only switch printing on: a configuration that already prints keeps doing so
    if show_mlir:
        overrides["show_mlir"] = True
    if verbose:
        overrides["verbose"] = True
    configuration = configuration.fork(**overrides)
    artifacts = None
    if user_config and configuration.dump_artifacts_on_unexpected_failures:
        directory = Path(tempfile.gettempdir()) / f"fhe_sklearn-artifacts-{uuid.uuid4().hex[:12]}"
        artifacts = fhe.compilation.DebugArtifacts(output_directory=directory)
    return CompileOptions(configuration, artifacts)


__all__ = [
    "DEFAULT_GLOBAL_P_ERROR",
    "CompileOptions",
    "check_probability",
    "default_configuration",
    "resolve_compile_options",
]

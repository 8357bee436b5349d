"""Search the largest PBS error probability (``p_error``) a model tolerates, and what it buys.

Every programmable bootstrap (PBS, a table lookup) of a circuit is wrong with probability
``p_error``; a larger one lets concrete pick smaller cryptographic parameters, so the circuit
runs faster. :class:`BinarySearch` finds the largest ``p_error`` whose FHE-simulated score
stays within ``max_metric_loss`` of the exact integer model's score (``fhe="disable"``, no PBS
error), bisecting on a log scale since useful values span many orders of magnitude, and
:meth:`BinarySearch.measure_latency` measures the latency it buys with real encryption.

It takes Concrete ML's call as is::

    search = BinarySearch(estimator=model, predict="predict", metric=accuracy_score)
    p_error = search.run(x=X, ground_truth=y)

Differences from Concrete ML: the reference score is the exact integer model's (Concrete ML
simulates at ``p_error=2**-40``); bisection is in ``log10(p_error)``; the result is the largest
``p_error`` that passed (never an untested midpoint); ``is_qat``/``n_bits`` are accepted and
unused (built-in estimators carry their own quantization).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score
from tqdm import tqdm

#: smallest p_error searched: Concrete ML's "no error" reference probability
MIN_P_ERROR = 2.0**-40


@dataclass
class LatencyReport:
    """Latency of a model compiled with the default error budget and with the found ``p_error``.

    Attributes
    ----------
    p_error : float
        The ``p_error`` found by the search.
    default_ms, found_ms : float
        Median milliseconds per encrypted prediction (``encrypt_run_decrypt`` of one row).
    default_complexity, found_complexity : float
        concrete's deterministic cost model of each circuit.
    default_keygen_s, found_keygen_s : float
        Key generation time of each circuit (once per circuit).
    n_rows : int
        Rows timed per circuit.
    """

    p_error: float
    default_ms: float
    found_ms: float
    default_complexity: float
    found_complexity: float
    default_keygen_s: float
    found_keygen_s: float
    n_rows: int

    @property
    def speedup(self) -> float:
        """``default_ms / found_ms``: how many times faster the found ``p_error`` runs."""
        return self.default_ms / self.found_ms


class BinarySearch:
    """Largest ``p_error`` whose simulated score stays within ``max_metric_loss`` of the exact one.

    Parameters
    ----------
    estimator : fhe_sklearn estimator
        Any estimator of this library (fitted on ``x`` by :meth:`run` if it is not fitted).
        :meth:`run` leaves it compiled with the ``p_error`` found.
    predict : str
        Method whose output ``metric`` scores: ``"predict"``, ``"predict_proba"``, ...
    metric : callable
        ``metric(ground_truth, output) -> float``, e.g. ``sklearn.metrics.accuracy_score``.
    n_bits, is_qat :
        Accepted for Concrete ML compatibility; unused (the estimator's own quantization applies).
    lower, upper : float
        Search interval of ``p_error``; ``lower=0`` means ``MIN_P_ERROR`` (2^-40).
    max_iter : int
        Bisection steps (each compiles once and simulates ``n_simulation`` times).
    n_simulation : int
        Simulated predictions of ``x`` per step: PBS errors are random.
    strategy : callable
        Reduces the ``n_simulation`` pass/fail booleans of a step to one (``all``, ``any``...).
    max_metric_loss : float
        Tolerated score loss with respect to the exact integer model.
    greater_is_better : bool
        False for an error metric (e.g. ``mean_squared_error``): the loss is then
        ``score - reference``.
    save : bool
        Append each step to ``directory / log_file`` (CSV).
    log_file, directory : str, optional
        Log location when ``save``.
    verbose : bool
        Show a progress bar and each step.
    **kwargs :
        Passed to ``metric``.

    Attributes
    ----------
    p_error : float
        After :meth:`run`: the ``p_error`` found.
    reference_score : float
        The exact integer model's score.
    history : list of dict
        One entry per bisection step: ``p_error``, ``scores``, ``matches``, ``match``.

    Examples
    --------
    >>> from sklearn.metrics import accuracy_score
    >>> search = BinarySearch(estimator=model, predict="predict", metric=accuracy_score)  # doctest: +SKIP
    >>> p_error = search.run(x=X_val, ground_truth=y_val)  # doctest: +SKIP
    >>> search.measure_latency(X_val).speedup  # doctest: +SKIP
    """

    def __init__(
        self,
        estimator: Any,
        predict: str = "predict",
        metric: Callable[..., float] = accuracy_score,
        n_bits: Any = None,
        is_qat: bool = True,
        lower: float = 0.0,
        upper: float = 0.9,
        max_iter: int = 20,
        n_simulation: int = 5,
        strategy: Callable[[list[bool]], bool] = all,
        max_metric_loss: float = 0.01,
        greater_is_better: bool = True,
        save: bool = False,
        log_file: str | None = None,
        directory: str | None = None,
        verbose: bool = False,
        **kwargs: Any,
    ) -> None:
        self.estimator = estimator
        self.predict = predict
        self.metric = metric
        self.n_bits = n_bits
        self.is_qat = is_qat
        self.lower = lower
        self.upper = upper
        self.max_iter = max_iter
        self.n_simulation = n_simulation
        self.strategy = strategy
        self.max_metric_loss = max_metric_loss
        self.greater_is_better = greater_is_better
        self.save = save
        self.log_file = log_file
        self.directory = directory
        self.verbose = verbose
        self.kwargs = kwargs
        self.history: list[dict[str, Any]] = []
        self._check_valid_values()

    def _check_valid_values(self) -> None:
        if not 0 <= self.lower < self.upper < 1:
            raise ValueError(f"need 0 <= lower < upper < 1, got lower={self.lower}, upper={self.upper}")
        if self.upper <= MIN_P_ERROR:
            raise ValueError(f"upper must exceed {MIN_P_ERROR:.3g} (2^-40)")
        for name in ("max_iter", "n_simulation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not callable(self.metric) or not callable(self.strategy):
            raise TypeError("metric and strategy must be callables")
        if not isinstance(self.predict, str) or not hasattr(self.estimator, self.predict):
            raise ValueError(f"{type(self.estimator).__name__} has no prediction method {self.predict!r}")
        if self.save and (self.log_file is None or self.directory is None):
            raise ValueError("save=True needs log_file and directory")

    def _score(self, x: np.ndarray, ground_truth: Any, fhe: str) -> float:
        output = getattr(self.estimator, self.predict)(x, fhe=fhe)
        return float(self.metric(ground_truth, output, **self.kwargs))

    def _loss(self, score: float) -> float:
        return self.reference_score - score if self.greater_is_better else score - self.reference_score

    def _step(self, x: np.ndarray, ground_truth: Any, p_error: float, strategy: Callable) -> bool:
        """Compile at ``p_error``, simulate ``n_simulation`` times; does it pass?"""
        self.estimator.compile(x, p_error=p_error)
        scores = [self._score(x, ground_truth, "simulate") for _ in range(self.n_simulation)]
        matches = [self._loss(s) <= self.max_metric_loss for s in scores]
        match = strategy(matches)
        if not isinstance(match, (bool, np.bool_)):
            raise TypeError(f"strategy must turn a list of booleans into a boolean, got {match!r}")
        entry = {"p_error": p_error, "scores": scores, "matches": matches, "match": bool(match)}
        self.history.append(entry)
        self._log(entry)
        if self.verbose:
            print(f"p_error={p_error:.3g} scores={np.round(scores, 4).tolist()} match={bool(match)}")
        return bool(match)

    def _log(self, entry: dict[str, Any]) -> None:
        if not self.save:
            return
        path = Path(self.directory) / self.log_file
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        with path.open("a", encoding="utf-8") as f:
            if new:
                f.write("p_error,reference_score,mean_score,match\n")
            f.write(f"{entry['p_error']},{self.reference_score},{np.mean(entry['scores'])},{entry['match']}\n")

    def run(self, x: Any, ground_truth: Any, strategy: Callable | None = None, **kwargs: Any) -> float:
        """Search the largest ``p_error`` whose simulated score stays within the tolerance.

        Parameters
        ----------
        x : array-like of shape (n_samples, n_features)
            Compiles the model and is scored (fits the estimator if it is not fitted).
        ground_truth : array-like of shape (n_samples,)
        strategy : callable, optional
            Overrides the constructor's ``strategy`` for this run.
        **kwargs :
            Constructor parameters to change before running (as in Concrete ML).

        Returns
        -------
        p_error : float
            The largest ``p_error`` that passed; the lower bound (with a
            ``ConvergenceWarning``) if none did.
        """
        for name, value in kwargs.items():
            if not hasattr(self, name) or name.startswith("_"):
                raise AttributeError(f"BinarySearch has no parameter {name!r}")
            setattr(self, name, value)
        self._check_valid_values()
        strategy = self.strategy if strategy is None else strategy
        x = np.asarray(x, dtype=np.float64) if not hasattr(x, "iloc") else x
        if not self.estimator.is_fitted:
            self.estimator.fit(x, ground_truth)
        self.history = []
        self.reference_score = self._score(x, ground_truth, "disable")
        floor = max(self.lower, MIN_P_ERROR)
        lo, hi = math.log10(floor), math.log10(self.upper)
        best = None
        if self._step(x, ground_truth, self.upper, strategy):
            best = self.upper
        else:
            for _ in tqdm(range(self.max_iter), desc="p_error search", disable=not self.verbose):
                mid = (lo + hi) / 2
                if self._step(x, ground_truth, 10**mid, strategy):
                    best, lo = 10**mid, mid
                else:
                    hi = mid
        if best is None:
            warnings.warn(
                f"no p_error in [{floor:.3g}, {self.upper:.3g}] kept the score within {self.max_metric_loss} "
                "of the exact model's: returning the lower bound. Raise max_iter or max_metric_loss, "
                "or score more rows.",
                ConvergenceWarning,
                stacklevel=2,
            )
            best = floor
        self.p_error = float(best)
        self.estimator.compile(x, p_error=self.p_error)
        return self.p_error

    def measure_latency(self, x: Any, n_rows: int = 3) -> LatencyReport:
        """Time real encrypted predictions at the default error budget and at the found ``p_error``.

        Each circuit generates its keys once; then ``n_rows`` rows of ``x`` run one by one
        through ``encrypt_run_decrypt``. Key generation of tree models takes seconds and GBs
        of memory: keep the model small. The estimator is left compiled at the found
        ``p_error``.

        Parameters
        ----------
        x : array-like of shape (n_samples, n_features)
            Compiles both circuits; its first ``n_rows`` rows are timed.
        n_rows : int

        Returns
        -------
        report : LatencyReport
        """
        if not hasattr(self, "p_error"):
            raise RuntimeError("measure_latency needs a p_error: call run(x, ground_truth) first")
        if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 1:
            raise ValueError(f"n_rows must be a positive integer, got {n_rows!r}")
        rows = self.estimator.quantize_input(x)[:n_rows]
        measured = {}
        for label, kwargs in (("default", {}), ("found", {"p_error": self.p_error})):
            circuit = self.estimator.compile(x, **kwargs)
            start = time.perf_counter()
            circuit.keygen(force=True)
            keygen = time.perf_counter() - start
            times = []
            for i in range(len(rows)):
                start = time.perf_counter()
                circuit.encrypt_run_decrypt(rows[i : i + 1])
                times.append(1000 * (time.perf_counter() - start))
            measured[label] = (float(np.median(times)), float(circuit.complexity), keygen)
        return LatencyReport(
            p_error=self.p_error,
            default_ms=measured["default"][0],
            found_ms=measured["found"][0],
            default_complexity=measured["default"][1],
            found_complexity=measured["found"][1],
            default_keygen_s=measured["default"][2],
            found_keygen_s=measured["found"][2],
            n_rows=len(rows),
        )


__all__ = ["MIN_P_ERROR", "BinarySearch", "LatencyReport"]

"""The integers of one encrypted SGD step, and the step itself (in the clear or traced).

A :class:`TrainingPlan` fixes every integer of the training: feature codes of ``x_bits``
(signed, symmetric), weights of ``weight_bits`` on a grid over ``parameters_range``, the
forward pass on weights rounded to ``forward_bits``, the score rounded to ``score_bits``
before the one lookup giving the prediction, and the error of ``error_bits``. The learning
rate becomes a shift (``update_shift``): the gradient sum is rounded, with a dither the
client draws in the clear (unbiased stochastic rounding), to whole weight steps, and the
weights are clipped back to their grid. ``step`` runs the same integer program on numpy
arrays (``fhe="disable"``) and under concrete's tracer (the circuit), so both give the
same integers.

Every encrypted × encrypted product is ``⌊(a+b)²/4⌋ − ⌊(a−b)²/4⌋``: two lookups on a 4-bit
sum, whatever the width of the accumulator they feed (concrete's own product would run its
lookups at the accumulator's width).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit

from ..quantization.quantizers import integer_bit_width

TASKS = ("classification", "regression")
#: default bit-widths: measured on breast_cancer / wine / diabetes (benchmarks/training.py)
DEFAULT_BITS = {"x_bits": 3, "weight_bits": 6, "forward_bits": 3, "score_bits": 5, "error_bits": 3}


def check_parameters_range(value: Any) -> tuple[float, float]:
    """``parameters_range`` as a (low, high) pair of finite floats with low < 0 < high."""
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"parameters_range must be a pair (low, high) of numbers, got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < 0 < high):
        raise ValueError(f"parameters_range must satisfy low < 0 < high (the weights start at 0), got {value!r}")
    return low, high


def _shift_round(t: Any, k: int) -> Any:
    """round(t / 2**k), ties up: what ``fhe.round_bit_pattern`` then a shift compute."""
    return t if k <= 0 else (t + (1 << (k - 1))) >> k


@dataclass
class TrainingPlan:
    """The integer layout of encrypted SGD for ``n_features`` inputs and ``n_outputs`` outputs.

    Parameters
    ----------
    n_features, n_outputs, batch_size : int
    task : {"classification", "regression"}
        Log-loss per output (one-vs-rest for several) or squared loss.
    parameters_range : (float, float)
        The range every weight and bias is kept in (clipped to it after each step).
    learning_rate : float
        The float step size; rounded to a power of two of the integer step
        (:attr:`effective_learning_rate`).
    center, half_range : list of float
        Per feature: the float value coded 0 and the half-width coded ``±(2**(x_bits-1) - 1)``.
    target_step : float
        Regression: the (standardized) target value of one error unit.
    x_bits, weight_bits, forward_bits, score_bits, error_bits : int
    """

    n_features: int
    n_outputs: int
    batch_size: int
    task: str
    parameters_range: tuple[float, float]
    learning_rate: float
    center: list[float]
    half_range: list[float]
    target_step: float = 0.25
    x_bits: int = DEFAULT_BITS["x_bits"]
    weight_bits: int = DEFAULT_BITS["weight_bits"]
    forward_bits: int = DEFAULT_BITS["forward_bits"]
    score_bits: int = DEFAULT_BITS["score_bits"]
    error_bits: int = DEFAULT_BITS["error_bits"]
    _tables: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        for name in ("n_features", "n_outputs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            setattr(self, name, int(value))
        for name, (low, high) in {
            "x_bits": (2, 5),
            "weight_bits": (3, 8),
            "forward_bits": (2, 5),
            "score_bits": (2, 7),
            "error_bits": (2, 5),
        }.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
            setattr(self, name, int(value))
        if self.forward_bits > self.weight_bits:
            raise ValueError(f"forward_bits ({self.forward_bits}) must not exceed weight_bits ({self.weight_bits})")
        self.parameters_range = check_parameters_range(self.parameters_range)
        lr = self.learning_rate
        if isinstance(lr, bool) or not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ValueError(f"the learning rate must be a positive number, got {self.learning_rate!r}")
        self.center = [float(c) for c in np.ravel(self.center)]
        self.half_range = [float(h) for h in np.ravel(self.half_range)]
        if len(self.center) != self.n_features or len(self.half_range) != self.n_features:
            raise ValueError("center and half_range need one value per feature")
        if not all(math.isfinite(c) for c in self.center) or not all(
            math.isfinite(h) and h > 0 for h in self.half_range
        ):
            raise ValueError("center must be finite and half_range positive and finite")
        if not (math.isfinite(self.target_step) and self.target_step > 0):
            raise ValueError(f"target_step must be positive, got {self.target_step!r}")

    # -- serialization -----------------------------------------------------------------------
    def to_json(self) -> dict:
        """Plain JSON values (what a training deployment's client file holds)."""
        data = asdict(self)
        data.pop("_tables")
        data["parameters_range"] = list(self.parameters_range)
        return data

    @classmethod
    def from_json(cls, data: Any) -> TrainingPlan:
        """The plan of :meth:`to_json`'s dict; a ValueError on any unknown or bad field."""
        if not isinstance(data, dict):
            raise ValueError("a training plan must be a JSON object")
        names = {f.name for f in cls.__dataclass_fields__.values() if not f.name.startswith("_")}
        if set(data) - names or {"n_features", "n_outputs", "batch_size", "task"} - set(data):
            raise ValueError(f"a training plan has the fields {sorted(names)}, got {sorted(data)}")
        return cls(**{**data, "parameters_range": tuple(data.get("parameters_range", ()))})

    # -- integer layout ------------------------------------------------------------------------
    @property
    def x_max(self) -> int:
        """Largest feature code (codes lie in [-x_max, x_max])."""
        return 2 ** (self.x_bits - 1) - 1

    @property
    def weight_scale(self) -> float:
        """Float value of one weight unit."""
        return max(abs(v) for v in self.parameters_range) / (2 ** (self.weight_bits - 1) - 1)

    @property
    def weight_bounds(self) -> tuple[int, int]:
        """Integer range of the weights (the grid points inside ``parameters_range``)."""
        low, high = self.parameters_range
        s = self.weight_scale
        return math.ceil(low / s - 1e-9), math.floor(high / s + 1e-9)

    @property
    def forward_shift(self) -> int:
        """Bits the forward pass rounds off the weights."""
        return self.weight_bits - self.forward_bits

    @property
    def forward_weight_bound(self) -> int:
        """Largest |rounded weight| of the forward pass."""
        lo, hi = self.weight_bounds
        return max(abs(_shift_round(lo, self.forward_shift)), abs(_shift_round(hi, self.forward_shift)))

    @property
    def score_bound(self) -> int:
        """Largest |integer score| (features and bias times rounded weights)."""
        return (self.n_features + 1) * self.x_max * self.forward_weight_bound

    @property
    def score_shift(self) -> int:
        """Bits of the score the rounding before the prediction lookup removes."""
        return max(0, integer_bit_width(-self.score_bound, self.score_bound) - self.score_bits)

    @property
    def score_unit(self) -> float:
        """Float score of one integer score unit."""
        return self.weight_scale * 2**self.forward_shift / self.x_max

    @property
    def error_max(self) -> int:
        """Classification: levels of the probability (the error lies in [-E, E])."""
        return 2 ** (self.error_bits - 1) - 1

    @property
    def target_max(self) -> int:
        """Regression: largest |target code|; the prediction code lies in the same range."""
        return 2 ** (self.error_bits - 1) - 1

    @property
    def error_bound(self) -> int:
        """Largest |error code| (prediction code minus target code)."""
        return self.error_max if self.task == "classification" else 2 * self.target_max

    @property
    def error_unit(self) -> float:
        """Float error (σ(score) − y, or ŷ − y standardized) of one error unit."""
        return 1 / self.error_max if self.task == "classification" else self.target_step

    @property
    def gradient_bound(self) -> int:
        """Largest |gradient sum| of one weight over a batch."""
        return self.batch_size * self.x_max * self.error_bound

    @property
    def update_shift(self) -> int:
        """Δweight = round(gradient sum / 2**update_shift) (the learning rate as a shift)."""
        per_unit = self.learning_rate * self.error_unit / (self.batch_size * self.x_max * self.weight_scale)
        return max(0, round(-math.log2(per_unit)))

    @property
    def effective_learning_rate(self) -> float:
        """The float step size the integers implement (``learning_rate`` rounded)."""
        return 2.0**-self.update_shift * self.batch_size * self.x_max * self.weight_scale / self.error_unit

    @property
    def dither_bounds(self) -> tuple[int, int]:
        """The clear dither added before the update rounding: uniform in [low, high]."""
        k = self.update_shift
        return (0, 0) if k == 0 else (-(2 ** (k - 1)), 2 ** (k - 1) - 1)

    @property
    def weight_shape(self) -> tuple[int, int]:
        """Weights then bias, one column per output."""
        return self.n_features + 1, self.n_outputs

    # -- client-side encodings (in the clear) --------------------------------------------------
    def encode_features(self, X: np.ndarray) -> np.ndarray:
        """Float rows → feature codes; a ValueError for values outside the coded range."""
        X = np.asarray(X, dtype=np.float64)
        codes = np.rint(self.x_max * (X - np.asarray(self.center)) / np.asarray(self.half_range))
        outside = np.abs(codes) > self.x_max
        if outside.any():
            features = np.flatnonzero(outside.any(axis=0))
            low = np.asarray(self.center) - np.asarray(self.half_range)
            high = np.asarray(self.center) + np.asarray(self.half_range)
            details = "; ".join(f"feature {j}: [{low[j]:.4g}, {high[j]:.4g}]" for j in features[:5])
            raise ValueError(
                f"{int(outside.sum())} feature value(s) lie outside the range the encrypted training was set up "
                f"on ({details}). The training's feature range is fixed by the first fit (input_range): fit again "
                "with input_range covering these values (per-feature bounds), or leave them out."
            )
        return codes.astype(np.int64)

    def encode_targets(self, y: np.ndarray) -> np.ndarray:
        """Classification: 0/1 indicators as they are; regression: standardized targets →
        codes (clipped to ±target_max)."""
        if self.task == "classification":
            return np.asarray(y, dtype=np.int64)
        codes = np.rint(np.asarray(y, dtype=np.float64) / self.target_step)
        return np.clip(codes, -self.target_max, self.target_max).astype(np.int64)

    def encode_weights(self, weights: np.ndarray) -> np.ndarray:
        """Float weights (rows: features then bias) → the integer grid; ValueError outside it."""
        weights = np.asarray(weights, dtype=np.float64).reshape(self.weight_shape)
        low, high = self.parameters_range
        if not np.all(np.isfinite(weights)) or weights.min() < low - 1e-12 or weights.max() > high + 1e-12:
            raise ValueError(
                f"initial weights must lie in parameters_range {self.parameters_range}, got "
                f"[{np.nanmin(weights):.4g}, {np.nanmax(weights):.4g}]"
            )
        lo, hi = self.weight_bounds
        return np.clip(np.rint(weights / self.weight_scale), lo, hi).astype(np.int64)

    def decode_weights(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer weights → (coef of shape (n_outputs, n_features), intercept (n_outputs,))
        in the original feature space."""
        w = np.asarray(v, dtype=np.float64).reshape(self.weight_shape) * self.weight_scale
        half, center = np.asarray(self.half_range)[:, None], np.asarray(self.center)[:, None]
        coef = w[:-1] / half
        intercept = w[-1] - np.sum(coef * center, axis=0)
        return coef.T, intercept

    def draw_dither(self, rng: np.random.Generator) -> np.ndarray:
        """One step's dither (clear, uniform in :attr:`dither_bounds`, one per weight)."""
        low, high = self.dither_bounds
        return rng.integers(low, high + 1, size=self.weight_shape, dtype=np.int64)

    # -- lookups -------------------------------------------------------------------------------
    def predict_table(self, t: Any) -> Any:
        """Prediction code of a rounded score ``t`` (a multiple of 2**score_shift)."""
        score = np.asarray(t, dtype=np.float64) * self.score_unit
        if self.task == "classification":
            return np.rint(self.error_max * expit(score)).astype(np.int64)
        return np.clip(np.rint(score / self.target_step), -self.target_max, self.target_max).astype(np.int64)

    # -- the step ---------------------------------------------------------------------------------
    def step(self, x: Any, y: Any, v: Any, u: Any, fhe: Any = None) -> Any:
        """New integer weights after one SGD step on a batch.

        Parameters
        ----------
        x : (batch_size, n_features) feature codes; y : (batch_size, n_outputs) target codes;
        v : (n_features + 1, n_outputs) weights; u : same shape, the dither.
        fhe : the ``concrete.fhe`` module when tracing, None for numpy.
        """
        B, d, K = self.batch_size, self.n_features, self.n_outputs
        lo, hi = self.weight_bounds
        kf, kz, kg = self.forward_shift, self.score_shift, self.update_shift

        def lookup(fn: Any, t: Any) -> Any:
            return fn(t) if fhe is None else fhe.univariate(fn)(t)

        def round_bits(t: Any, k: int, low: int, high: int) -> Any:
            # the hint covers the rounded extremes, so the rounding cannot overflow: no
            # protection bit (it would widen the value and every lookup reading it)
            if k <= 0:
                return t
            if fhe is None:
                return ((t + (1 << (k - 1))) >> k) << k
            t = hint(t, low, _shift_round(high, k) << k)
            return fhe.round_bit_pattern(t, lsbs_to_remove=k, overflow_protection=False)

        def hint(t: Any, low: int, high: int) -> Any:
            return t if fhe is None else fhe.hint(t, bit_width=integer_bit_width(low, high))

        def product(a: Any, b: Any, bound: int) -> Any:
            # ⌊(a+b)²/4⌋ − ⌊(a−b)²/4⌋ = a·b for integers (a+b and a−b share their parity)
            square = lambda t: (t * t) >> 2  # noqa: E731
            return hint(lookup(square, a + b) - lookup(square, a - b), -bound, bound)

        def section(name: str) -> Any:  # tags the circuit's statistics per stage
            return contextlib.nullcontext() if fhe is None else fhe.tag(name)

        X = self.x_max
        wf = self.forward_weight_bound
        with section("forward"):
            vr = lookup(lambda t: t >> kf, round_bits(v, kf, lo, hi)) if kf else v
            terms = product(x.reshape((B, d, 1)), vr[:-1].reshape((1, d, K)), X * wf)
            z = hint(np.sum(terms, axis=1) + X * vr[-1:], -self.score_bound, self.score_bound)
        with section("prediction"):
            p = lookup(lambda t: self.predict_table(t), round_bits(z, kz, -self.score_bound, self.score_bound))
            target = self.error_max * y if self.task == "classification" else y
            e = hint(p - target, -self.error_bound, self.error_bound)
        with section("gradient"):
            grad_terms = product(x.reshape((B, d, 1)), e.reshape((B, 1, K)), X * self.error_bound)
            g_w = np.sum(grad_terms, axis=0)
            g_b = X * np.sum(e, axis=0, keepdims=True)
            g = hint(np.concatenate((g_w, g_b), axis=0), -self.gradient_bound, self.gradient_bound)
        with section("update"):
            if kg:
                low, high = self.dither_bounds
                bound = self.gradient_bound
                dv = lookup(lambda t: t >> kg, round_bits(g + u, kg, low - bound, high + bound))
            else:
                dv = g
        with section("clip"):
            return lookup(lambda t: np.clip(t, lo, hi), v - dv)

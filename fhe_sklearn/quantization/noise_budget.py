"""A noise budget for circuits without lookups: exactness traded for smaller ciphertexts.

A circuit of leveled operations only (a linear layer whose accumulator leaves the circuit, as
in a hybrid model) has no bootstrap to refresh its noise: concrete sizes the keys and
ciphertexts so that the output decrypts to the exact integer with probability ``1 - p_error``.
The integer already carries the error of quantizing the inputs and weights (hundreds of units
in the last place for a 768-input layer at 8 bits); a Gaussian decryption error a small fraction
of that costs nothing measurable in accuracy, and the optimizer spends the freedom on a smaller
LWE dimension (measured, 768x768 at 8 bits: complexity and output bytes -20 %).

For a leveled output, ``p_error`` is ``P(|N(0, sigma)| >= 1/2)``: the probability that the
Gaussian error rounds to a non-zero integer, ``erfc(1 / (2 * sigma * sqrt(2)))``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import special

# beyond 8 standard deviations a Gaussian never reaches (probability 1e-15): the noise is
# kept that far from the ends of the accumulator's integer range, so it never wraps around
OVERFLOW_SIGMAS = 8
# concrete's probability argument must stay below 1; past this the savings flatten
MAX_P_ERROR = 0.99
# below this the optimizer picks the exact parameters anyway: not worth a noisy output
MIN_P_ERROR = 1e-3


def p_error_of_sigma(sigma: float) -> float:
    """The probability that a Gaussian error of standard deviation ``sigma`` (integers) makes
    a decrypted integer wrong."""
    return float(special.erfc(0.5 / (sigma * np.sqrt(2)))) if sigma > 0 else 0.0


def leveled_p_error(module: Any, X: Any, reference: Any, fraction: float) -> float | None:
    """The ``p_error`` that gives a lookup-free module an FHE noise of ``fraction`` of its
    quantization error.

    Parameters
    ----------
    module : QuantizedModule
        Calibrated, one output, no table lookup.
    X : array-like
        Calibration inputs.
    reference : array-like
        The float model's outputs on ``X``.
    fraction : float
        The noise's standard deviation, as a fraction of the smallest per-output rms error of
        ``module.forward(X)`` against ``reference`` (each in its own unit in the last place).

    Returns
    -------
    float or None
        The per-output ``p_error`` (at most ``MAX_P_ERROR``), or None when the budget is too
        small to matter (then compile exact).
    """
    if any(op.is_univariate for op in module.ops):
        raise ValueError("a noise budget applies to circuits without table lookups only")
    if len(module.output_specs) != 1:
        raise ValueError("a noise budget needs a module of one output")
    spec = module.output_specs[0]
    y = np.asarray(module.forward(X, fhe="disable"), dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64).reshape(y.shape)
    error_lsb = np.sqrt(((y - reference) ** 2).mean(axis=0)) / np.abs(np.broadcast_to(spec.scale, y.shape[1:]))
    sigma = fraction * float(error_lsb.min())
    lo, hi = int(np.min(spec.lo)), int(np.max(spec.hi))
    width = spec.bit_width
    low_end, high_end = (-(2 ** (width - 1)), 2 ** (width - 1) - 1) if lo < 0 else (0, 2**width - 1)
    sigma = min(sigma, min(high_end - hi, lo - low_end) / OVERFLOW_SIGMAS)
    p_error = p_error_of_sigma(sigma)
    return min(p_error, MAX_P_ERROR) if p_error >= MIN_P_ERROR else None


__all__ = ["MAX_P_ERROR", "leveled_p_error", "p_error_of_sigma"]

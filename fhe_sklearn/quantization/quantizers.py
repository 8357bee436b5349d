"""Uniform affine quantization: options, statistics, quantizer and quantized arrays."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_BIT_WIDTH = 16
#: widest integer a leveled-only value (an accumulator no table lookup reads) may take; concrete
#: compiles encrypted x clear products up to this width without bootstrapping
MAX_LEVELED_BIT_WIDTH = 32


def check_n_bits(n_bits: Any, what: str = "n_bits") -> int:
    """Validate a bit-width and return it as an int.

    Raises
    ------
    ValueError
        If ``n_bits`` is not an integer in [1, 16].
    """
    if isinstance(n_bits, bool) or not isinstance(n_bits, (int, np.integer)):
        raise ValueError(f"{what} must be an integer in [1, {MAX_BIT_WIDTH}], got {n_bits!r}")
    if not 1 <= n_bits <= MAX_BIT_WIDTH:
        raise ValueError(f"{what}={n_bits} is out of range: FHE integers are limited to 1..{MAX_BIT_WIDTH} bits")
    return int(n_bits)


def check_finite(values: np.ndarray, what: str = "input") -> None:
    """Raise a clear error when ``values`` holds NaN or infinity."""
    values = np.asarray(values)
    if values.dtype.kind in "fc" and not np.all(np.isfinite(values)):
        n_bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        raise ValueError(f"{what} contains {n_bad} NaN or infinite value(s); FHE needs finite data")


def as_integers(values: Any, what: str) -> np.ndarray:
    """``values`` as int64, refusing non-integral, non-finite or non-numeric ones (no silent
    truncation of 0.5 to 0)."""
    array = np.asarray(values)
    if array.dtype.kind == "O":  # python ints from exact interval arithmetic
        try:
            return np.asarray(values, dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"{what} must be integers within int64, got {values!r}") from err
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be integers, got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array) & (array == np.rint(array))):
        raise ValueError(f"{what} must be integers, got {values!r}")
    if array.dtype.kind in "uf" and array.size and (array.max() > 2**63 - 1 or array.min() < -(2**63)):
        raise ValueError(f"{what} must be integers within int64")
    return array.astype(np.int64)


def check_scale(scale: Any, what: str = "quantization scale") -> np.ndarray:
    """``scale`` as float64, refusing zero, negative, NaN or infinite values."""
    array = np.asarray(scale)
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if np.any(array <= 0) or not np.all(np.isfinite(array)):
        raise ValueError(f"{what} must be positive and finite, got {array}")
    return array


def integer_bit_width(lo: Any, hi: Any) -> int:
    """Bits needed to store every integer in [lo, hi] (a sign bit included when lo < 0)."""
    lo = int(np.min(lo))
    hi = int(np.max(hi))
    if lo < 0:
        # two's complement: -2**(b-1) <= lo and hi <= 2**(b-1) - 1
        return max(int(-lo - 1).bit_length(), int(hi).bit_length()) + 1
    return max(int(hi).bit_length(), 1)


def _is_tracer(values: Any) -> bool:
    """Whether ``values`` is a concrete tracer (a value of a circuit being compiled)."""
    from concrete import fhe

    return isinstance(values, fhe.tracing.Tracer)


@dataclass
class QuantizationOptions:
    """How to quantize: bit-width, signedness, symmetry and scale constraints.

    Parameters
    ----------
    n_bits : int
        Bit-width of the quantized integers, 1..16.
    is_signed : bool
        Signed integers (range [-2^(n-1), 2^(n-1)-1]) instead of [0, 2^n-1].
    is_symmetric : bool
        Zero point fixed to 0 and scale from max(|alpha|, |beta|).
    is_qat : bool
        The values come from quantization-aware training and already lie on the grid.
    power_of_two_scale : bool
        Round the scale up to a power of two, so rescaling is a shift.
    """

    n_bits: int
    is_signed: bool = False
    is_symmetric: bool = False
    is_qat: bool = False
    power_of_two_scale: bool = False

    def __post_init__(self) -> None:
        self.n_bits = check_n_bits(self.n_bits)
        for flag in ("is_signed", "is_symmetric", "is_qat", "power_of_two_scale"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise ValueError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
            setattr(self, flag, bool(getattr(self, flag)))
        if self.is_symmetric and not self.is_signed:
            raise ValueError("a symmetric quantizer must be signed (is_signed=True)")

    @property
    def qmin(self) -> int:
        """Smallest integer of the grid."""
        if not self.is_signed:
            return 0
        if self.is_symmetric:
            # narrow range keeps the grid symmetric around 0
            return -(2 ** (self.n_bits - 1) - 1) if self.n_bits > 1 else -1
        return -(2 ** (self.n_bits - 1))

    @property
    def qmax(self) -> int:
        """Largest integer of the grid."""
        if self.is_signed:
            return 2 ** (self.n_bits - 1) - 1 if self.n_bits > 1 else 0
        return 2**self.n_bits - 1

    @property
    def offset(self) -> int:
        """What maps the signed grid onto unsigned integers: ``2^(n-1)`` if signed, else 0
        (``q + offset`` lies in ``[0, 2^n - 1]``), as Concrete ML defines it."""
        return 2 ** (self.n_bits - 1) if self.is_signed else 0


@dataclass
class MinMaxQuantizationStats:
    """Range [rmin, rmax] of the float values, over the whole array or per column.

    Parameters
    ----------
    rmin, rmax : float or ndarray
        Minimum and maximum (arrays when computed per column).
    """

    rmin: Any = None
    rmax: Any = None

    def compute_quantization_stats(self, values: np.ndarray, axis: int | None = None) -> MinMaxQuantizationStats:
        """Set ``rmin``/``rmax`` from calibration ``values`` (per column along ``axis``).

        Parameters
        ----------
        values : array-like of finite floats
        axis : int, optional
            None: one range for the whole array; 0: one per column.

        Returns
        -------
        self
        """
        values = np.asarray(values, dtype=np.float64)
        check_finite(values, "calibration data")
        if values.size == 0:
            raise ValueError("cannot compute quantization statistics of an empty array")
        self.rmin = np.min(values, axis=axis)
        self.rmax = np.max(values, axis=axis)
        return self


@dataclass
class UniformQuantizationParameters:
    """Scale, zero point and offset of a uniform quantizer (Concrete ML's parameter set).

    Parameters
    ----------
    scale : float or ndarray, optional
    zero_point : int or ndarray, optional
    offset : int, optional
        See :attr:`QuantizationOptions.offset`; derived from the options when None.

    Examples
    --------
    >>> options = QuantizationOptions(4, is_signed=True)
    >>> stats = MinMaxQuantizationStats(rmin=-1.0, rmax=2.0)
    >>> params = UniformQuantizationParameters().compute_quantization_parameters(options, stats)
    >>> float(params.scale), int(params.zero_point), params.offset
    (0.2, -3, 8)
    """

    scale: Any = None
    zero_point: Any = None
    offset: int | None = None

    def compute_quantization_parameters(
        self, options: QuantizationOptions, stats: MinMaxQuantizationStats
    ) -> UniformQuantizationParameters:
        """Set scale, zero point and offset that map ``stats``' range onto ``options``' grid.

        Returns
        -------
        self
        """
        self.scale, self.zero_point = UniformQuantizer.compute_quantization_parameters(options, stats)
        self.offset = options.offset
        return self


class _QuantizerIntrospection:
    """Read-only views every quantizer shares (Concrete ML's attribute names)."""

    options: QuantizationOptions
    scale: Any
    zero_point: Any

    @property
    def n_bits(self) -> int:
        """Bit-width of the integers."""
        return self.options.n_bits

    @property
    def is_signed(self) -> bool:
        """Whether the integers may be negative."""
        return self.options.is_signed

    @property
    def is_symmetric(self) -> bool:
        """Whether the zero point is fixed to 0 (grid symmetric around 0)."""
        return self.options.is_symmetric

    @property
    def is_qat(self) -> bool:
        """Whether the values come from quantization-aware training."""
        return self.options.is_qat

    @property
    def offset(self) -> int:
        """``2^(n-1)`` for signed integers, else 0 (see :attr:`QuantizationOptions.offset`)."""
        return self.options.offset

    @property
    def quant_options(self) -> QuantizationOptions:
        """A copy of the quantization options."""
        return copy.copy(self.options)

    @property
    def quant_stats(self) -> MinMaxQuantizationStats | None:
        """A copy of the calibration statistics (None when built from explicit parameters)."""
        stats = getattr(self, "stats", None)
        return None if stats is None else copy.deepcopy(stats)

    @property
    def quant_params(self) -> UniformQuantizationParameters:
        """A copy of scale, zero point and offset."""
        return UniformQuantizationParameters(np.copy(self.scale), np.copy(self.zero_point), self.offset)


class UniformQuantizer(_QuantizerIntrospection):
    """Affine map between floats and n-bit integers: q = clip(round(x / S) + Z).

    ``scale`` and ``zero_point`` may be scalars or arrays (for example one per feature);
    they broadcast against the last axes of the values.

    Parameters
    ----------
    options : QuantizationOptions
        Bit-width and variant.
    stats : MinMaxQuantizationStats, optional
        Float range used to compute scale and zero point.
    params : UniformQuantizationParameters, optional
        Fixed scale and zero point (take precedence over ``stats``), as in Concrete ML.
    scale, zero_point : float or ndarray, optional
        Fixed quantization parameters, the same as ``params`` (give one or the other).

    Attributes
    ----------
    n_bits, is_signed, is_symmetric, is_qat, offset :
        From ``options``; ``quant_options``, ``quant_stats``, ``quant_params`` are copies of
        the three parameter sets.

    Examples
    --------
    >>> options = QuantizationOptions(n_bits=3)
    >>> stats = MinMaxQuantizationStats().compute_quantization_stats(np.array([0.0, 0.7]))
    >>> quantizer = UniformQuantizer(options, stats)
    >>> quantizer.n_bits, float(quantizer.scale), quantizer.quant(np.array([0.35])).tolist()
    (3, 0.09999999999999999, [4])
    >>> UniformQuantizer(options, params=quantizer.quant_params).dequant(np.array([7])).tolist()
    [0.7]
    """

    def __init__(
        self,
        options: QuantizationOptions,
        stats: MinMaxQuantizationStats | None = None,
        params: UniformQuantizationParameters | None = None,
        scale: Any = None,
        zero_point: Any = None,
    ) -> None:
        if not isinstance(options, QuantizationOptions):
            raise TypeError(f"options must be a QuantizationOptions, got {type(options).__name__}")
        if params is not None:
            if not isinstance(params, UniformQuantizationParameters):
                raise TypeError(
                    f"params must be a UniformQuantizationParameters, got {type(params).__name__} "
                    "(pass a scale as scale=...)"
                )
            if scale is not None or zero_point is not None:
                raise ValueError("give the quantization parameters as params or as scale/zero_point, not both")
            if params.offset is not None and params.offset != options.offset:
                raise ValueError(f"params.offset={params.offset} does not match the options' offset {options.offset}")
            scale, zero_point = params.scale, params.zero_point
        self.options = options
        self.stats = stats
        if stats is not None and not isinstance(stats, MinMaxQuantizationStats):
            raise TypeError(f"stats must be MinMaxQuantizationStats, got {type(stats).__name__}")
        if scale is not None:
            self.scale = check_scale(scale)
            self.zero_point = as_integers(0 if zero_point is None else zero_point, "quantization zero point")
        elif stats is not None:
            self.scale, self.zero_point = self.compute_quantization_parameters(options, stats)
            self.scale = check_scale(self.scale)
        else:
            raise ValueError("UniformQuantizer needs stats, params or an explicit scale")

    @staticmethod
    def compute_quantization_parameters(
        options: QuantizationOptions, stats: MinMaxQuantizationStats
    ) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point that map [rmin, rmax] onto the integer range.

        Parameters
        ----------
        options : QuantizationOptions
        stats : MinMaxQuantizationStats

        Returns
        -------
        scale : ndarray of float
        zero_point : ndarray of int
        """
        rmin = np.asarray(stats.rmin, dtype=np.float64)
        rmax = np.asarray(stats.rmax, dtype=np.float64)
        if options.is_symmetric:
            bound = np.maximum(np.abs(rmin), np.abs(rmax))
            scale = np.where(bound > 0, bound / max(options.qmax, 1), 1.0)
        else:
            # a constant array gets a range that includes 0, so it survives exactly
            constant = rmax - rmin <= 0
            rmin = np.where(constant, np.minimum(rmin, 0.0), rmin)
            span = np.where(constant, np.maximum(rmax, 0.0), rmax) - rmin
            scale = np.where(span > 0, span / (2**options.n_bits - 1), 1.0)
        # a span that underflows (subnormal) cannot be divided by: treat it as constant
        scale = np.where(scale >= np.finfo(np.float64).tiny, scale, 1.0)
        if options.power_of_two_scale:
            scale = np.power(2.0, np.ceil(np.log2(scale)))
        if options.is_symmetric:
            return scale, np.zeros(scale.shape, dtype=np.int64)
        return scale, np.rint(-rmin / scale).astype(np.int64) + options.qmin

    def quant(self, values: np.ndarray) -> np.ndarray:
        """Quantize floats to clipped integers (int64)."""
        values = np.asarray(values, dtype=np.float64)
        check_finite(values, "values to quantize")
        return self.quant_traceable(values)

    def quant_traceable(self, values: Any) -> Any:
        """Quantize without input checks, so it also runs on concrete tracers (inside a TLU)."""
        q = np.rint(values / self.scale) + self.zero_point
        return np.clip(q, self.options.qmin, self.options.qmax).astype(np.int64)

    def dequant(self, qvalues: np.ndarray) -> np.ndarray:
        """Map integers back to floats: S * (q - Z)."""
        return self.scale * (np.asarray(qvalues, dtype=np.float64) - self.zero_point)

    def to_dict(self) -> dict:
        """Options, scale and zero point as JSON-ready values (see :meth:`from_dict`)."""
        return {
            "options": vars(self.options).copy(),
            "scale": np.asarray(self.scale).tolist(),
            "zero_point": np.asarray(self.zero_point).tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> UniformQuantizer:
        """The quantizer :meth:`to_dict` describes."""
        return cls(QuantizationOptions(**data["options"]), scale=data["scale"], zero_point=data["zero_point"])


class QuantizedArray:
    """Float values together with their n-bit integer representation.

    Parameters
    ----------
    n_bits : int
        Bit-width, 1..16.
    values : array-like
        Float values (or integers when ``value_is_float`` is False).
    is_signed, is_symmetric, is_qat, power_of_two_scale : bool
        See :class:`QuantizationOptions`.
    value_is_float : bool
        If False, ``values`` are already quantized integers and ``scale`` (or ``params``)
        must be given.
    scale, zero_point : optional
        Fixed quantization parameters instead of calibrating on ``values``.
    per_axis : int, optional
        Compute one scale and zero point per slice along the other axes (0: one per column).
    options, stats, params : optional
        Concrete ML's parameter sets (:class:`QuantizationOptions`,
        :class:`MinMaxQuantizationStats`, :class:`UniformQuantizationParameters`), e.g. another
        quantizer's ``quant_options``/``quant_stats``/``quant_params``. ``options`` replaces
        the ``is_*`` flags; ``params`` the scale and zero point; ``stats`` the calibration on
        ``values``.

    Attributes
    ----------
    quantizer : UniformQuantizer
    n_bits, is_signed, is_symmetric, is_qat, scale, zero_point, offset :
        The quantizer's.

    Examples
    --------
    >>> import numpy as np
    >>> qa = QuantizedArray(3, np.array([-1.0, 0.0, 1.0]))
    >>> qa.qvalues.tolist(), float(qa.quantizer.scale)
    ([0, 4, 7], 0.2857142857142857)
    >>> QuantizedArray(3, [0, 7], value_is_float=False, params=qa.quantizer.quant_params).dequant().tolist()
    [-1.1428571428571428, 0.8571428571428571]
    """

    def __init__(
        self,
        n_bits: int,
        values: Any,
        is_signed: bool = False,
        is_symmetric: bool = False,
        value_is_float: bool = True,
        scale: Any = None,
        zero_point: Any = None,
        is_qat: bool = False,
        power_of_two_scale: bool = False,
        per_axis: int | None = None,
        options: QuantizationOptions | None = None,
        stats: MinMaxQuantizationStats | None = None,
        params: UniformQuantizationParameters | None = None,
    ) -> None:
        if options is None:
            options = QuantizationOptions(n_bits, is_signed, is_symmetric, is_qat, power_of_two_scale)
        else:
            flags = {"is_signed": is_signed, "is_symmetric": is_symmetric, "is_qat": is_qat}
            flags["power_of_two_scale"] = power_of_two_scale
            clashing = [k for k, v in flags.items() if v and v != getattr(options, k)]
            if check_n_bits(n_bits) != options.n_bits or clashing:
                raise ValueError(
                    f"n_bits={n_bits} and {clashing or 'the flags'} contradict options={options}: give the options once"
                )
        traced = _is_tracer(values)  # inside a circuit (a custom op's q_impl): no statistics
        values = values if traced else np.asarray(values)
        if scale is None and params is None and stats is None:
            if not value_is_float:
                raise ValueError("integer values need an explicit scale (or params) to be dequantized")
            stats = MinMaxQuantizationStats().compute_quantization_stats(values, axis=per_axis)
        self.quantizer = UniformQuantizer(options, stats, params, scale=scale, zero_point=zero_point)
        if value_is_float:
            self.update_values(values)
        else:
            self.update_quantized_values(values)

    @property
    def n_bits(self) -> int:
        """Bit-width of the integers."""
        return self.quantizer.n_bits

    @property
    def is_signed(self) -> bool:
        """Whether the integers may be negative."""
        return self.quantizer.is_signed

    @property
    def is_symmetric(self) -> bool:
        """Whether the zero point is fixed to 0."""
        return self.quantizer.is_symmetric

    @property
    def is_qat(self) -> bool:
        """Whether the values come from quantization-aware training."""
        return self.quantizer.is_qat

    @property
    def scale(self) -> Any:
        """The quantizer's scale."""
        return self.quantizer.scale

    @property
    def zero_point(self) -> Any:
        """The quantizer's zero point."""
        return self.quantizer.zero_point

    @property
    def offset(self) -> int:
        """The quantizer's offset (``2^(n-1)`` if signed, else 0)."""
        return self.quantizer.offset

    def update_values(self, values: Any) -> np.ndarray:
        """Set new float values and re-quantize them with the same parameters."""
        if _is_tracer(values):
            self.values = values
            self.qvalues = self.quantizer.quant_traceable(values)
            return self.qvalues
        self.values = np.asarray(values, dtype=np.float64)
        self.qvalues = self.quant()
        return self.qvalues

    def update_quantized_values(self, qvalues: Any) -> np.ndarray:
        """Set new integer values; ``values`` becomes their dequantization."""
        if _is_tracer(qvalues):
            self.qvalues = qvalues
            self.values = (qvalues - self.quantizer.zero_point) * self.quantizer.scale
            return self.values
        self.qvalues = np.asarray(qvalues, dtype=np.int64)
        self.values = self.dequant()
        return self.values

    def quant(self) -> np.ndarray:
        """Quantize ``values`` with the array's quantizer (returns the integers)."""
        return self.quantizer.quant(self.values)

    def dequant(self) -> np.ndarray:
        """Dequantize ``qvalues`` with the array's quantizer (returns the floats)."""
        return self.quantizer.dequant(self.qvalues)

    def __repr__(self) -> str:
        return (
            f"QuantizedArray(n_bits={self.n_bits}, shape={self.qvalues.shape}, "
            f"scale={self.quantizer.scale}, zero_point={self.quantizer.zero_point})"
        )


def extreme_rows(quantizer: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Integer rows (k, *shape) reaching every column's lowest and highest value: a
    quantizer's own ``extreme_rows`` (an encoding whose columns depend on each other), else
    the rows of ``qmin`` and of ``column_max`` (tree ranks) or ``qmax``."""
    own = getattr(quantizer, "extreme_rows", None)
    if own is not None:
        return np.asarray(own(), dtype=np.int64)
    high = np.broadcast_to(getattr(quantizer, "column_max", quantizer.options.qmax), shape)
    return np.stack([np.full(shape, quantizer.options.qmin), high]).astype(np.int64)


def random_rows(quantizer: Any, shape: tuple[int, ...], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random integer rows a client may send (see :func:`extreme_rows`)."""
    own = getattr(quantizer, "random_rows", None)
    if own is not None:
        return np.asarray(own(n, rng), dtype=np.int64)
    high = np.broadcast_to(getattr(quantizer, "column_max", quantizer.options.qmax), shape)
    return rng.integers(quantizer.options.qmin, high, size=(n, *shape), endpoint=True)

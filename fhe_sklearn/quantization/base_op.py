"""Base class of quantized operators and the integer tensor description they exchange."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from concrete import fhe

from .custom_op_api import ConcreteMLOpAPI
from .quantizers import MAX_BIT_WIDTH, as_integers, check_scale, integer_bit_width
from .registry import register_custom_onnx_op


def hint_range(value: Any, lo: Any, hi: Any) -> Any:
    """Inside a concrete trace, fix ``value``'s width to hold [lo, hi]: intermediate results
    then get their worst-case width, not the one seen on the inputset. No-op on arrays."""
    if isinstance(value, fhe.tracing.Tracer):
        return fhe.hint(value, bit_width=integer_bit_width(lo, hi))
    return value


@dataclass
class TensorSpec:
    """How an integer tensor of the circuit maps to floats, and the integer range it can take.

    ``scale`` and ``zero_point`` broadcast against one sample (e.g. one per column);
    ``lo``/``hi`` are worst-case integer bounds over every input the circuit accepts,
    not just the calibration data, so a value within them can never overflow.

    ``blocks`` > 1: the last axis holds that many equal parts whose de-quantized values add
    up, column by column (the digit planes of a sum too wide for one ciphertext: the client
    adds them in the clear after decryption).
    """

    scale: Any
    zero_point: Any
    lo: Any
    hi: Any
    blocks: int = 1

    def __post_init__(self) -> None:
        self.scale = check_scale(self.scale, "TensorSpec scale")
        self.zero_point = as_integers(self.zero_point, "TensorSpec zero_point")
        self.lo = as_integers(self.lo, "TensorSpec lo")
        self.hi = as_integers(self.hi, "TensorSpec hi")
        if isinstance(self.blocks, bool) or not isinstance(self.blocks, (int, np.integer)) or self.blocks < 1:
            raise ValueError(f"TensorSpec blocks must be a positive integer, got {self.blocks!r}")
        self.blocks = int(self.blocks)
        if self.blocks > 1 and (np.ndim(self.lo) != 1 or np.shape(self.lo)[0] % self.blocks):
            raise ValueError(f"TensorSpec of {self.blocks} blocks needs 1-D bounds of a multiple of that length")
        try:
            ordered = np.all(self.lo <= self.hi)
        except ValueError as err:
            raise ValueError(f"TensorSpec lo and hi have shapes {self.lo.shape} and {self.hi.shape}") from err
        if not ordered:
            raise ValueError("TensorSpec lo must not exceed hi")

    @property
    def bit_width(self) -> int:
        """Bits that hold every integer in ``[lo, hi]`` (sign included)."""
        return integer_bit_width(self.lo, self.hi)

    def dequant(self, q: Any) -> Any:
        """Integers of this tensor → floats: ``(q - zero_point) * scale``, blocks added up."""
        y = (q - self.zero_point) * self.scale
        if self.blocks == 1:
            return y
        y = np.asarray(y)
        return y.reshape(*y.shape[:-1], self.blocks, -1).sum(axis=-2)

    def to_dict(self) -> dict:
        """Scale, zero point and range as JSON-ready lists (and ``blocks`` when > 1)."""
        out = {k: np.asarray(getattr(self, k)).tolist() for k in ("scale", "zero_point", "lo", "hi")}
        return {**out, "blocks": self.blocks} if self.blocks > 1 else out


class QuantizedOp(ConcreteMLOpAPI):
    """An operator of the integer graph.

    Subclasses implement ``float_forward`` (the float reference), ``_calibrate`` (choose the
    quantization of constants and output from the input specs and float calibration data)
    and ``q_impl`` (integers in, integers out; written with numpy so the same code runs on a
    batch in the clear and on concrete tracers). An op is registered under its ``op_type``
    (:func:`~fhe_sklearn.quantization.registry.register_op`) so graph builders create it by
    name.

    Elementwise ops of one encrypted input implement ``univariate_fn`` instead. Those that need
    a table lookup set ``is_univariate``; leveled ones (e.g. adding a constant) set
    ``is_elementwise``. :class:`QuantizedModule` fuses every chain of elementwise ops into one
    table lookup, or into plain leveled arithmetic when no op of the chain needs a lookup.

    ``q_impl`` may be any function concrete can trace (``fhe.multivariate``, comparisons,
    selection networks...): an op the registered set cannot express is one new subclass.

    Concrete ML's custom-op API: a subclass that sets ``_impl_for_op_named = "<ONNX op>"`` is
    the ONNX import's implementation of that op (see :mod:`.custom_ops`; it overrides the
    built-in conversion until :func:`~.registry.unregister_custom_op`). Such a class has no
    ``__init__`` (the import builds it) and either no ``q_impl`` (element-wise: one table
    lookup of its numpy implementation) or ``q_impl(self, *q_inputs, **attrs)`` on
    QuantizedArrays, with the helpers of :class:`~.custom_op_api.ConcreteMLOpAPI`.

    Parameters
    ----------
    name : str
        Unique name in the module; used in error messages.
    inputs : list of str
        Names of the producers of this op's encrypted inputs ("input" is the module input).
    """

    #: name in the op registry (ONNX-style: "Gemm", "Relu", "LessOrEqual", ...)
    op_type: ClassVar[str] = ""
    #: elementwise and needs a table lookup
    is_univariate = False
    #: elementwise without a lookup (fuses into a neighbouring lookup for free)
    is_elementwise = False
    #: which ``n_bits`` of a model this op takes: "op_weights", "op_inputs" or None
    n_bits_role: ClassVar[str | None] = None
    #: what to change when this op's integers outgrow 16 bits (set by the model's lowering)
    overflow_hint = "lower n_bits of its inputs or weights"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "_impl_for_op_named" not in cls.__dict__:
            return
        builtin = [b.__name__ for b in cls.__mro__[1:] if b is not QuantizedOp and b.__dict__.get("op_type")]
        if builtin:
            raise TypeError(
                f"{cls.__name__}: a custom ONNX op derives from QuantizedOp, not from the built-in {builtin[0]}"
            )
        if "__init__" in cls.__dict__:
            raise TypeError(
                f"{cls.__name__}: a custom ONNX op has no __init__ (the ONNX import builds it); "
                "read the node's attributes from self.attrs in q_impl"
            )
        register_custom_onnx_op(cls)

    def __init__(self, name: str, *, inputs: list[str] | None = None) -> None:
        self.name = name
        self.inputs = list(inputs) if inputs is not None else ["input"]
        self.input_specs: list[TensorSpec] | None = None
        self.output_spec: TensorSpec | None = None

    # -- calibration ---------------------------------------------------------------------
    def calibrate(self, input_specs: list[TensorSpec], *float_inputs: np.ndarray) -> np.ndarray:
        """Fix this op's quantization from its inputs' specs and float calibration data.

        Returns the float output on the calibration data, for the next ops.
        """
        self.input_specs = list(input_specs)
        float_output = self.float_forward(*float_inputs)
        self.output_spec = self._calibrate(float_output, *float_inputs)
        self.check_bit_width()
        return float_output

    def check_bit_width(self) -> None:
        """Raise a ValueError naming this op if its output exceeds the 16-bit FHE limit."""
        bits = self.output_spec.bit_width
        if bits > MAX_BIT_WIDTH:
            raise ValueError(
                f"{type(self).__name__} '{self.name}' needs a {bits}-bit integer "
                f"(range [{int(np.min(self.output_spec.lo))}, {int(np.max(self.output_spec.hi))}]), "
                f"over the {MAX_BIT_WIDTH}-bit FHE limit: {self.overflow_hint}"
            )

    # -- computation ---------------------------------------------------------------------
    def float_forward(self, *inputs: np.ndarray) -> np.ndarray:
        """The float operation this op quantizes (used for calibration)."""
        raise NotImplementedError

    def _calibrate(self, float_output: np.ndarray, *float_inputs: np.ndarray) -> TensorSpec:
        raise NotImplementedError

    def q_impl(self, *q_inputs: Any) -> Any:
        """Integer implementation; elementwise ops default to their table function."""
        if self.is_univariate or self.is_elementwise:
            return self.univariate_fn(q_inputs[0])
        raise NotImplementedError

    def univariate_fn(self, q: Any) -> Any:
        """The table of a univariate op: integer input → integer output (one TLU in FHE)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, inputs={self.inputs})"

"""GraphBuilder: the one way every model (linear, trees, networks, imported graphs) becomes a
:class:`~fhe_sklearn.quantization.module.QuantizedModule`.

    builder = GraphBuilder()
    x = builder.input(quantizer)                      # a named, client-quantized input
    h = builder.add("Gemm", x, weight=w, bias=b)      # ops by registered type → value names
    y = builder.add("Relu", h, n_bits=4)
    builder.output(y)
    module = builder.build(X_calibration)             # calibrated, ready to compile
"""

from __future__ import annotations

from typing import Any

from .base_op import QuantizedOp
from .module import QuantizedModule
from .quantizers import UniformQuantizer
from .registry import op_class


class GraphBuilder:
    """Collects named inputs, ops and outputs, then builds a calibrated QuantizedModule."""

    def __init__(self) -> None:
        self._inputs: dict[str, UniformQuantizer] = {}
        self._ops: list[QuantizedOp] = []
        self._outputs: list[str] = []

    def input(self, quantizer: UniformQuantizer, name: str = "input") -> str:
        """Declare a module input, quantized on the client by ``quantizer``; returns its name."""
        self._claim(name)
        self._inputs[name] = quantizer
        return name

    def add(
        self,
        op_type: str | type[QuantizedOp],
        *inputs: str,
        name: str | None = None,
        overflow_hint: str | None = None,
        **params: Any,
    ) -> str:
        """Append an op of the registered ``op_type`` reading the values ``inputs``.

        Parameters
        ----------
        op_type : str or QuantizedOp subclass
            A key of :data:`~fhe_sklearn.quantization.registry.OP_REGISTRY`, or an op class
            not meant for the registry (e.g. one running a user's custom op).
        *inputs : str
            Names of the values it reads (inputs or earlier ops); default: the last value.
        name : str, optional
            Its value name (default ``"<op_type>_<index>"``, lower case).
        overflow_hint : str, optional
            What the user should change if this op's integers outgrow 16 bits.
        **params
            The op class's constructor parameters.

        Returns
        -------
        str
            The name of the op's output value.
        """
        cls = op_type if isinstance(op_type, type) else op_class(op_type)
        name = name or f"{cls.op_type.lower()}_{len(self._ops)}"
        op = cls(name, inputs=list(inputs) or [self.last], **params)
        if overflow_hint is not None:
            op.overflow_hint = overflow_hint
        return self.add_op(op)

    def add_op(self, op: QuantizedOp) -> str:
        """Append an already-constructed op (e.g. of a class not meant for reuse)."""
        self._claim(op.name)
        missing = [n for n in op.inputs if n not in self._inputs and n not in {o.name for o in self._ops}]
        if missing:
            raise ValueError(f"op '{op.name}' reads {missing}, which are not values of the graph yet")
        self._ops.append(op)
        return op.name

    def output(self, *values: str) -> None:
        """Mark ``values`` as module outputs, in order."""
        self._outputs.extend(values)

    @property
    def last(self) -> str:
        """The most recent value (op output, else input)."""
        if self._ops:
            return self._ops[-1].name
        if self._inputs:
            return next(reversed(self._inputs))
        raise ValueError("the graph has no input yet: call input() first")

    def op(self, name: str) -> QuantizedOp:
        """The op producing ``name``."""
        return next(o for o in self._ops if o.name == name)

    def build(
        self, *calibration_data: Any, post_processing: str | None = None, default_global_p_error: float | None = None
    ) -> QuantizedModule:
        """The QuantizedModule, calibrated on float data (one array per input);
        ``post_processing`` and ``default_global_p_error`` as :class:`QuantizedModule`'s."""
        module = QuantizedModule(
            self._inputs,
            self._ops,
            self._outputs or None,
            post_processing=post_processing,
            default_global_p_error=default_global_p_error,
        )
        module.calibrate(*calibration_data)
        return module

    def _claim(self, name: str) -> None:
        if name in self._inputs or any(o.name == name for o in self._ops):
            raise ValueError(f"value name {name!r} is already used in this graph")

"""QuantizedModule: an ordered graph of quantized ops, run in the clear or compiled to FHE."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from typing import Any

import numpy as np
from concrete import fhe

from .base_op import QuantizedOp, TensorSpec
from .compile_options import check_probability, resolve_compile_options
from .execution import forget_circuit, get_backend
from .integer_ops import QuantizedTruncate
from .lattice import LatticeQuantizer
from .quantizers import UniformQuantizer, check_finite, extreme_rows
from .wide_lookup import wide_lookup

#: rows of the calibration set used to trace the circuit; bit-widths come from static
#: worst-case bounds (hints), so more rows would only slow compilation down
MAX_INPUTSET_ROWS = 100
#: what a client may apply to a module's outputs after de-quantizing them
POST_PROCESSING = ("softmax", "log_softmax", "argmax")


def apply_post_processing(y: Any, post_processing: str | None) -> Any:
    """``post_processing`` (one of :data:`POST_PROCESSING`, or None: nothing) on de-quantized
    outputs, over their last axis; on each output of a tuple."""
    if isinstance(y, tuple):
        return tuple(apply_post_processing(v, post_processing) for v in y)
    if post_processing is None:
        return y
    from scipy import special

    functions = {"softmax": special.softmax, "log_softmax": special.log_softmax, "argmax": np.argmax}
    if post_processing not in functions:
        raise ValueError(f"post_processing must be None or one of {list(POST_PROCESSING)}, got {post_processing!r}")
    return functions[post_processing](np.asarray(y, dtype=np.float64), axis=-1)


class FheMode(str, Enum):
    """How a prediction runs: integers in numpy, FHE simulation, or real encryption."""

    DISABLE = "disable"
    SIMULATE = "simulate"
    EXECUTE = "execute"


def validate_fhe_mode(fhe_mode: Any) -> FheMode:
    """The :class:`FheMode` of ``fhe_mode``; a ValueError listing the choices otherwise."""
    try:
        return FheMode(fhe_mode)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in FheMode)
        raise ValueError(f"fhe must be one of {choices}, got {fhe_mode!r}") from None


class QuantizedModule:
    """A quantized model: a graph of :class:`QuantizedOp` over named values.

    Each module input is quantized on the client by its own quantizer; every op then works on
    integers. Every chain of elementwise ops is fused into one table lookup. Modules are
    usually made by :class:`~fhe_sklearn.quantization.graph.GraphBuilder`.

    Parameters
    ----------
    inputs : UniformQuantizer or dict of str to UniformQuantizer
        Quantizer of the single input (named ``"input"``), or one per named input, in order.
    ops : list of QuantizedOp
        In execution order; each op names the values it reads (module inputs or earlier ops).
    outputs : str or list of str, optional
        Values returned by the module, in order (default: the last op).
    post_processing : {"softmax", "log_softmax", "argmax"}, optional
        What the client applies to the de-quantized output(s), outside the circuit (e.g.
        the final Softmax of an imported network); saved with the module. None: nothing.
    default_global_p_error : float, optional
        The error budget :meth:`compile` uses when the caller sets none (saved with the
        module): a model family whose lookups tolerate rare errors sets a looser one. None:
        ``DEFAULT_GLOBAL_P_ERROR``.
    """

    def __init__(
        self,
        inputs: UniformQuantizer | Mapping[str, UniformQuantizer],
        ops: list[QuantizedOp],
        outputs: str | Sequence[str] | None = None,
        post_processing: str | None = None,
        default_global_p_error: float | None = None,
    ) -> None:
        check_probability(default_global_p_error, "default_global_p_error")
        if post_processing is not None and post_processing not in POST_PROCESSING:
            raise ValueError(f"post_processing must be None or one of {list(POST_PROCESSING)}, got {post_processing!r}")
        named = dict(inputs) if isinstance(inputs, Mapping) else {"input": inputs}
        if not named:
            raise ValueError("a QuantizedModule needs at least one input")
        names = [op.name for op in ops]
        if len(set(names)) != len(names) or set(names) & set(named):
            raise ValueError(f"op names must be unique and differ from the inputs {list(named)}: {names}")
        known = set(named)
        for op in ops:
            missing = [n for n in op.inputs if n not in known]
            if missing:
                raise ValueError(f"op '{op.name}' reads {missing} before it is computed")
            known.add(op.name)
        if outputs is None:
            outputs = [names[-1] if names else next(iter(named))]
        outputs = [outputs] if isinstance(outputs, str) else list(outputs)
        unknown = [n for n in outputs if n not in known]
        if unknown or not outputs:
            raise ValueError(f"outputs {unknown or outputs} are not values of the graph")
        self.input_names = list(named)
        self.input_quantizers = list(named.values())
        self.ops = list(ops)
        self.output_names = outputs
        self.post_processing = post_processing
        self.default_global_p_error = default_global_p_error
        self.fhe_circuit: fhe.Circuit | None = None
        #: per-sample shape of each input, fixed by calibration
        self.input_shapes: list[tuple[int, ...]] | None = None
        self.timings: dict[str, float] = {}

    # compiled circuits and timings belong to this process, not to a saved model
    def __getstate__(self) -> dict:
        return {k: v for k, v in vars(self).items() if k not in ("fhe_circuit", "timings")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, fhe_circuit=None, timings={})

    # -- structure -------------------------------------------------------------------------
    @property
    def n_inputs(self) -> int:
        """Number of encrypted inputs of the circuit."""
        return len(self.input_names)

    @property
    def n_outputs(self) -> int:
        """Number of outputs of the circuit."""
        return len(self.output_names)

    @property
    def input_quantizer(self) -> UniformQuantizer:
        """The quantizer of a single-input module."""
        self._require_single("input", self.n_inputs)
        return self.input_quantizers[0]

    @property
    def n_features_in(self) -> int | None:
        """Features of a single 2-D input (None before calibration)."""
        if self.input_shapes is None:
            return None
        self._require_single("input", self.n_inputs)
        return int(np.prod(self.input_shapes[0]))

    @property
    def input_specs(self) -> list[TensorSpec]:
        """Each input as a :class:`TensorSpec` (its quantizer's scale, zero point and range)."""
        return [
            TensorSpec(
                q.scale,
                q.zero_point,
                q.options.qmin,
                q.column_max if isinstance(q, LatticeQuantizer) else q.options.qmax,
            )
            for q in self.input_quantizers
        ]

    @property
    def output_specs(self) -> list[TensorSpec]:
        """How each output's integers map to floats (and their worst-case range)."""
        specs = dict(zip(self.input_names, self.input_specs))
        return [specs[n] if n in specs else self._op(n).output_spec for n in self.output_names]

    @property
    def input_spec(self) -> TensorSpec:
        """The single input's :class:`TensorSpec` (an error for a module of several inputs)."""
        self._require_single("input", self.n_inputs)
        return self.input_specs[0]

    @property
    def output_spec(self) -> TensorSpec:
        """The output spec of a single-output module."""
        self._require_single("output", self.n_outputs)
        return self.output_specs[0]

    def _require_single(self, what: str, count: int) -> None:
        if count != 1:
            raise ValueError(f"this module has {count} {what}s: use the list form ({what}_quantizers / {what}_specs)")

    def _op(self, name: str) -> QuantizedOp:
        return next(op for op in self.ops if op.name == name)

    def _truncated(self, name: str) -> bool:
        """Whether value ``name`` comes out of a bit truncation."""
        return isinstance(next((op for op in self.ops if op.name == name), None), QuantizedTruncate)

    def _select(self, values: list[Any]) -> Any:
        """One value for a single-output (or single-input) module, else the tuple."""
        return values[0] if len(values) == 1 else tuple(values)

    # -- calibration -------------------------------------------------------------------------
    def calibrate(self, *x: Any) -> Any:
        """Quantize every op in order on float calibration data (one array per input);
        returns the float output(s)."""
        xs = self._as_inputs(x, "calibration data")
        for value in xs:
            check_finite(value, "calibration data")
        self.input_shapes = [tuple(v.shape[1:]) for v in xs]
        floats = dict(zip(self.input_names, xs))
        specs = dict(zip(self.input_names, self.input_specs))
        for op in self.ops:
            floats[op.name] = op.calibrate([specs[n] for n in op.inputs], *[floats[n] for n in op.inputs])
            specs[op.name] = op.output_spec
        self.fhe_circuit = None
        return self._select([floats[n] for n in self.output_names])

    def _check_n_inputs(self, values: tuple | list) -> None:
        if len(values) != self.n_inputs:
            raise ValueError(f"this module takes {self.n_inputs} input(s) ({self.input_names}), got {len(values)}")

    def _as_inputs(self, x: tuple, what: str) -> list[np.ndarray]:
        self._check_n_inputs(x)
        arrays = [np.asarray(v, dtype=np.float64) for v in x]
        for name, value in zip(self.input_names, arrays):
            if value.ndim < 2:
                raise ValueError(f"{what} {name!r} must have a batch axis: shape (n_samples, ...), got {value.shape}")
        return arrays

    # -- the integer graph ---------------------------------------------------------------------
    def _fusion_groups(self) -> list[list[QuantizedOp]]:
        """Chains of elementwise ops where each link has a single consumer, in execution order."""
        consumers: dict[str, int] = {}
        for op in self.ops:
            for name in op.inputs:
                consumers[name] = consumers.get(name, 0) + 1
        groups: list[list[QuantizedOp]] = []
        group_of: dict[str, list[QuantizedOp]] = {}
        for op in self.ops:
            producer = group_of.get(op.inputs[0]) if len(op.inputs) == 1 else None
            if (
                _elementwise(op)
                and producer is not None
                and producer[-1].name == op.inputs[0]
                and _elementwise(producer[-1])
                and consumers[op.inputs[0]] == 1
                and op.inputs[0] not in self.output_names
            ):
                producer.append(op)
                group = producer
            else:
                group = [op]
                groups.append(group)
            group_of[op.name] = group
        return groups

    @staticmethod
    def _chain(group: list[QuantizedOp]) -> Callable[[Any], Any]:
        def table(q: Any) -> Any:
            for op in group:
                q = op.univariate_fn(q)
            return q

        return table

    def _run(self, inputs: list[Any], tracing: bool) -> list[Any]:
        values = dict(zip(self.input_names, inputs))
        for group in self._fusion_groups():
            head, tail = group[0], group[-1]
            args = [values[n] for n in head.inputs]
            if any(op.is_univariate for op in group):
                table = self._chain(group)
                if tracing and getattr(head, "lookup_bits", None):
                    width = max(head.lookup_bits, head.input_specs[0].bit_width)
                    args[0] = fhe.hint(args[0], bit_width=width)
                wide = None
                # a wide exact table as narrower lookups (not after a truncation: the lookup
                # then reads only the bits left)
                if tracing and not self._truncated(head.inputs[0]):
                    spec = head.input_specs[0]
                    wide = wide_lookup(args[0], table, int(np.min(spec.lo)), int(np.max(spec.hi)))
                if wide is not None:
                    out = wide
                else:
                    out = fhe.univariate(table)(args[0]) if tracing else table(args[0])
            elif len(group) > 1:
                out = args[0]
                for op in group:  # leveled elementwise ops: no lookup
                    out = op.q_impl(out)
            else:
                out = head.q_impl(*args)
            if tracing:
                # static worst-case width: no input the client can send overflows
                out = fhe.hint(out, bit_width=tail.output_spec.bit_width)
            values[tail.name] = out
        return [values[n] for n in self.output_names]

    # -- public API ------------------------------------------------------------------------------
    def bit_widths(self) -> dict[str, int]:
        """Integer bit-width of every input and op output (worst case over every input the
        circuit accepts, not only the calibration data), by value name, in graph order."""
        self._check_calibrated()
        widths = {name: spec.bit_width for name, spec in zip(self.input_names, self.input_specs)}
        widths.update((op.name, op.output_spec.bit_width) for op in self.ops)
        return widths

    def bitwidth_and_range_report(self, *x: Any) -> dict[str, dict[str, Any]]:
        """Integer range and bit-width of every input and op: the worst case the circuit is
        built for and, given float rows ``x``, what they take on them (see
        :func:`~fhe_sklearn.quantization.report.bitwidth_and_range_report`)."""
        from .report import bitwidth_and_range_report

        return bitwidth_and_range_report(self, *x)

    def circuit_report(self, measure_keys: bool = False) -> dict[str, Any]:
        """PBS (total and by precision), encrypted matmuls, key sizes... of the compiled
        circuit (see :func:`~fhe_sklearn.quantization.report.circuit_report`)."""
        from .report import circuit_report

        return circuit_report(self.fhe_circuit, measure_keys)

    def _check_calibrated(self) -> None:
        if self.input_shapes is None:
            raise RuntimeError("this QuantizedModule is not calibrated: call calibrate(X) first")

    def _check_shape(self, value: np.ndarray, index: int, what: str, quantized: bool = False) -> None:
        shape = self.input_shapes[index]
        # an encoding quantizer (e.g. unary digits) sends several integers per feature
        encoded_shape = getattr(self.input_quantizers[index], "encoded_shape", None)
        if quantized and encoded_shape is not None:
            shape = encoded_shape(shape)
        if value.ndim != 1 + len(shape) or value.shape[1:] != shape:
            expected = ", ".join(["n_samples", *map(str, shape)])
            name = "" if self.n_inputs == 1 else f" {self.input_names[index]!r}"
            raise ValueError(f"expected {what}{name} of shape ({expected}), got {value.shape}")

    def quantize_input(self, *x: Any) -> Any:
        """Float rows → integers, in the clear on the client (a tuple for several inputs)."""
        self._check_calibrated()
        self._check_n_inputs(x)
        xs = [np.asarray(v, dtype=np.float64) for v in x]
        out = []
        for index, (value, quantizer) in enumerate(zip(xs, self.input_quantizers)):
            self._check_shape(value, index, "input")
            check_finite(value, "input")
            out.append(quantizer.quant(value))
        return self._select(out)

    def dequantize_output(self, *y_q: Any) -> Any:
        """Integers out of the circuit → floats, in the clear on the client (a tuple for
        several outputs)."""
        specs = self.output_specs
        if len(y_q) != len(specs):
            raise ValueError(f"this module has {len(specs)} output(s), got {len(y_q)}")
        return self._select(
            [spec.dequant(np.asarray(v, dtype=np.int64)).astype(np.float64) for spec, v in zip(specs, y_q)]
        )

    def _check_quantized_input(self, x_q: Any, index: int) -> np.ndarray:
        x_q = np.asarray(x_q)
        if x_q.dtype.kind not in "iu":
            raise ValueError(f"quantized input must be integers, got dtype {x_q.dtype}: use quantize_input")
        self._check_shape(x_q, index, "quantized input", quantized=True)
        options = self.input_quantizers[index].options
        if x_q.size and (x_q.min() < options.qmin or x_q.max() > options.qmax):
            raise ValueError(
                f"quantized input must lie in [{options.qmin}, {options.qmax}], got [{x_q.min()}, {x_q.max()}]"
            )
        column_max = getattr(self.input_quantizers[index], "column_max", None)
        if column_max is not None and x_q.size and np.any(x_q > column_max):
            bound = np.broadcast_to(column_max, x_q.shape)
            first = np.unravel_index(int(np.argmax(x_q > bound)), x_q.shape)
            where = f"column {first[1]}" if x_q.ndim == 2 else f"element {tuple(int(i) for i in first[1:])}"
            raise ValueError(f"quantized input {where} must lie in [0, {int(bound[first])}], got {int(x_q[first])}")
        return x_q.astype(np.int64)

    def quantized_forward(
        self,
        *x_q: Any,
        fhe: str | FheMode = "disable",
        n_jobs: int | None = 1,
        progress: bool | None = None,
        backend: str | None = None,
    ) -> Any:
        """Run the integer graph on quantized rows (one array per input).

        ``"disable"`` is vectorized over the batch; ``"simulate"`` and ``"execute"`` run one
        row per circuit call (FHE does not batch), ``"execute"`` with real encryption,
        parallel over rows with ``n_jobs`` workers of ``backend``: ``"threads"`` (default),
        ``"processes"`` or ``"dask"`` (the current ``distributed.Client``), see
        :func:`fhe_sklearn.deployment.batch.run_many`. Returns one array per output (a
        tuple for several outputs).
        """
        mode = validate_fhe_mode(fhe)
        runner = get_backend(backend)
        self._check_calibrated()
        self._check_n_inputs(x_q)
        xs = [self._check_quantized_input(v, i) for i, v in enumerate(x_q)]
        n_rows = {len(v) for v in xs}
        if len(n_rows) != 1:
            raise ValueError(f"every input needs the same number of rows, got {sorted(n_rows)}")
        if mode is FheMode.DISABLE:
            return self._select([np.asarray(v, dtype=np.int64) for v in self._run(xs, tracing=False)])
        if self.fhe_circuit is None:
            raise RuntimeError(f"fhe={mode.value!r} needs a compiled circuit: call compile(X) first")
        rows = [tuple(v[i : i + 1] for v in xs) for i in range(n_rows.pop())]
        if mode is FheMode.SIMULATE:
            outs = [self.fhe_circuit.simulate(*r) for r in rows]
        else:
            self.keygen()
            outs = runner.run_rows(self.fhe_circuit, rows, n_jobs, progress)
        return self._select(self._stack_rows(outs))

    def _stack_rows(self, outs: list[Any]) -> list[np.ndarray]:
        """Per-row circuit results → one (n_rows, ...) array per output."""
        if not outs:
            return [np.empty((0,), dtype=np.int64) for _ in self.output_names]
        per_output = zip(*[o if isinstance(o, tuple) else (o,) for o in outs])
        return [np.concatenate([np.asarray(v) for v in values], axis=0).astype(np.int64) for values in per_output]

    def post_process(self, y: Any) -> Any:
        """Apply ``post_processing`` to de-quantized outputs (what a deployed client does)."""
        return apply_post_processing(y, self.post_processing)

    def forward(self, *x: Any, fhe: str | FheMode = "disable", n_jobs: int | None = 1) -> Any:
        """quantize_input → quantized_forward → dequantize_output."""
        x_q = self.quantize_input(*x)
        y_q = self.quantized_forward(*(x_q if self.n_inputs > 1 else (x_q,)), fhe=fhe, n_jobs=n_jobs)
        return self.dequantize_output(*(y_q if self.n_outputs > 1 else (y_q,)))

    def compile(
        self,
        inputset: Any,
        configuration: fhe.Configuration | None = None,
        p_error: float | None = None,
        global_p_error: float | None = None,
        verbose: bool = False,
        show_mlir: bool = False,
    ) -> fhe.Circuit:
        """Compile the integer graph to an FHE circuit, traced on (float) ``inputset``: an
        array, or a tuple of arrays for a module of several inputs.

        Without ``p_error`` or ``global_p_error`` (as arguments or in ``configuration``), the
        whole run may be wrong with probability ``default_global_p_error`` (by default
        ``DEFAULT_GLOBAL_P_ERROR``, 1e-7, so execute and simulate agree with the integer graph
        in practice); setting both is an error. See
        :func:`~fhe_sklearn.quantization.compile_options.resolve_compile_options`. Without
        ``configuration``, keys and inputs are compressed
        (:func:`~fhe_sklearn.quantization.compile_options.default_configuration`).
        """
        arrays = inputset if self.n_inputs > 1 and isinstance(inputset, (tuple, list)) else (inputset,)
        x_q = self.quantize_input(*arrays)
        x_q = list(x_q) if self.n_inputs > 1 else [x_q]
        if len(x_q[0]) == 0:
            raise ValueError("compile needs at least one row in the inputset")
        step = max(1, len(x_q[0]) // MAX_INPUTSET_ROWS)
        samples = [tuple(v[i : i + 1] for v in x_q) for i in range(0, len(x_q[0]), step)]
        # the extremes of every input, so the traced graph sees the whole integer range
        extremes = [extreme_rows(q, v.shape[1:]) for v, q in zip(x_q, self.input_quantizers)]
        for i in range(max(len(e) for e in extremes)):
            samples.append(tuple(e[min(i, len(e) - 1)][None] for e in extremes))
        if self.n_inputs == 1:
            samples = [s[0] for s in samples]

        parameters = [f"x{i}" if self.n_inputs > 1 else "x" for i in range(self.n_inputs)]

        def circuit(**traced: Any) -> Any:  # concrete passes the inputs by parameter name
            return self._select(self._run([traced[n] for n in parameters], tracing=True))

        circuit.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in parameters]
        )
        options = resolve_compile_options(
            configuration, p_error, global_p_error, show_mlir, verbose, self.default_global_p_error
        )
        start = time.perf_counter()
        try:
            compiled = fhe.Compiler(circuit, dict.fromkeys(parameters, "encrypted")).compile(
                samples, configuration=options.configuration, artifacts=options.artifacts
            )
        except RuntimeError as err:
            dumped = options.artifacts_directory
            from .report import explain_compile_failure

            raise RuntimeError(
                f"concrete could not compile this model (max integer width "
                f"{max([op.output_spec.bit_width for op in self.ops] or [0])} bits): {err}. "
                + explain_compile_failure(self)
                + (f" concrete's debug artifacts: {dumped}" if dumped else "")
            ) from err
        self.timings = {"compile": time.perf_counter() - start}
        self.fhe_circuit = compiled
        return compiled

    def keygen(self, force: bool = False) -> float:
        """Generate the keys once (seconds); returns the time it took (0 if cached)."""
        if self.fhe_circuit is None:
            raise RuntimeError("keygen needs a compiled circuit: call compile(X) first")
        if "keygen" in self.timings and not force:
            return 0.0
        if force:
            forget_circuit(self.fhe_circuit)
        # the execution library is built on first use (default_configuration): compile time
        start = time.perf_counter()
        self.fhe_circuit.enable_fhe_execution()
        self.timings["compile"] = self.timings.get("compile", 0.0) + time.perf_counter() - start
        start = time.perf_counter()
        self.fhe_circuit.keygen(force=force)
        self.timings["keygen"] = time.perf_counter() - start
        return self.timings["keygen"]


def _elementwise(op: QuantizedOp) -> bool:
    return op.is_univariate or op.is_elementwise

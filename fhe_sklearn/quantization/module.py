"""QuantizedModule: an ordered graph of quantized ops, run in the clear or compiled to FHE."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum
from typing import Any

import numpy as np
from concrete import fhe

from .base_op import QuantizedOp, TensorSpec
from .quantizers import UniformQuantizer, check_finite

#: rows of the calibration set used to trace the circuit; bit-widths come from static
#: worst-case bounds (hints), so more rows would only slow compilation down
MAX_INPUTSET_ROWS = 100
#: error budget of a whole circuit run when the caller sets none. concrete's default (1e-5)
#: gave 2 wrong rows in 890 simulated runs of a 184-PBS forest; 1e-7 gave none in 5304, for
#: ~1.6x the latency of that default
DEFAULT_GLOBAL_P_ERROR = 1e-7


class FheMode(str, Enum):
    """How a prediction runs: integers in numpy, FHE simulation, or real encryption."""

    DISABLE = "disable"
    SIMULATE = "simulate"
    EXECUTE = "execute"


def validate_fhe_mode(fhe_mode: Any) -> FheMode:
    try:
        return FheMode(fhe_mode)
    except ValueError:
        choices = ", ".join(repr(m.value) for m in FheMode)
        raise ValueError(f"fhe must be one of {choices}, got {fhe_mode!r}") from None


class QuantizedModule:
    """A quantized model as an ordered graph of :class:`QuantizedOp`.

    The module input is quantized per feature on the client; every op then works on
    integers. Consecutive univariate ops are fused into one table lookup.

    Parameters
    ----------
    input_quantizer : UniformQuantizer
        Quantizer of the model input (scale and zero point per feature or per tensor).
    ops : list of QuantizedOp
        In execution order; each op names its inputs ("input" is the module input).
    output_name : str, optional
        Op whose output is the module output (default: the last op).
    """

    def __init__(
        self,
        input_quantizer: UniformQuantizer,
        ops: list[QuantizedOp],
        output_name: str | None = None,
    ) -> None:
        names = [op.name for op in ops]
        if len(set(names)) != len(names) or "input" in names:
            raise ValueError(f"op names must be unique and not 'input': {names}")
        known = {"input"}
        for op in ops:
            missing = [n for n in op.inputs if n not in known]
            if missing:
                raise ValueError(f"op '{op.name}' reads {missing} before it is computed")
            known.add(op.name)
        self.input_quantizer = input_quantizer
        self.ops = list(ops)
        self.output_name = output_name or (names[-1] if names else "input")
        self.fhe_circuit: fhe.Circuit | None = None
        self.n_features_in: int | None = None
        self.timings: dict[str, float] = {}

    # compiled circuits and timings belong to this process, not to a saved model
    def __getstate__(self) -> dict:
        return {k: v for k, v in vars(self).items() if k not in ("fhe_circuit", "timings")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, fhe_circuit=None, timings={})

    # -- calibration ---------------------------------------------------------------------
    @property
    def input_spec(self) -> TensorSpec:
        q = self.input_quantizer
        return TensorSpec(q.scale, q.zero_point, q.options.qmin, q.options.qmax)

    @property
    def output_spec(self) -> TensorSpec:
        if getattr(self, "client_output_spec", None) is not None:
            return self.client_output_spec
        return self.input_spec if self.output_name == "input" else self._op(self.output_name).output_spec

    def client_view(self) -> QuantizedModule:
        """What a client needs: input quantization and output de-quantization, no ops
        (no weights, thresholds or leaf values of the model)."""
        view = QuantizedModule(self.input_quantizer, [])
        view.n_features_in = self.n_features_in
        view.client_output_spec = self.output_spec
        return view

    def _op(self, name: str) -> QuantizedOp:
        return next(op for op in self.ops if op.name == name)

    def calibrate(self, x: np.ndarray) -> np.ndarray:
        """Quantize every op in order on float calibration data; returns the float output."""
        x = np.asarray(x, dtype=np.float64)
        check_finite(x, "calibration data")
        self.n_features_in = x.shape[1]
        floats = {"input": x}
        specs = {"input": self.input_spec}
        for op in self.ops:
            floats[op.name] = op.calibrate([specs[n] for n in op.inputs], *[floats[n] for n in op.inputs])
            specs[op.name] = op.output_spec
        self.fhe_circuit = None
        return floats[self.output_name]

    # -- the integer graph ---------------------------------------------------------------
    def _fusion_groups(self) -> list[list[QuantizedOp]]:
        """Chains of univariate ops where each link has a single consumer: one TLU each."""
        consumers: dict[str, int] = {}
        for op in self.ops:
            for name in op.inputs:
                consumers[name] = consumers.get(name, 0) + 1
        groups: list[list[QuantizedOp]] = []
        for op in self.ops:
            last = groups[-1][-1] if groups else None
            if (
                op.is_univariate
                and last is not None
                and last.is_univariate
                and op.inputs == [last.name]
                and consumers.get(last.name) == 1
                and last.name != self.output_name
            ):
                groups[-1].append(op)
            else:
                groups.append([op])
        return groups

    @staticmethod
    def _chain(group: list[QuantizedOp]) -> Callable[[Any], Any]:
        def table(q: Any) -> Any:
            for op in group:
                q = op.univariate_fn(q)
            return q

        return table

    def _run(self, x_q: Any, tracing: bool) -> Any:
        values = {"input": x_q}
        for group in self._fusion_groups():
            head, tail = group[0], group[-1]
            args = [values[n] for n in head.inputs]
            if head.is_univariate and tracing:
                out = fhe.univariate(self._chain(group))(args[0])
            elif head.is_univariate:
                out = self._chain(group)(args[0])
            else:
                out = head.q_impl(*args)
            if tracing:
                # static worst-case width: no input the client can send overflows
                out = fhe.hint(out, bit_width=tail.output_spec.bit_width)
            values[tail.name] = out
        return values[self.output_name]

    # -- public API ----------------------------------------------------------------------
    def _check_calibrated(self) -> None:
        if self.n_features_in is None:
            raise RuntimeError("this QuantizedModule is not calibrated: call calibrate(X) first")

    def quantize_input(self, x: Any) -> np.ndarray:
        """Float rows (n_samples, n_features) → integers, in the clear on the client."""
        self._check_calibrated()
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features_in:
            raise ValueError(f"expected input of shape (n_samples, {self.n_features_in}), got {x.shape}")
        check_finite(x, "input")
        return self.input_quantizer.quant(x)

    def dequantize_output(self, y_q: Any) -> np.ndarray:
        """Integers out of the circuit → floats, in the clear on the client."""
        return self.output_spec.dequant(np.asarray(y_q, dtype=np.int64)).astype(np.float64)

    def _check_quantized_input(self, x_q: Any) -> np.ndarray:
        x_q = np.asarray(x_q)
        if x_q.dtype.kind not in "iu":
            raise ValueError(f"quantized input must be integers, got dtype {x_q.dtype}: use quantize_input")
        if x_q.ndim != 2 or x_q.shape[1] != self.n_features_in:
            raise ValueError(f"expected quantized input of shape (n_samples, {self.n_features_in}), got {x_q.shape}")
        qmin, qmax = self.input_quantizer.options.qmin, self.input_quantizer.options.qmax
        if x_q.size and (x_q.min() < qmin or x_q.max() > qmax):
            raise ValueError(f"quantized input must lie in [{qmin}, {qmax}], got [{x_q.min()}, {x_q.max()}]")
        return x_q.astype(np.int64)

    def quantized_forward(
        self, x_q: Any, fhe: str | FheMode = "disable", n_jobs: int | None = 1, progress: bool | None = None
    ) -> np.ndarray:
        """Run the integer graph on quantized rows.

        ``"disable"`` is vectorized over the batch; ``"simulate"`` and ``"execute"`` run one
        row per circuit call (FHE does not batch), ``"execute"`` with real encryption,
        parallel over rows with ``n_jobs`` threads.
        """
        mode = validate_fhe_mode(fhe)
        self._check_calibrated()
        x_q = self._check_quantized_input(x_q)
        if mode is FheMode.DISABLE:
            return np.asarray(self._run(x_q, tracing=False), dtype=np.int64)
        if self.fhe_circuit is None:
            raise RuntimeError(f"fhe={mode.value!r} needs a compiled circuit: call compile(X) first")
        rows = [x_q[i : i + 1] for i in range(len(x_q))]
        if mode is FheMode.SIMULATE:
            outs = [self.fhe_circuit.simulate(r) for r in rows]
        else:
            self.keygen()
            outs = _map_rows(self.fhe_circuit.encrypt_run_decrypt, rows, n_jobs, progress)
        return np.concatenate(outs, axis=0).astype(np.int64) if outs else np.empty((0,), dtype=np.int64)

    def forward(self, x: Any, fhe: str | FheMode = "disable", n_jobs: int | None = 1) -> np.ndarray:
        """quantize_input → quantized_forward → dequantize_output."""
        return self.dequantize_output(self.quantized_forward(self.quantize_input(x), fhe=fhe, n_jobs=n_jobs))

    def compile(
        self,
        inputset: Any,
        configuration: fhe.Configuration | None = None,
        p_error: float | None = None,
        global_p_error: float | None = None,
        verbose: bool = False,
    ) -> fhe.Circuit:
        """Compile the integer graph to an FHE circuit, traced on (float) ``inputset``.

        Without ``configuration``, ``p_error`` or ``global_p_error``, the whole run may be
        wrong with probability ``DEFAULT_GLOBAL_P_ERROR`` (1e-7), so execute and simulate
        agree with the integer graph in practice.
        """
        x_q = self.quantize_input(inputset)
        if len(x_q) == 0:
            raise ValueError("compile needs at least one row in the inputset")
        step = max(1, len(x_q) // MAX_INPUTSET_ROWS)
        qopt = self.input_quantizer.options
        extremes = [np.full((1, x_q.shape[1]), v, dtype=np.int64) for v in (qopt.qmin, qopt.qmax)]
        samples = [x_q[i : i + 1] for i in range(0, len(x_q), step)] + extremes

        def circuit(x: Any) -> Any:
            return self._run(x, tracing=True)

        if configuration is None and p_error is None and global_p_error is None:
            global_p_error = DEFAULT_GLOBAL_P_ERROR
        kwargs = {k: v for k, v in {"p_error": p_error, "global_p_error": global_p_error}.items() if v is not None}
        start = time.perf_counter()
        try:
            compiled = fhe.Compiler(circuit, {"x": "encrypted"}).compile(
                samples, configuration=configuration, verbose=verbose, **kwargs
            )
        except RuntimeError as err:
            raise RuntimeError(
                f"concrete could not compile this model (max integer width "
                f"{max([op.output_spec.bit_width for op in self.ops] or [0])} bits): {err}. "
                "Lower n_bits or relax p_error."
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
        start = time.perf_counter()
        self.fhe_circuit.keygen(force=force)
        self.timings["keygen"] = time.perf_counter() - start
        return self.timings["keygen"]


def _map_rows(fn: Callable, rows: list, n_jobs: int | None, progress: bool | None) -> list:
    """Apply ``fn`` to each row with a tqdm bar; ``n_jobs`` threads, since compiled circuits
    cannot be pickled to worker processes (results checked equal to sequential runs)."""
    from joblib import Parallel, delayed
    from tqdm import tqdm

    show = len(rows) > 4 if progress is None else progress
    it = tqdm(rows, desc="FHE execute", disable=not show, leave=False)
    if n_jobs in (None, 1):
        return [fn(r) for r in it]
    return Parallel(n_jobs=n_jobs, prefer="threads")(delayed(fn)(r) for r in it)

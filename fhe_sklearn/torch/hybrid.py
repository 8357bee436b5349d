"""Hybrid models: chosen sub-modules of a torch network run in FHE, the rest in the clear.

:class:`HybridFHEModel` replaces each named sub-module of a network by a wrapper that, once
compiled, runs the sub-module as its own :class:`~fhe_sklearn.quantization.QuantizedModule`
(imported through :func:`fhe_sklearn.torch.compile_torch_model`, calibrated on the
activations that reach it during a forward pass of the whole network), locally (``fhe=
"disable" | "simulate" | "execute"``) or on a server (``fhe="remote"``: the client quantizes
and encrypts the sub-module's input, the server computes on the ciphertext, the client
decrypts and continues). The deployment side lives in :mod:`fhe_sklearn.deployment.hybrid`.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..quantization import QuantizedModule
from ..quantization.noise_budget import leveled_p_error
from ..quantization.quantizers import MAX_LEVELED_BIT_WIDTH
from . import export_onnx

#: ``fhe`` modes of a hybrid model: the float sub-modules, the integer graphs in numpy, FHE
#: simulation, local encryption, or a server
HYBRID_MODES = ("torch", "disable", "simulate", "execute", "remote")
#: calibration rows kept per sub-module (a random subset beyond): quantizers are min/max or
#: percentile estimates, and compiling traces at most 100 rows
MAX_CALIBRATION_ROWS = 2000


#: a linear layer's default FHE noise, as a fraction of its quantization error (compile_model)
DEFAULT_OUTPUT_NOISE = 1 / 16


def _output_noise(value: float | None, p_error: Any, global_p_error: Any, configuration: Any) -> float:
    """``compile_model``'s noise budget, checked; a probability the user sets takes over."""
    probabilities = [p_error, global_p_error]
    if configuration is not None:
        probabilities += [getattr(configuration, "p_error", None), getattr(configuration, "global_p_error", None)]
    user_set = any(p is not None for p in probabilities)
    if value is None:
        return 0.0 if user_set else DEFAULT_OUTPUT_NOISE
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"output_noise must be a fraction in [0, 1], got {value!r}")
    if value and user_set:
        raise ValueError("output_noise sets the linear layers' p_error: set it or p_error/global_p_error, not both")
    return float(value)


def _is_conv1d(module: Any) -> bool:
    """transformers' ``Conv1D`` (GPT-2's linear layers: ``x @ weight + bias``, weight (in, out))."""
    return type(module).__name__ == "Conv1D" and hasattr(module, "nf") and getattr(module, "weight", None) is not None


def _is_linear(module: Any) -> bool:
    return isinstance(module, torch.nn.Linear) or _is_conv1d(module)


def _exportable(module: Any) -> Any:
    """The module as torch's ONNX exporter sees it as one Gemm: a Conv1D becomes the
    equivalent ``nn.Linear`` (its own forward reshapes through dynamic shapes)."""
    if not _is_conv1d(module):
        return module
    n_in, n_out = module.weight.shape
    linear = torch.nn.Linear(n_in, n_out, bias=module.bias is not None)
    with torch.no_grad():
        linear.weight.copy_(module.weight.T)
        if module.bias is not None:
            linear.bias.copy_(module.bias)
    return linear


class _HybridModule(torch.nn.Module):
    """What replaces a named sub-module: runs it in torch, as integers, in FHE, or remotely."""

    def __init__(self, name: str, module: Any) -> None:
        super().__init__()
        self.module_name = name
        self.private_module = module
        self.linear = _is_linear(module)
        self.q_module: QuantizedModule | None = None
        self.p_error: float | None = None
        self.remote: Any = None
        self.mode = "torch"
        self.calls = 0

    def rows(self, x: Any) -> np.ndarray:
        """The sub-module's input as circuit rows: one per token for a linear layer (its last
        axis), one per batch item otherwise."""
        array = x.detach().cpu().numpy().astype(np.float64)
        return array.reshape(-1, array.shape[-1]) if self.linear else array

    def forward(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs or not isinstance(x, torch.Tensor):
            raise TypeError(f"hybrid module {self.module_name!r} takes one tensor input")
        self.calls += 1
        if self.mode == "torch":
            if self.private_module is None:
                raise RuntimeError(f"module {self.module_name!r}: its weights were cleared; use fhe='remote'")
            return self.private_module(x)
        rows = self.rows(x)
        if self.mode == "remote":
            if self.remote is None:
                raise RuntimeError("fhe='remote' needs a server: call init_client(path) first")
            y = self.remote.run(rows)
        else:
            if self.q_module is None:
                raise RuntimeError(
                    f"module {self.module_name!r} is not compiled here (call compile_model, or use "
                    "fhe='remote' on a client)"
                )
            y = self.q_module.forward(rows, fhe=self.mode)
        y = np.asarray(y)
        shape = (*x.shape[:-1], y.shape[-1]) if self.linear else (x.shape[0], *y.shape[1:])
        return torch.as_tensor(y.reshape(shape), dtype=x.dtype, device=x.device)


class HybridFHEModel:
    """A torch network whose named sub-modules run in FHE (locally or on a server).

    The network is modified in place: each named sub-module is replaced by a wrapper.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    module_names : str or list of str
        Names of the sub-modules to run in FHE, as in ``model.named_modules()`` (e.g.
        ``"transformer.h.0.mlp.c_fc"``). Each takes one tensor; linear layers (``nn.Linear``,
        transformers' ``Conv1D``) run one circuit call per token (last axis), any other
        sub-module one call per batch item.
    server_remote_address : str, optional
        URL of the ``fhe-sklearn serve`` server for ``fhe="remote"``.
    model_name : str
        Identifies the model; a server serving another model name is refused.
    verbose : int
        Print compilation progress.

    Examples
    --------
    >>> hybrid = HybridFHEModel(gpt2, ["transformer.h.0.mlp.c_fc"])  # doctest: +SKIP
    >>> hybrid.compile_model(token_ids, n_bits=8)  # doctest: +SKIP
    >>> logits = hybrid(token_ids, fhe="simulate").logits  # doctest: +SKIP
    """

    def __init__(
        self,
        model: Any,
        module_names: str | Sequence[str],
        server_remote_address: str | None = None,
        model_name: str = "model",
        verbose: int = 0,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"HybridFHEModel takes a torch.nn.Module, got {type(model).__name__}")
        names = [module_names] if isinstance(module_names, str) else list(module_names)
        if not names or len(set(names)) != len(names) or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"module_names must be distinct, non-empty sub-module names, got {module_names!r}")
        if not isinstance(model_name, str) or not model_name:
            raise ValueError(f"model_name must be a non-empty string, got {model_name!r}")
        self.model = model
        self.module_names = names
        self.server_remote_address = server_remote_address
        self.model_name = model_name
        self.verbose = verbose
        available = dict(model.named_modules())
        for name in names:
            if name not in available:
                close = difflib.get_close_matches(name, [n for n in available if n], n=3)
                hint = f"; did you mean {close}?" if close else ""
                raise ValueError(f"model has no sub-module named {name!r}{hint}")
            if isinstance(available[name], _HybridModule):
                raise ValueError(f"sub-module {name!r} is already a hybrid module")
        nested = [(a, b) for a in names for b in names if b.startswith(a + ".")]
        if nested:
            raise ValueError(f"module {nested[0][1]!r} is inside {nested[0][0]!r}: name one of them")
        self.remote_modules: dict[str, _HybridModule] = {}
        for name in names:
            wrapper = _HybridModule(name, available[name])
            parent_name, _, attribute = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attribute, wrapper)
            self.remote_modules[name] = wrapper
        self._calibration: dict[str, np.ndarray] = {}
        self._settings: dict[str, Any] = {}

    # -- compile -------------------------------------------------------------------------------
    def _collect(self, x: Any) -> dict[str, np.ndarray]:
        """The inputs that reach every named sub-module in a float forward pass of ``x``."""
        seen: dict[str, list[np.ndarray]] = {name: [] for name in self.module_names}
        handles = []
        for name, wrapper in self.remote_modules.items():

            def record(module: Any, args: tuple, output: Any, name: str = name, wrapper: Any = wrapper) -> None:
                seen[name].append(wrapper.rows(args[0]))

            handles.append(wrapper.private_module.register_forward_hook(record))
        try:
            self._run(x, "torch")
        finally:
            for handle in handles:
                handle.remove()
        collected = {}
        rng = np.random.default_rng(0)
        for name, parts in seen.items():
            if not parts:
                raise ValueError(f"module {name!r} was not called by the model's forward pass on the calibration data")
            rows = np.concatenate(parts)
            if len(rows) > MAX_CALIBRATION_ROWS:
                rows = rows[np.sort(rng.choice(len(rows), MAX_CALIBRATION_ROWS, replace=False))]
            collected[name] = rows
        return collected

    def _quantize(
        self, name: str, n_bits: Any, compile: bool, output_noise: float = 0.0, **options: Any
    ) -> QuantizedModule:
        """One sub-module imported (and compiled) on its calibration rows."""
        from ..onnx import onnx_to_module

        wrapper = self.remote_modules[name]
        rows = self._calibration[name]
        module = _exportable(wrapper.private_module)
        rounding = options.pop("rounding_threshold_bits", 6)
        # a linear layer's accumulator leaves the circuit: keep it whole, up to 32 bits
        accumulator_bits = MAX_LEVELED_BIT_WIDTH if wrapper.linear else 16
        try:
            q_module = onnx_to_module(
                export_onnx(module, rows), rows, n_bits, rounding, output_accumulator_bits=accumulator_bits
            )
            if compile:
                p_error = options.pop("p_error", None)
                if wrapper.linear and output_noise and not any(op.is_univariate for op in q_module.ops):
                    with torch.no_grad():
                        reference = module(torch.as_tensor(rows, dtype=torch.float32)).numpy()
                    p_error = leveled_p_error(q_module, rows, reference, output_noise) or p_error
                q_module.compile(rows, p_error=p_error, **options)
                wrapper.p_error = p_error
            return q_module
        except (ValueError, RuntimeError, TypeError, NotImplementedError) as err:
            kind = type(wrapper.private_module).__name__
            raise ValueError(f"module {name!r} ({kind}) cannot run in FHE: {err}") from err

    def _bits_of(self, name: str, n_bits: Any) -> Any:
        if isinstance(n_bits, Mapping) and set(n_bits) & set(self.module_names):
            unknown = set(n_bits) - set(self.module_names)
            if unknown or name not in n_bits:
                raise ValueError(
                    f"n_bits by module must name exactly the hybrid modules {self.module_names}, got {sorted(n_bits)}"
                )
            return n_bits[name]
        return n_bits

    def compile_model(
        self,
        x: Any,
        n_bits: Any = 8,
        rounding_threshold_bits: int | None = 6,
        p_error: float | None = None,
        global_p_error: float | None = None,
        configuration: Any = None,
        output_noise: float | None = None,
    ) -> HybridFHEModel:
        """Calibrate and compile every named sub-module.

        Parameters
        ----------
        x : torch.Tensor or tuple of tensors
            Representative inputs of the whole network (e.g. token ids): one float forward
            pass records what reaches each sub-module (forward hooks), which calibrates it.
        n_bits : int, dict, or dict of module name to either
            As :func:`~fhe_sklearn.torch.compile_torch_model`; a dict keyed by the module
            names sets each module's own.
        rounding_threshold_bits, p_error, global_p_error, configuration
            As :func:`~fhe_sklearn.torch.compile_torch_model`. A linear layer has no lookup:
            its accumulator (up to 32 bits) leaves the circuit and the client de-quantizes it.
        output_noise : float, optional
            The FHE noise a linear layer's output may carry, as a fraction of the (smallest
            per-output) rms error quantization already makes on the calibration rows; concrete
            spends it on smaller ciphertexts (:mod:`fhe_sklearn.quantization.noise_budget`).
            Default: ``DEFAULT_OUTPUT_NOISE`` (1/16: the output's total error grows by 0.2 %),
            or 0 when ``p_error``, ``global_p_error`` or the configuration sets a probability.
            ``0``: exact accumulators (``fhe="simulate"`` and ``"execute"`` then equal
            ``"disable"``); otherwise they carry this noise and ``"disable"`` does not.

        Returns
        -------
        self : HybridFHEModel
        """
        self._check_private("compile_model")
        output_noise = _output_noise(output_noise, p_error, global_p_error, configuration)
        self._calibration = self._collect(x)
        options = {
            "rounding_threshold_bits": rounding_threshold_bits,
            "p_error": p_error,
            "global_p_error": global_p_error,
            "configuration": configuration,
        }
        for name, wrapper in self.remote_modules.items():
            bits = self._bits_of(name, n_bits)
            if self.verbose:
                print(f"compiling {name} ({len(self._calibration[name])} calibration rows, n_bits={bits})")
            wrapper.q_module = self._quantize(name, bits, compile=True, output_noise=output_noise, **options)
        self._settings = {
            "n_bits": n_bits,
            "rounding_threshold_bits": rounding_threshold_bits,
            "output_noise": output_noise,
        }
        return self

    def _check_private(self, what: str) -> None:
        cleared = [n for n, w in self.remote_modules.items() if w.private_module is None]
        if cleared:
            raise RuntimeError(f"{what} needs the sub-modules' weights, cleared by save_and_clear_private_info")

    # -- run -----------------------------------------------------------------------------------
    def set_fhe_mode(self, fhe: str) -> None:
        """Set how every wrapped sub-module runs (one of :data:`HYBRID_MODES`)."""
        if fhe not in HYBRID_MODES:
            raise ValueError(f"fhe must be one of {list(HYBRID_MODES)}, got {fhe!r}")
        for wrapper in self.remote_modules.values():
            wrapper.mode = fhe

    def _run(self, x: Any, fhe: str) -> Any:
        self.set_fhe_mode(fhe)  # checks the mode
        return self._run_modes(x, dict.fromkeys(self.remote_modules, fhe))

    def forward(self, x: Any, fhe: str = "disable") -> Any:
        """The network's output, the named sub-modules run as ``fhe`` says.

        Parameters
        ----------
        x : torch.Tensor or tuple of tensors
            The network's input(s).
        fhe : {"torch", "disable", "simulate", "execute", "remote"}
            ``"torch"``: the float sub-modules; ``"disable"``: their integer graphs in numpy
            (== ``"simulate"`` but for the linear layers' noise, see ``output_noise`` of
            :meth:`compile_model`); ``"simulate"``: concrete's simulation; ``"execute"``: real
            encryption in this process; ``"remote"``: encrypted on the server (after
            :meth:`init_client`). Clear data never leaves the client.

        Returns
        -------
        What the network returns.
        """
        if fhe in ("disable", "simulate", "execute"):
            missing = [n for n, w in self.remote_modules.items() if w.q_module is None]
            if missing:
                raise RuntimeError(f"fhe={fhe!r} needs compiled modules: call compile_model first ({missing})")
        return self._run(x, fhe)

    def __call__(self, x: Any, fhe: str = "disable") -> Any:
        return self.forward(x, fhe=fhe)

    # -- reports -------------------------------------------------------------------------------
    def bit_width_report(self, print_table: bool = True) -> list[dict[str, Any]]:
        """Per sub-module: calls per forward pass do not matter here; what each circuit holds.

        Returns
        -------
        rows : list of dict
            ``module``, ``kind``, ``input_bits`` (widest input), ``accumulator_bits`` (widest
            value in the circuit), ``pbs`` (table lookups per call), ``max_lookup_bits``
            (widest lookup input; 0 without lookups), ``complexity`` (concrete's cost model),
            ``p_error`` (as compiled: a linear layer's noise budget, see :meth:`compile_model`, or
            the user's; None: the default global_p_error).
        """
        rows = []
        for name, wrapper in self.remote_modules.items():
            q = wrapper.q_module
            if q is None:
                raise RuntimeError("bit_width_report needs compiled modules: call compile_model first")
            widths = q.bit_widths()
            circuit = q.fhe_circuit
            lookups = [_lookup_bits(q, op) for op in q.ops if op.is_univariate and op.op_type != "TruncateToBits"]
            rows.append(
                {
                    "module": name,
                    "kind": type(wrapper.private_module).__name__ if wrapper.private_module is not None else "?",
                    "input_bits": max(widths[n] for n in q.input_names),
                    "accumulator_bits": max(widths.values()),
                    "pbs": int(circuit.programmable_bootstrap_count) if circuit is not None else None,
                    "max_lookup_bits": max(lookups, default=0),
                    "complexity": float(circuit.complexity) if circuit is not None else None,
                    "p_error": wrapper.p_error,
                }
            )
        if print_table:
            print(_table(rows))
        return rows

    def sweep_n_bits(
        self,
        x: Any,
        n_bits: Sequence[int] = (4, 5, 6, 7, 8),
        score: Any = None,
        print_table: bool = True,
    ) -> list[dict[str, Any]]:
        """Accuracy against n_bits, each sub-module alone and all together.

        Each setting re-imports the sub-modules at that width on the stored calibration
        data and runs the network on ``x`` with their integer graphs (``fhe="disable"``: what
        simulate gives, without the linear layers' noise budget), so the sweep compiles nothing.

        Parameters
        ----------
        x : torch.Tensor or tuple of tensors
            Evaluation inputs of the network.
        n_bits : sequence of int
            The widths to try.
        score : callable, optional
            ``score(float_output, hybrid_output) -> float``; default: top-1 agreement of the
            last axis (next-token or class agreement).
        print_table : bool
            Print the table.

        Returns
        -------
        rows : list of dict
            ``n_bits``, ``modules`` (a name or ``"all"``), ``score``.
        """
        self._check_private("sweep_n_bits")
        if not self._calibration:
            raise RuntimeError("sweep_n_bits needs the calibration data: call compile_model first")
        score = score or top1_agreement
        reference = _logits(self._run(x, "torch"))
        saved = {name: w.q_module for name, w in self.remote_modules.items()}
        rows = []
        try:
            for bits in n_bits:
                quantized = {name: self._quantize(name, bits, compile=False) for name in self.module_names}
                groups = [[name] for name in self.module_names] if len(self.module_names) > 1 else []
                for group in [*groups, self.module_names]:
                    for name in group:
                        self.remote_modules[name].q_module = quantized[name]
                    output = self._run_modes(x, dict.fromkeys(group, "disable"))
                    label = group[0] if len(group) == 1 and groups else "all"
                    rows.append({"n_bits": bits, "modules": label, "score": float(score(reference, _logits(output)))})
        finally:
            for name, wrapper in self.remote_modules.items():
                wrapper.q_module = saved[name]
        if print_table:
            print(_table(rows))
        return rows

    def report(self, x: Any, n_bits: Sequence[int] = (4, 5, 6, 7, 8), score: Any = None) -> dict[str, list]:
        """Print the per-layer bit-width report and the accuracy-vs-n_bits sweep on ``x``
        (see :meth:`bit_width_report` and :meth:`sweep_n_bits`); returns both tables' rows."""
        print("Per-layer bit widths:")
        widths = self.bit_width_report()
        print("\nAccuracy against n_bits (each layer alone, then all together):")
        return {"bit_widths": widths, "sweep": self.sweep_n_bits(x, n_bits=n_bits, score=score)}

    def _run_modes(self, x: Any, modes: dict[str, str]) -> Any:
        """The network with some sub-modules as integers, the others in float."""
        was_training = self.model.training
        self.model.eval()
        for name, wrapper in self.remote_modules.items():
            wrapper.mode = modes.get(name, "torch")
        try:
            with torch.no_grad():
                return self.model(*x) if isinstance(x, tuple) else self.model(x)
        finally:
            self.model.train(was_training)
            self.set_fhe_mode("torch")

    # -- deployment ----------------------------------------------------------------------------
    def save_and_clear_private_info(self, path: str | Path) -> Path:
        """Write the deployment and drop what the client must not hold.

        ``path/server`` (served by ``fhe-sklearn serve path/server``): one deployment per
        sub-module (``server.zip`` with its weights, ``client.json``) and ``hybrid.json``
        (model name, modules, fingerprints). ``path/client``: ``hybrid.json``, each module's
        ``client.json`` (quantizers, no weights) and ``model_state.pt``, the network's
        weights without those of the named sub-modules. No key is written anywhere.

        Afterwards this object holds neither the sub-modules' float weights nor their
        circuits nor the calibration data: only ``fhe="remote"`` runs them.

        Returns
        -------
        path : Path
        """
        from ..deployment.hybrid import save_hybrid_deployment

        missing = [n for n, w in self.remote_modules.items() if w.q_module is None]
        if missing:
            raise RuntimeError(f"save_and_clear_private_info needs compiled modules: call compile_model ({missing})")
        path = Path(path)
        modules = {name: w.q_module for name, w in self.remote_modules.items()}
        save_hybrid_deployment(path, self.model_name, modules)
        self.clear_private_info()
        torch.save(self.model.state_dict(), path / "client" / "model_state.pt")
        return path

    def clear_private_info(self) -> None:
        """Forget the named sub-modules' weights, circuits and calibration data."""
        for wrapper in self.remote_modules.values():
            wrapper.private_module = None
            wrapper.q_module = None
        self._calibration = {}

    def init_client(
        self,
        path: str | Path,
        key_dir: str | Path | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
    ) -> HybridFHEModel:
        """Connect to the server for ``fhe="remote"`` with the client copy in ``path``.

        Checks that the server at ``server_remote_address`` serves this model (name and
        every module's fingerprint equal to the client copy's), generates the keys (kept in
        ``key_dir``, default ``path/keys``) and uploads each module's evaluation keys once;
        they are reused for every call. Loads ``model_state.pt`` (the clear part of the
        network) if the client copy has one, and drops the named sub-modules' weights.

        Parameters
        ----------
        path : str or Path
            The client copy (``.../client`` of :meth:`save_and_clear_private_info`).
        key_dir : str or Path, optional
            Where the private keys are kept.
        api_key : str, optional
            The server's API key for key uploads (``serve --api-key-file``).
        timeout : float
            Seconds per HTTP request; a slower answer raises ``TimeoutError``.

        Returns
        -------
        self : HybridFHEModel
        """
        from ..deployment.hybrid import connect_hybrid

        if not self.server_remote_address:
            raise ValueError("init_client needs server_remote_address (the URL of `fhe-sklearn serve`)")
        path = Path(path)
        clients = connect_hybrid(
            self.server_remote_address,
            path,
            self.model_name,
            self.module_names,
            key_dir=Path(key_dir) if key_dir is not None else path / "keys",
            api_key=api_key,
            timeout=timeout,
        )
        self.clear_private_info()
        state = path / "model_state.pt"
        if state.exists():
            self.model.load_state_dict(torch.load(state, weights_only=True), strict=False)
        for name, client in clients.items():
            self.remote_modules[name].remote = client
        return self


def _lookup_bits(module: QuantizedModule, op: Any) -> int:
    """Bits a lookup reads: the kept high bits of a truncated accumulator, else its input's."""
    producer = next((p for p in module.ops if p.name == op.inputs[0]), None)
    if producer is not None and producer.op_type == "TruncateToBits" and producer.lsbs:
        return producer.target_bits
    return op.input_specs[0].bit_width


def top1_agreement(reference: np.ndarray, output: np.ndarray) -> float:
    """Share of positions whose argmax over the last axis agrees."""
    return float(np.mean(np.argmax(reference, axis=-1) == np.argmax(output, axis=-1)))


def _logits(output: Any) -> np.ndarray:
    """A network's output as an array (``.logits`` of a transformers output)."""
    value = getattr(output, "logits", output)
    if isinstance(value, (tuple, list)):
        value = value[0]
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def _table(rows: list[dict[str, Any]]) -> str:
    """Rows as a markdown table."""
    if not rows:
        return ""
    keys = list(rows[0])

    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(cell(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


__all__ = ["HYBRID_MODES", "HybridFHEModel", "top1_agreement"]

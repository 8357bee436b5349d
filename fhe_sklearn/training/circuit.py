"""The encrypted SGD step compiled as a composable concrete module.

One function, ``step(x, y, weights, dither)``: its output (the new weights) is wired back to
its ``weights`` input (``fhe.Wired``), so a server chains steps on ciphertexts and the weights
are never decrypted between them; ``x`` and ``y`` keep their own narrow encodings.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .plan import TrainingPlan

#: rows of random inputs traced besides the extremes (widths come from static hints)
N_RANDOM_SAMPLES = 6


def training_inputset(plan: TrainingPlan, seed: int = 0) -> list[tuple[np.ndarray, ...]]:
    """Extreme and random integer inputs of the step, for tracing."""
    rng = np.random.default_rng(seed)
    B, d, K = plan.batch_size, plan.n_features, plan.n_outputs
    X, (lo, hi), (ulo, uhi) = plan.x_max, plan.weight_bounds, plan.dither_bounds
    tmin, tmax = (0, 1) if plan.task == "classification" else (-plan.target_max, plan.target_max)
    shape = plan.weight_shape
    samples = [
        (np.full((B, d), s * X), np.full((B, K), t), np.full(shape, w), np.full(shape, u))
        for s, t, w, u in [(1, tmax, hi, ulo), (-1, tmin, lo, uhi), (1, tmin, hi, uhi), (-1, tmax, lo, ulo)]
    ]
    for _ in range(N_RANDOM_SAMPLES):
        samples.append(
            (
                rng.integers(-X, X + 1, (B, d)),
                rng.integers(tmin, tmax + 1, (B, K)),
                rng.integers(lo, hi + 1, shape),
                rng.integers(ulo, uhi + 1, shape),
            )
        )
    return samples


class TrainingCircuit:
    """The compiled step of a :class:`TrainingPlan`.

    Parameters
    ----------
    plan : TrainingPlan
    configuration : concrete.fhe.Configuration, optional
        Default: compressed keys and inputs, ``global_p_error=1e-7`` (one step exact in practice).
    simulation : bool
        Compile the simulator only (``fhe="simulate"``: one compilation instead of two).
    """

    def __init__(self, plan: TrainingPlan, configuration: Any = None, simulation: bool = False) -> None:
        from concrete import fhe

        from ..quantization.compile_options import DEFAULT_GLOBAL_P_ERROR, default_configuration

        self.plan = plan
        if configuration is None:
            configuration = default_configuration().fork(global_p_error=DEFAULT_GLOBAL_P_ERROR, p_error=None)
        # one of the two: a server only runs steps, a simulation never executes
        configuration = configuration.fork(fhe_simulation=simulation, fhe_execution=not simulation)
        self.simulation = simulation
        self.configuration = configuration
        statuses = {"x": "encrypted", "y": "encrypted", "weights": "encrypted", "dither": "clear"}

        @fhe.module()
        class Training:
            @fhe.function(statuses)
            def step(x: Any, y: Any, weights: Any, dither: Any) -> Any:
                return plan.step(x, y, weights, dither, fhe=fhe)

            composition = fhe.Wired({fhe.Wire(fhe.Output(step, 0), fhe.Input(step, 2))})

        start = time.perf_counter()
        self.module = Training.compile({"step": training_inputset(plan)}, configuration)
        self.timings = {"compile": time.perf_counter() - start}
        self.function = self.module.step

    # -- figures -------------------------------------------------------------------------------
    def statistics(self) -> dict[str, Any]:
        """PBS count, complexity, max bit-width (cost figures of one step)."""
        return {
            "pbs": int(self.function.programmable_bootstrap_count),
            "complexity": float(self.module.complexity),
            "max_bit_width": int(self.function.graph.maximum_integer_bit_width()),
        }

    def keygen(self, force: bool = False) -> float:
        """Generate the keys once; seconds it took (0 when they exist)."""
        if self.simulation:
            raise RuntimeError("this training circuit was compiled for simulation only")
        if "keygen" in self.timings and not force:
            return 0.0
        start = time.perf_counter()
        self.module.keygen(force=force)
        self.timings["keygen"] = time.perf_counter() - start
        return self.timings["keygen"]

    def evaluation_key_bytes(self) -> int:
        """Size of the serialized evaluation keys (what a client uploads)."""
        self.keygen()
        return len(self.module.keys.evaluation.serialize())

    # -- running -------------------------------------------------------------------------------
    def simulate(self, x: np.ndarray, y: np.ndarray, v: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One simulated step on integer codes: the new integer weights."""
        return np.asarray(self.function.simulate(x, y, v, u), dtype=np.int64).reshape(self.plan.weight_shape)

    def encrypt_weights(self, v: np.ndarray) -> Any:
        """Integer weights → the ciphertext the first step reads."""
        self.keygen()
        return self.function.encrypt(None, None, v, None)[2]

    def encrypt_batch(self, x: np.ndarray, y: np.ndarray, u: np.ndarray) -> tuple[Any, Any, Any]:
        """A batch's codes encrypted, and its dither as a clear value."""
        self.keygen()
        x_enc, y_enc, _, u_clear = self.function.encrypt(x, y, None, u)
        return x_enc, y_enc, u_clear

    def run(self, x_enc: Any, y_enc: Any, v_enc: Any, u_clear: Any) -> Any:
        """One step on ciphertexts: the new encrypted weights."""
        return self.function.run(x_enc, y_enc, v_enc, u_clear)

    def decrypt_weights(self, v_enc: Any) -> np.ndarray:
        """Encrypted weights (a step's output) → integer weights."""
        return np.asarray(self.function.decrypt(v_enc), dtype=np.int64).reshape(self.plan.weight_shape)

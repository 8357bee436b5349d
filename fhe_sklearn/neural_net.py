"""Fully-connected neural networks trained with quantization-aware training (QAT), in FHE.

The network (:class:`~fhe_sklearn.quantization.qat.SparseQuantMLP`) is trained by skorch on
the integer grid of its circuit, and pruned after every epoch so that each layer's worst-case
integer accumulator fits ``module__n_accum_bits``. It lowers to:

    input codes ─ IntegerMatMul ─ TruncateBitPattern ─ TableLookup ─ ... ─ IntegerMatMul → scores

where each TableLookup is one PBS per hidden neuron: it applies the bias, the activation and
the re-quantization to ``module__n_a_bits`` at once. The circuit's widest integer is the
accumulator, at most ``module__n_accum_bits`` bits; before its lookup, each accumulator keeps
its top ``rounding_threshold_bits`` bits (exact truncation: a few low-precision PBS), so no
lookup reads more than that. Output biases, softmax and argmax (or
the target's de-standardization) run in the clear.
"""

from __future__ import annotations

import numbers
from typing import Any, ClassVar

import numpy as np
import skorch
import torch
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets

from .base import FHEClassifierMixin, FHEEstimatorMixin, FHERegressorMixin
from .quantization import GraphBuilder, QuantizationOptions, QuantizedModule, UniformQuantizer, integer_bit_width
from .quantization.ops import _interval_matmul
from .quantization.qat import SparseQuantMLP, activation_module
from .quantization.quantizers import MAX_BIT_WIDTH

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
}


#: the input grid spans these per-feature quantiles of the training data (outliers clip)
INPUT_QUANTILE = 0.03


class _PruneAfterEpoch(skorch.callbacks.Callback):
    """Train dense for the first half of the epochs, then prune after every epoch (the last
    one included): the network fine-tunes what it keeps, and ends within ``n_accum_bits``."""

    def on_epoch_end(self, net: skorch.NeuralNet, **kwargs: Any) -> None:
        if len(net.history) >= net.max_epochs // 2:
            net.module_.prune()


class _Float32Input:
    """skorch nets take the float64 arrays sklearn validation produces (torch trains in float32)."""

    def infer(self, x: Any, **fit_params: Any) -> torch.Tensor:
        """The module's output for ``x``, cast to float32 first."""
        if isinstance(x, torch.Tensor) and x.dtype == torch.float64:
            x = x.float()
        return super().infer(x, **fit_params)


class FloatNetClassifier(_Float32Input, skorch.NeuralNetClassifier):
    """The trained float network of a NeuralNetClassifier; ``predict`` returns the original
    labels (skorch's returns their indices)."""

    def predict(self, X: Any) -> np.ndarray:
        return self.labels_[super().predict(X)]


class FloatNetRegressor(_Float32Input, skorch.NeuralNetRegressor):
    """The trained float network of a NeuralNetRegressor; ``predict`` undoes the target's
    standardization (the network is trained on the standardized target)."""

    def predict(self, X: Any) -> np.ndarray:
        y = super().predict(X) * self.target_scale_ + self.target_mean_
        return y.ravel() if self.single_target_ else y


def activation_tables(
    accumulator_range: tuple[np.ndarray, np.ndarray],
    weight_scale: np.ndarray,
    bias: np.ndarray,
    activation: torch.nn.Module,
    quantizer: tuple[float, int],
    n_bits: int,
    center: int,
    lsbs: int = 0,
) -> tuple[np.ndarray, int]:
    """One table per neuron: accumulator → centred ``n_bits`` code of activation(s·acc + b).

    With ``lsbs``, the lookup reads the accumulator with its ``lsbs`` low bits cleared: each
    entry is the activation at the middle of the values that truncate to it (within the
    neuron's range), i.e. the accumulator rounded to the nearest kept level.
    """
    lo, hi = (np.asarray(v, dtype=np.int64) for v in accumulator_range)
    offset = (int(np.min(lo)) >> lsbs) << lsbs
    accumulator = np.arange(offset, int(np.max(hi)) + 1)
    start = (accumulator >> lsbs) << lsbs
    middle = np.clip((2 * start[None, :] + 2**lsbs - 1) / 2, lo[:, None], hi[:, None])
    pre_activation = weight_scale[:, None] * middle + bias[:, None]
    with torch.no_grad():
        values = activation(torch.from_numpy(pre_activation)).numpy()
    scale, zero_point = quantizer
    codes = np.clip(np.rint(values / scale) + zero_point, 0, 2**n_bits - 1)
    return codes.astype(np.int64) - center, offset


def lower_network(
    network: SparseQuantMLP, X: np.ndarray, rounding_threshold_bits: int | None = None
) -> tuple[QuantizedModule, np.ndarray]:
    """The trained network as a calibrated QuantizedModule, and the output biases (clear side).

    With ``rounding_threshold_bits``, each hidden accumulator wider than that is truncated
    to its top ``rounding_threshold_bits`` bits before its lookup (see
    :func:`activation_tables`), so no lookup reads more bits.
    """
    exported = network.export()
    n_bits = exported["n_a_bits"]
    input_quantizer = UniformQuantizer(
        QuantizationOptions(n_bits), scale=exported["input_scale"], zero_point=exported["input_zero_point"]
    )
    layers = exported["layers"]
    builder = GraphBuilder()
    builder.input(input_quantizer)
    for index, layer in enumerate(layers):
        builder.add(
            "IntegerMatMul",
            name=f"dense_{index}",
            weight=layer["weight"],
            output_scale=layer["scale"],
            overflow_hint="lower module__n_accum_bits",
        )
        if index == len(layers) - 1:
            break
        # the ranges pruning bounded the accumulators with, so the tables cover every value
        input_range = [bound.numpy().astype(np.int64) for bound in network.input_integer_range(index)]
        accumulator_range = _interval_matmul(*input_range, layer["weight"])
        lsbs = 0
        if rounding_threshold_bits is not None:
            lsbs = max(0, integer_bit_width(*accumulator_range) - rounding_threshold_bits)
        if lsbs:
            builder.add("TruncateBitPattern", name=f"truncate_{index}", lsbs=lsbs)
        tables, offset = activation_tables(
            accumulator_range,
            layer["scale"],
            layer["bias"],
            network.activation,
            exported["hidden_quantizers"][index],
            n_bits,
            exported["center"],
            lsbs,
        )
        scale = exported["hidden_quantizers"][index][0]
        builder.add("TableLookup", name=f"activation_{index}", tables=tables, offset=offset, output_scale=scale)
    module = builder.build(X)
    widest = max(op.output_spec.bit_width for op in module.ops)
    if widest > network.n_accum_bits:  # pruning guarantees it; a failure here is a library bug
        raise RuntimeError(f"pruned network needs {widest}-bit integers, over n_accum_bits={network.n_accum_bits}")
    return module, layers[-1]["bias"]


class _NeuralNet(FHEEstimatorMixin):
    """Shared by NeuralNetClassifier and NeuralNetRegressor: skorch training with QAT and
    pruning, then lowering of the integer network.

    Parameters
    ----------
    module__n_layers : int, default=2
        Linear layers; ``module__n_layers - 1`` hidden layers, each of
        ``module__n_hidden_neurons_multiplier × n_features`` neurons (one PBS each).
    module__n_hidden_neurons_multiplier : int, default=2
    module__activation_function : str or torch.nn.Module class, default="relu"
        ``"relu"``, ``"sigmoid"``, ``"tanh"``, ``"gelu"``, ``"silu"``, ``"leaky_relu"``,
        ``"elu"``, or a class (then the model cannot be saved with ``dump``).
    module__n_w_bits : int, default=3
        Bits of the weights (symmetric, per neuron).
    module__n_a_bits : int, default=3
        Bits of the input (per feature) and of every hidden activation.
    module__n_accum_bits : int, default=8
        Every layer's worst-case integer accumulator fits this many bits (signed): connections
        are pruned, smallest magnitude first, until it does.
    rounding_threshold_bits : int or None, default=5
        Each hidden accumulator wider than this is truncated to its top
        ``rounding_threshold_bits`` bits before its activation lookup (exact, so ``disable``,
        ``simulate`` and ``execute`` agree), and the lookup reads that many bits: its cost and
        key size fall steeply with it. None: lookups read the whole accumulator.
    max_epochs : int, default=100
    lr : float, default=1e-3
    batch_size : int, default=64
    optimizer : str or torch.optim.Optimizer class, default="adam"
        ``"adam"``, ``"adamw"``, ``"sgd"``, or a class.
    verbose : int, default=0
        skorch's per-epoch log.
    random_state : int, RandomState or None, default=None
        Seeds weight initialization and batch shuffling.

    Attributes
    ----------
    sklearn_model_ : skorch.NeuralNet
        The trained float (fake-quantized, pruned) network.
    quantized_module_ : QuantizedModule
    output_bias_ : ndarray of shape (n_outputs,)
        Last layer's bias, added to the de-quantized scores in the clear.
    """

    _skorch_class: ClassVar[type[skorch.NeuralNet]]
    _agreement_advice: ClassVar[str] = (
        "Raise rounding_threshold_bits (or None: no accumulator truncation, bigger lookups), "
        "train longer (max_epochs), or give it more bits (module__n_a_bits, module__n_w_bits)."
    )
    _criterion: ClassVar[type[torch.nn.Module]]
    _client_attributes: ClassVar[dict[str, type]] = {"output_bias_": np.ndarray}

    def __init__(
        self,
        *,
        module__n_layers: int = 2,
        module__n_hidden_neurons_multiplier: int = 2,
        module__activation_function: Any = "relu",
        module__n_w_bits: int = 3,
        module__n_a_bits: int = 3,
        module__n_accum_bits: int = 8,
        rounding_threshold_bits: int | None = 5,
        max_epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 64,
        optimizer: Any = "adam",
        verbose: int = 0,
        random_state: Any = None,
    ) -> None:
        self.module__n_layers = module__n_layers
        self.module__n_hidden_neurons_multiplier = module__n_hidden_neurons_multiplier
        self.module__activation_function = module__activation_function
        self.module__n_w_bits = module__n_w_bits
        self.module__n_a_bits = module__n_a_bits
        self.module__n_accum_bits = module__n_accum_bits
        self.rounding_threshold_bits = rounding_threshold_bits
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.verbose = verbose
        self.random_state = random_state

    def set_params(self, **params: Any) -> _NeuralNet:
        """Set parameters, ``module__*`` ones included (they are parameters of this estimator)."""
        # "module__n_w_bits" is a parameter of its own here, not "n_w_bits" of a "module"
        own = self.get_params(deep=False)
        for name in [k for k in params if k in own]:
            setattr(self, name, params.pop(name))
        return super().set_params(**params) if params else self

    def __sklearn_tags__(self) -> Any:
        tags = super(FHEEstimatorMixin, self).__sklearn_tags__()
        tags.target_tags.multi_output = isinstance(self, RegressorMixin)
        return tags

    def _check_fhe_params(self) -> None:
        def positive_int(name: str, low: int, high: int) -> int:
            value = getattr(self, name)
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
            return int(value)

        positive_int("module__n_layers", 1, 100)
        positive_int("module__n_hidden_neurons_multiplier", 1, 1000)
        w_bits = positive_int("module__n_w_bits", 2, 8)
        a_bits = positive_int("module__n_a_bits", 2, 8)
        accum_bits = positive_int("module__n_accum_bits", 2, MAX_BIT_WIDTH)
        if accum_bits < w_bits + a_bits:
            raise ValueError(
                f"module__n_accum_bits={accum_bits} cannot hold even one product of a {w_bits}-bit weight and "
                f"a {a_bits}-bit activation: use at least {w_bits + a_bits}"
            )
        if self.rounding_threshold_bits is not None:
            positive_int("rounding_threshold_bits", 2, MAX_BIT_WIDTH)
        positive_int("max_epochs", 1, 10**6)
        positive_int("batch_size", 1, 10**9)
        activation_module(self.module__activation_function)
        self._optimizer_class()

    def _optimizer_class(self) -> type[torch.optim.Optimizer]:
        if isinstance(self.optimizer, str):
            if self.optimizer not in OPTIMIZERS:
                raise ValueError(f"unknown optimizer {self.optimizer!r}; known: {sorted(OPTIMIZERS)}")
            return OPTIMIZERS[self.optimizer]
        if isinstance(self.optimizer, type) and issubclass(self.optimizer, torch.optim.Optimizer):
            return self.optimizer
        raise TypeError(f"optimizer must be a name or a torch.optim.Optimizer class, got {self.optimizer!r}")

    @classmethod
    def from_sklearn_model(cls, sklearn_model: Any, X: Any = None, n_bits: Any = None) -> Any:
        raise TypeError(
            f"{cls.__name__} cannot wrap a network trained elsewhere: it must be trained with its own "
            "quantization-aware training and pruning; call fit"
        )

    def _train(self, X: np.ndarray, y: np.ndarray, n_outputs: int, fit_params: dict[str, Any]) -> skorch.NeuralNet:
        if fit_params:
            raise TypeError(f"{type(self).__name__}.fit takes no {sorted(fit_params)}: sample_weight is not supported")
        net = self._skorch_class(
            SparseQuantMLP,
            module__n_features=X.shape[1],
            module__n_outputs=n_outputs,
            **{k: v for k, v in self.get_params(deep=False).items() if k.startswith("module__")},
            module__input_range=np.quantile(X, [INPUT_QUANTILE, 1 - INPUT_QUANTILE], axis=0),
            criterion=self._criterion,
            optimizer=self._optimizer_class(),
            lr=self.lr,
            max_epochs=self.max_epochs,
            batch_size=self.batch_size,
            train_split=None,
            iterator_train__shuffle=True,
            callbacks=[("prune", _PruneAfterEpoch())],
            verbose=self.verbose,
        )
        seed = int(check_random_state(self.random_state).randint(2**31 - 1))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net.fit(X.astype(np.float32), y)
        return net

    def _set_fitted_attributes(self) -> None:
        pass  # classes_ and target statistics are set by _fit_float

    def _build_quantized_module(self, X: np.ndarray) -> QuantizedModule:
        module, self.output_bias_ = lower_network(self.sklearn_model_.module_, X, self.rounding_threshold_bits)
        return module

    @property
    def max_bit_width_(self) -> int:
        """Widest integer of the circuit (the accumulators): at most ``module__n_accum_bits``."""
        return max(op.output_spec.bit_width for op in self.quantized_module_.ops)


class NeuralNetClassifier(_NeuralNet, FHEClassifierMixin, ClassifierMixin, BaseEstimator):
    """Fully-connected classifier with QAT predicting in FHE; parameters in the skorch style.

    Scores come out of the circuit; softmax and argmax run in the clear.
    See ``_NeuralNet`` for the parameters.
    """

    _skorch_class = FloatNetClassifier
    _criterion = torch.nn.CrossEntropyLoss

    def _fit_float(self, X: np.ndarray, y: np.ndarray, **fit_params: Any) -> skorch.NeuralNet:
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError("NeuralNetClassifier needs at least 2 classes in y, got 1 class")
        net = self._train(X, encoder.transform(y).astype(np.int64), len(self.classes_), fit_params)
        net.labels_ = self.classes_
        return net

    def _float_model_has_proba(self) -> bool:
        return True

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        return softmax(y + self.output_bias_, axis=1)


class NeuralNetRegressor(_NeuralNet, FHERegressorMixin, RegressorMixin, BaseEstimator):
    """Fully-connected regressor with QAT predicting in FHE; parameters in the skorch style.

    The network is trained on the standardized target; the clear side undoes it.
    See ``_NeuralNet`` for the parameters.
    """

    _skorch_class = FloatNetRegressor
    _criterion = torch.nn.MSELoss
    _client_attributes: ClassVar[dict[str, type]] = {"y_mean_": np.ndarray, "y_scale_": np.ndarray}

    def _fit_float(self, X: np.ndarray, y: np.ndarray, **fit_params: Any) -> skorch.NeuralNet:
        y2d = y.reshape(len(y), -1)
        self.y_mean_ = y2d.mean(axis=0)
        std = y2d.std(axis=0)
        self.y_scale_ = np.where(std > 0, std, 1.0)
        net = self._train(X, ((y2d - self.y_mean_) / self.y_scale_).astype(np.float32), y2d.shape[1], fit_params)
        net.target_mean_, net.target_scale_, net.single_target_ = self.y_mean_, self.y_scale_, y.ndim == 1
        return net

    def post_processing(self, y: np.ndarray) -> np.ndarray:
        return (y + self.output_bias_) * self.y_scale_ + self.y_mean_


__all__ = ["NeuralNetClassifier", "NeuralNetRegressor"]

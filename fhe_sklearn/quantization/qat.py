"""Quantization-aware training (QAT) of fully-connected networks, in torch.

:class:`SparseQuantMLP` trains on exactly the integer grid its FHE circuit computes on:

- the input is fake-quantized per feature to ``n_a_bits`` (torch.ao ``FakeQuantize`` with a
  moving-average min/max observer), every hidden activation per tensor to ``n_a_bits``;
- each layer's weights, multiplied by the scales of the layer's input (so the circuit needs
  no re-scaling), are fake-quantized per neuron, symmetric, to ``n_w_bits``;
- hidden activations enter the next layer centred, ``q - 2**(n_a_bits - 1)``, which halves
  the worst-case accumulator of a ReLU network;
- :meth:`SparseQuantMLP.prune` keeps, per neuron, the largest-magnitude connections whose
  worst-case integer accumulator fits ``n_accum_bits`` (signed) and zeroes the others for
  good. The estimators call it after every epoch of the second half of training (the
  first half trains dense), so the pruned network is what is fine-tuned and lowered.

Biases stay float: the FHE lowering folds them into the activation tables and the clear
output, so they never widen an accumulator.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
}


def activation_module(activation: str | type[nn.Module]) -> nn.Module:
    """An activation from its name (see ``ACTIVATIONS``) or a ``torch.nn.Module`` class."""
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation_function {activation!r}; known: {sorted(ACTIVATIONS)}")
        return ACTIVATIONS[activation]()
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    raise TypeError(f"activation_function must be a name or a torch.nn.Module class, got {activation!r}")


def _activation_quantizer(n_bits: int, n_features: int | None = None) -> FakeQuantize:
    """Unsigned ``n_bits`` fake-quantizer; per feature (axis 1) when ``n_features`` is given."""
    if n_features is None:
        return FakeQuantize(
            observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=2**n_bits - 1, dtype=torch.quint8
        )
    return FakeQuantize(
        observer=MovingAveragePerChannelMinMaxObserver,
        quant_min=0,
        quant_max=2**n_bits - 1,
        dtype=torch.quint8,
        qscheme=torch.per_channel_affine,
        ch_axis=1,
    )


def quantize_weight(weight: torch.Tensor, n_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row (per-neuron) fake quantization: (fake-quantized weight, row scales).

    The straight-through estimator of ``fake_quantize_per_channel_affine`` trains the float
    weight; scales follow each row's largest magnitude and get no gradient.
    """
    q_max = 2 ** (n_bits - 1) - 1
    scale = (weight.detach().abs().amax(dim=1) / q_max).clamp_min(1e-12)
    zero = torch.zeros(weight.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero, 0, -q_max, q_max), scale


class SparseQuantMLP(nn.Module):
    """A fully-connected network trained with fake quantization and accumulator pruning.

    Parameters
    ----------
    n_features, n_outputs : int
    n_layers : int
        Linear layers (``n_layers - 1`` hidden layers), at least 1.
    n_hidden_neurons_multiplier : int
        Hidden width = this × ``n_features``.
    activation_function : str or torch.nn.Module class
    n_w_bits, n_a_bits : int
        Bits of the weights and of the input/activations.
    n_accum_bits : int
        Signed bit-width every layer's worst-case integer accumulator must fit.
    """

    def __init__(
        self,
        n_features: int,
        n_outputs: int,
        n_layers: int = 2,
        n_hidden_neurons_multiplier: int = 2,
        activation_function: str | type[nn.Module] = "relu",
        n_w_bits: int = 3,
        n_a_bits: int = 3,
        n_accum_bits: int = 8,
        input_range: tuple[Any, Any] | None = None,
    ) -> None:
        super().__init__()
        hidden = n_hidden_neurons_multiplier * n_features
        sizes = [n_features] + [hidden] * (n_layers - 1) + [n_outputs]
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(sizes))
        for linear in self.linears:
            linear.register_buffer("mask", torch.ones_like(linear.weight))
        self.activation = activation_module(activation_function)
        self.input_quantizer = _activation_quantizer(n_a_bits, n_features)
        self.activation_quantizers = nn.ModuleList(_activation_quantizer(n_a_bits) for _ in range(n_layers - 1))
        self.n_w_bits, self.n_a_bits, self.n_accum_bits = n_w_bits, n_a_bits, n_accum_bits
        self.observed = [*self.activation_quantizers]
        if input_range is None:
            self.observed.append(self.input_quantizer)
        else:
            # a fixed grid from the training data's per-feature quantiles: a moving min/max
            # would spend the few levels of a 3-bit input on outliers
            lo, hi = (torch.as_tensor(np.asarray(v), dtype=torch.float32) for v in input_range)
            self.input_quantizer.activation_post_process(torch.stack([lo, hi]))
            scale, zero_point = self.input_quantizer.calculate_qparams()
            self.input_quantizer.scale.resize_(scale.shape).copy_(scale)
            self.input_quantizer.zero_point.resize_(zero_point.shape).copy_(zero_point)
            self.input_quantizer.disable_observer()

    @property
    def center(self) -> int:
        """Offset subtracted from hidden activation codes before the next layer."""
        return 2 ** (self.n_a_bits - 1)

    def train(self, mode: bool = True) -> SparseQuantMLP:
        # ranges are observed while training only; evaluation must not move the grid
        super().train(mode)
        for quantizer in self.observed:
            quantizer.enable_observer(mode)
        return self

    def integer_weights(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``index``'s weights on its integer input: (fake-quantized, row scales)."""
        linear = self.linears[index]
        quantizer = self.input_quantizer if index == 0 else self.activation_quantizers[index - 1]
        return quantize_weight(linear.weight * linear.mask * quantizer.scale, self.n_w_bits)

    def input_integer_range(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Bounds of the integers layer ``index`` multiplies its weights with."""
        top = 2**self.n_a_bits - 1
        if index == 0:
            zero_point = self.input_quantizer.zero_point.to(torch.float32)
            return -zero_point, top - zero_point
        n = self.linears[index].in_features
        return torch.full((n,), -float(self.center)), torch.full((n,), float(top - self.center))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # each layer multiplies the integers the circuit sees (fake-quantized values are
        # (code - zero point) * scale: on the grid already, so no rounding that would block
        # the gradient) with weights that carry the input scales
        x = self.input_quantizer(x) / self.input_quantizer.scale
        for index, linear in enumerate(self.linears):
            x = nn.functional.linear(x, self.integer_weights(index)[0], linear.bias)
            if index < len(self.linears) - 1:
                quantizer = self.activation_quantizers[index]
                x = quantizer(self.activation(x)) / quantizer.scale + (quantizer.zero_point - self.center)
        return x

    @torch.no_grad()
    def prune(self) -> list[float]:
        """Zero, per neuron, the smallest-magnitude weights that would let the worst-case
        accumulator overflow ``n_accum_bits``; returns the fraction kept per layer."""
        limit = 2 ** (self.n_accum_bits - 1)
        kept = []
        for index, linear in enumerate(self.linears):
            weight, scale = self.integer_weights(index)
            integers = torch.round(weight / scale[:, None])
            lo, hi = self.input_integer_range(index)
            order = torch.argsort(weight.abs(), dim=1, descending=True, stable=True)
            w = torch.gather(integers, 1, order)
            a, b = w * lo[order], w * hi[order]
            fits = (torch.cumsum(torch.minimum(a, b), 1) >= -limit) & (torch.cumsum(torch.maximum(a, b), 1) < limit)
            fits = torch.cummin(fits.to(torch.int8), dim=1).values.to(linear.mask.dtype)
            mask = torch.zeros_like(linear.mask).scatter_(1, order, fits)
            linear.mask.mul_(mask)
            linear.weight.mul_(linear.mask)
            kept.append(float(linear.mask.mean()))
        return kept

    def export(self) -> dict[str, Any]:
        """The trained integer network, for the FHE lowering (numpy, float64 scales)."""
        layers = []
        for index, linear in enumerate(self.linears):
            weight, scale = self.integer_weights(index)
            layers.append(
                {
                    "weight": torch.round(weight / scale[:, None]).to(torch.int64).numpy().T,
                    "scale": scale.double().numpy(),
                    "bias": linear.bias.detach().double().numpy(),
                }
            )
        # per-tensor (scale, zero point) of each hidden activation
        hidden = [(float(q.scale), int(q.zero_point)) for q in self.activation_quantizers]
        return {
            "input_scale": self.input_quantizer.scale.double().numpy(),
            "input_zero_point": self.input_quantizer.zero_point.numpy().astype(np.int64),
            "layers": layers,
            "hidden_quantizers": hidden,
            "center": self.center,
            "n_a_bits": self.n_a_bits,
        }

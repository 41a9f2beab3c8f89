"""Plain ``torch.nn`` building blocks. Nothing here knows about Pyro or probability."""
from typing import Sequence

import torch
from torch import nn

from .errors import ConfigError

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def activation_class(name: str):
    """Look up an activation by name; unknown names raise a ConfigError listing the valid ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(
            f"unknown activation {name!r}; choose one of: {', '.join(sorted(ACTIVATIONS))}"
        ) from None


class MLP(nn.Sequential):
    """``in_dim -> hidden[0] -> ... -> hidden[-1] -> out_dim``, an activation after every hidden layer.

    Accepts inputs with any number of leading batch dimensions (e.g. ``(particles, batch, in_dim)``).
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh"):
        act = activation_class(activation)
        sizes = [int(in_dim), *[int(h) for h in hidden], int(out_dim)]
        if any(s <= 0 for s in sizes):
            raise ConfigError(f"layer sizes must be positive, got {sizes}")
        layers = []
        for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(sizes) - 2:
                layers.append(act())
        super().__init__(*layers)
        self.in_dim, self.out_dim = sizes[0], sizes[-1]


def check_input_dim(x: torch.Tensor, expected: int, what: str = "x") -> None:
    """Raise a ConfigError unless ``x`` has shape ``(..., expected)``."""
    if x.dim() < 1 or x.shape[-1] != expected:
        raise ConfigError(
            f"{what} has shape {tuple(x.shape)} but the network expects (..., {expected})"
        )

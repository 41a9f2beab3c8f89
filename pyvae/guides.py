"""Variational families q(z|x).

A guide family is an ``nn.Module`` whose ``forward(x)`` maps a batch ``x`` of shape
``(batch, x_dim)`` to a distribution over z with batch shape ``(batch,)`` and event shape
``(z_dim,)``, supporting ``rsample`` and ``log_prob``. ``VAE.guide`` samples site ``"z"`` from it.
"""
from typing import Sequence

import torch
from torch import nn

import pyro.distributions as dist

from .errors import ConfigError
from .nets import MLP


class GuideFamily(nn.Module):
    """Base class: an amortized q(z|x)."""

    def __init__(self, x_dim: int, z_dim: int):
        super().__init__()
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)

    def forward(self, x):
        raise NotImplementedError


class Diagonal(GuideFamily):
    """Mean-field Gaussian: q(z|x) = N(mu(x), diag(sigma(x)^2)).

    One MLP outputs [mu, log sigma]; sigma = exp(log sigma).
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] = (200, 200),
                 activation: str = "tanh"):
        super().__init__(x_dim, z_dim)
        self.net = MLP(x_dim, hidden, 2 * self.z_dim, activation)

    def loc_scale(self, x):
        loc, log_scale = self.net(x).chunk(2, dim=-1)
        return loc, log_scale.exp()

    def forward(self, x):
        loc, scale = self.loc_scale(x)
        return dist.Normal(loc, scale).to_event(1)


GUIDES = {"diagonal": Diagonal}


def make_guide(spec, x_dim: int, z_dim: int, hidden=(200, 200), activation="tanh",
               **options) -> GuideFamily:
    """A guide family from its name (see ``GUIDES``) or a ``GuideFamily`` instance."""
    if isinstance(spec, GuideFamily):
        return spec
    if isinstance(spec, str) and spec in GUIDES:
        return GUIDES[spec](x_dim, z_dim, hidden=hidden, activation=activation, **options)
    raise ConfigError(f"unknown guide {spec!r}; choose one of: {', '.join(sorted(GUIDES))}")

"""Priors p(z). A prior is an ``nn.Module`` whose ``forward()`` returns a distribution over z
with batch shape ``()`` and event shape ``(z_dim,)``; the model's ``"data"`` plate expands it."""
import torch
from torch import nn

import pyro.distributions as dist

from .errors import ConfigError


class Prior(nn.Module):
    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = int(z_dim)

    def forward(self):
        raise NotImplementedError


class StandardNormal(Prior):
    """p(z) = N(0, I)."""

    def __init__(self, z_dim: int):
        super().__init__(z_dim)
        # buffers, not parameters: they follow .to(device) and are saved, but are not learned
        self.register_buffer("loc", torch.zeros(self.z_dim))
        self.register_buffer("scale", torch.ones(self.z_dim))

    def forward(self):
        return dist.Normal(self.loc, self.scale).to_event(1)


PRIORS = {"normal": StandardNormal}


def make_prior(spec, z_dim: int) -> Prior:
    """A prior from its name (see ``PRIORS``) or a ``Prior`` instance."""
    if isinstance(spec, Prior):
        return spec
    if isinstance(spec, str) and spec in PRIORS:
        return PRIORS[spec](z_dim)
    raise ConfigError(f"unknown prior {spec!r}; choose one of: {', '.join(sorted(PRIORS))}")

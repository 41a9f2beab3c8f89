"""Observation models p(x|z): turn the decoder's output into a distribution over x.

A likelihood is a small ``nn.Module`` with two jobs:
``param_dim(x_dim)`` says how many numbers per datapoint the decoder must output, and
``forward(decoder_output)`` returns a Pyro distribution whose event shape is ``(x_dim,)``.
"""
import torch
import torch.nn.functional as F
from torch import nn

import pyro.distributions as dist

from .errors import ConfigError


class _BernoulliLogits(dist.Bernoulli):
    """Bernoulli with a cheaper log-density.

    log p(x | logits) = x * logits - softplus(logits), summed later over pixels.
    Same value as ``-binary_cross_entropy_with_logits``, with fewer passes over the
    (particles x batch x pixels) tensor; on importance-sampling workloads this elementwise
    work, not the decoder's matmuls, dominates the cost.
    """

    def log_prob(self, value):
        if self._validate_args:
            self._validate_sample(value)
        logits, value = torch.broadcast_tensors(self.logits, value)
        return value * logits - F.softplus(logits)


class Likelihood(nn.Module):
    """Base class: decoder output -> p(x|z) with event shape ``(x_dim,)``."""

    #: data must lie in {0, 1} (True) or in [0, 1] (False); None means any real value
    binary_data = None

    def param_dim(self, x_dim: int) -> int:
        raise NotImplementedError

    def forward(self, decoder_output: torch.Tensor):
        raise NotImplementedError


class Bernoulli(Likelihood):
    """x_i ~ Bernoulli(sigmoid(logit_i)) independently per pixel. Needs binary data."""

    binary_data = True

    def param_dim(self, x_dim):
        return x_dim

    def forward(self, logits):
        return _BernoulliLogits(logits=logits, validate_args=False).to_event(1)


LIKELIHOODS = {"bernoulli": Bernoulli}


def make_likelihood(spec) -> Likelihood:
    """A likelihood from its name (see ``LIKELIHOODS``) or a ``Likelihood`` instance."""
    if isinstance(spec, Likelihood):
        return spec
    if isinstance(spec, str) and spec in LIKELIHOODS:
        return LIKELIHOODS[spec]()
    raise ConfigError(
        f"unknown likelihood {spec!r}; choose one of: {', '.join(sorted(LIKELIHOODS))}"
    )

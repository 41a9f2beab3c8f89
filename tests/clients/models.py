"""Pyro models written as a user of Pyro writes them, each with its log p(x) in closed form.

Each class holds a ``model(x)``, guides for it, ``exact_log_px(x)`` (per datapoint) and
``simulate(n)`` (data drawn from the model). Float64 throughout: the closed forms are compared
to Monte-Carlo estimates.
"""
import math

import torch

import pyro
import pyro.distributions as dist
from pyro.infer import config_enumerate


class EnumeratedMixture:
    """A three-component mixture with a continuous offset, per datapoint:

        y ~ Categorical(pi),  z ~ N(0, I_D),  x | y, z ~ N(mu_y + z, s^2 I_D),

    so that p(x) = sum_y pi_y N(x; mu_y, (1 + s^2) I_D). The model marks y for enumeration
    (``config_enumerate``, the ``TraceEnum_ELBO`` pattern); the guides sample z only. The exact
    posterior is the mixture p(z|x) = sum_y p(y|x) N(z; (x - mu_y) / (1 + s^2), s^2 / (1 + s^2)).
    """

    def __init__(self, noise: float = 0.5):
        self.pi = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
        self.mu = torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, -1.5]], dtype=torch.float64)
        self.noise = noise
        self.dim = self.mu.shape[1]

    @config_enumerate
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(self.pi))
            z = pyro.sample("z", dist.Normal(torch.zeros(self.dim, dtype=torch.float64), 1.0)
                            .to_event(1))
            pyro.sample("x", dist.Normal(self.mu[y] + z, self.noise).to_event(1), obs=x)

    def model_unmarked(self, x):
        """The same model without the enumeration mark: y is a latent the guide lacks."""
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(self.pi))
            z = pyro.sample("z", dist.Normal(torch.zeros(self.dim, dtype=torch.float64), 1.0)
                            .to_event(1))
            pyro.sample("x", dist.Normal(self.mu[y] + z, self.noise).to_event(1), obs=x)

    def _posterior_parts(self, x):
        var = 1.0 + self.noise ** 2
        logits = self.pi.log() + dist.Normal(self.mu, math.sqrt(var)).log_prob(x[:, None]).sum(-1)
        loc = (x[:, None] - self.mu) / var  # (N, 3, D)
        return logits, loc, self.noise / math.sqrt(var)

    def exact_guide(self, x):
        logits, loc, scale = self._posterior_parts(x)
        with pyro.plate("data", x.shape[0]):
            components = dist.Normal(loc, scale).to_event(1)
            pyro.sample("z", dist.MixtureSameFamily(dist.Categorical(logits=logits), components))

    def broad_guide(self, x):
        """q(z|x) = N(0, 2^2 I): covers every component, far from the posterior."""
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], self.dim, dtype=torch.float64),
                                         2.0).to_event(1))

    def guide_with_y(self, x):
        """y in the guide, from p(y|x), and z from its exact conditional: the exact posterior."""
        logits, loc, scale = self._posterior_parts(x)
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(logits=logits))
            chosen = loc[torch.arange(x.shape[0]), y]  # (N, D), or (particles, N, D)
            pyro.sample("z", dist.Normal(chosen, scale).to_event(1))

    def exact_log_px(self, x):
        logits, _, _ = self._posterior_parts(x)
        return torch.logsumexp(logits, -1)

    def simulate(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        y = torch.multinomial(self.pi, n, replacement=True, generator=g)
        z = torch.randn(n, self.dim, generator=g, dtype=torch.float64)
        return self.mu[y] + z + self.noise * torch.randn(n, self.dim, generator=g, dtype=torch.float64)

"""The variational autoencoder: a generative model and a guide, written as Pyro functions.

    model:  z ~ p(z)                    (site "z", inside plate "data")
            x ~ p(x | decoder(z))       (site "x", observed)
    guide:  z ~ q(z | x)                (site "z", inside plate "data")

Training maximises the ELBO, E_q[log p(x, z) - log q(z|x)] <= log p(x); the distance between
the two is KL(q(z|x) || p(z|x)). The names "data", "z" and "x" are part of the public API:
``pyvae.evaluate`` and user code find the sites by them.
"""
from typing import Sequence

import torch
from torch import nn

import pyro

from .errors import ConfigError
from .guides import GuideFamily, make_guide
from .likelihoods import make_likelihood
from .nets import MLP, check_input_dim
from .priors import make_prior


class VAE(nn.Module):
    """A VAE with an MLP decoder and swappable prior, likelihood and variational family.

    Args:
        x_dim: size of a flattened datapoint (784 for 28x28 images).
        z_dim: size of the latent code.
        hidden: hidden layer sizes of the encoder; the decoder mirrors them.
        activation: nonlinearity of both MLPs ("tanh", "relu", ...).
        likelihood: p(x|z), a name from ``pyvae.likelihoods.LIKELIHOODS`` or a ``Likelihood``.
        guide: q(z|x), a name from ``pyvae.guides.GUIDES`` or a ``GuideFamily``.
        prior: p(z), a name from ``pyvae.priors.PRIORS`` or a ``Prior``.
        **guide_options: passed to the guide family's constructor when ``guide`` is a name.
    """

    def __init__(self, x_dim: int = 784, z_dim: int = 50, hidden: Sequence[int] = (200, 200),
                 activation: str = "tanh", likelihood="bernoulli", guide="diagonal",
                 prior="normal", **guide_options):
        super().__init__()
        if int(x_dim) <= 0 or int(z_dim) <= 0:
            raise ConfigError(f"x_dim and z_dim must be positive, got x_dim={x_dim}, z_dim={z_dim}")
        self.x_dim, self.z_dim = int(x_dim), int(z_dim)
        hidden = tuple(int(h) for h in hidden)
        self.prior = make_prior(prior, self.z_dim)
        self.likelihood = make_likelihood(likelihood)
        self.decoder = MLP(self.z_dim, hidden[::-1], self.likelihood.param_dim(self.x_dim),
                           activation)
        self.encoder = make_guide(guide, self.x_dim, self.z_dim, hidden=hidden,
                                  activation=activation, **guide_options)
        if self.encoder.z_dim != self.z_dim or self.encoder.x_dim != self.x_dim:
            raise ConfigError(
                f"guide has x_dim={self.encoder.x_dim}, z_dim={self.encoder.z_dim}; "
                f"the VAE has x_dim={self.x_dim}, z_dim={self.z_dim}"
            )
        # what it takes to build this VAE again (used by checkpoints); None when an object was
        # passed for a component, since objects cannot be stored as plain config
        named = all(isinstance(c, str) for c in (likelihood, guide, prior))
        self.config = dict(x_dim=self.x_dim, z_dim=self.z_dim, hidden=list(hidden),
                           activation=activation, likelihood=likelihood, guide=guide,
                           prior=prior, **guide_options) if named else None

    @classmethod
    def from_config(cls, config: dict) -> "VAE":
        return cls(**config)

    def model(self, x: torch.Tensor) -> None:
        """p(z) p(x|z): x has shape (batch, x_dim)."""
        pyro.module("decoder", self.decoder)
        pyro.module("prior", self.prior)
        pyro.module("likelihood", self.likelihood)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(self.decoder(z)), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        """q(z|x): x has shape (batch, x_dim)."""
        check_input_dim(x, self.x_dim)
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.encoder(x))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of p(x | z) at one z ~ q(z|x)."""
        z = self.encoder(x).sample()
        return self.likelihood(self.decoder(z)).mean

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """Means of p(x | z) for n draws z ~ p(z)."""
        z = self.prior().sample((n,))
        return self.likelihood(self.decoder(z)).mean

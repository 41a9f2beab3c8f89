"""A linear-Gaussian latent variable model, where everything variational inference estimates is
known exactly:

    z ~ N(0, I_d),    x | z ~ N(W z + b, sigma^2 I_D)

    log p(x)  = log N(x; b, W W^T + sigma^2 I)                        (exact marginal likelihood)
    p(z | x)  = N(mu, S),  S = (I + W^T W / sigma^2)^-1,  mu = S W^T (x - b) / sigma^2

so an importance-weighted estimate that samples from the exact posterior equals log p(x) for any
number of samples, and the ELBO of any Gaussian q is log p(x) - KL(q || p(z|x)) in closed form.
The model uses the same site names as ``pyvae.VAE`` ("data" plate, "z", "x"), so guides,
trainers and evaluation code work on it unchanged.
"""

import torch
from torch import nn

import pyro
import pyro.distributions as dist

from ..errors import ConfigError


class LinearGaussian(nn.Module):
    """The model p(z) p(x|z) above, with fixed (non-learned) W, b, sigma.

    Args:
        weight: W, shape (x_dim, z_dim).
        bias: b, shape (x_dim,).
        sigma: observation noise standard deviation (> 0).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, sigma: float):
        super().__init__()
        weight, bias = torch.as_tensor(weight), torch.as_tensor(bias)
        if weight.dim() != 2 or bias.shape != weight.shape[:1]:
            raise ConfigError(f"need W of shape (x_dim, z_dim) and b of shape (x_dim,), got "
                              f"{tuple(weight.shape)} and {tuple(bias.shape)}")
        if not sigma > 0:
            raise ConfigError(f"sigma must be positive, got {sigma}")
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.sigma = float(sigma)
        self.x_dim, self.z_dim = weight.shape

    @classmethod
    def random(cls, x_dim: int = 5, z_dim: int = 2, sigma: float = 0.5, seed: int = 0,
               dtype=torch.float64) -> "LinearGaussian":
        """W with N(0, 1) entries, b with N(0, 1) entries, from a seeded generator.

        Args:
            x_dim: D, the size of x.
            z_dim: d, the size of z.
            sigma: the observation noise standard deviation (> 0).
            seed: the seed of the generator that draws W (first) and b.
            dtype: the torch dtype of W and b (float64 keeps the exact answers exact to
                about 1e-12 nats).
        """
        g = torch.Generator().manual_seed(seed)
        return cls(torch.randn(x_dim, z_dim, generator=g, dtype=dtype),
                   torch.randn(x_dim, generator=g, dtype=dtype), sigma)

    # --- the Pyro model -------------------------------------------------------------------
    def prior(self):
        """p(z) = N(0, I_d), event shape (z_dim,)."""
        return dist.Normal(torch.zeros_like(self.weight[0]), torch.ones_like(self.weight[0])).to_event(1)

    def likelihood(self, z):
        """p(x|z) = N(W z + b, sigma^2 I_D).

        Args:
            z: (..., z_dim) tensor of latents.

        Returns:
            a Normal with batch shape (...) and event shape (x_dim,).
        """
        return dist.Normal(z @ self.weight.T + self.bias, self.sigma).to_event(1)

    def model(self, x: torch.Tensor) -> None:
        """p(z) p(x|z) with a "data" plate over x's first dimension.

        Args:
            x: (N, x_dim) tensor of data in W's dtype.
        """
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self.prior())
            pyro.sample("x", self.likelihood(z), obs=x)

    # --- exact answers ----------------------------------------------------------------------
    def marginal(self) -> dist.MultivariateNormal:
        """p(x) = N(b, W W^T + sigma^2 I)."""
        cov = self.weight @ self.weight.T + self.sigma ** 2 * torch.eye(self.x_dim, dtype=self.weight.dtype)
        return dist.MultivariateNormal(self.bias, covariance_matrix=cov)

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log p(x) per datapoint.

        Args:
            x: (N, x_dim) tensor of data.

        Returns:
            (N,) tensor: log N(x; b, W W^T + sigma^2 I) in nats.
        """
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> dist.MultivariateNormal:
        """Exact p(z|x) = N(mu, S) per datapoint: batch shape (N,), event shape (z_dim,).

        Args:
            x: (N, x_dim) tensor of data.
        """
        precision = torch.eye(self.z_dim, dtype=self.weight.dtype) + self.weight.T @ self.weight / self.sigma ** 2
        cov = torch.linalg.inv(precision)
        loc = (x - self.bias) @ self.weight @ cov.T / self.sigma ** 2
        return dist.MultivariateNormal(loc, covariance_matrix=cov.expand(x.shape[0], -1, -1))

    def exact_guide(self, x: torch.Tensor) -> None:
        """A Pyro guide sampling the exact posterior: its ELBO equals log p(x).

        Args:
            x: (N, x_dim) tensor of data.
        """
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    def best_diagonal_kl(self) -> float:
        """KL(q* || p(z|x)) for the best mean-field Gaussian q* (the same for every x).

        For a Gaussian posterior with precision L, the KL-optimal diagonal q has the posterior
        mean and variances 1/L_ii, giving KL = 1/2 (sum_i log L_ii - log det L).
        """
        precision = torch.eye(self.z_dim, dtype=self.weight.dtype) + self.weight.T @ self.weight / self.sigma ** 2
        return 0.5 * float(torch.log(torch.diagonal(precision)).sum() - torch.logdet(precision))

    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """n datapoints x ~ p(x), from a seeded generator.

        Args:
            n: the number of datapoints.
            seed: the seed of the generator (z first, then the noise).

        Returns:
            (n, x_dim) tensor in W's dtype.
        """
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=g, dtype=self.weight.dtype)
        noise = torch.randn(n, self.x_dim, generator=g, dtype=self.weight.dtype)
        return z @ self.weight.T + self.bias + self.sigma * noise



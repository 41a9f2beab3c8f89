"""A Pyro model and guide written as a user writes them: their own nn.Modules, site and plate
names of their own ("rows", "code", "pixels"), and a constrained ``pyro.param``."""
import torch
from torch import nn

import pyro
import pyro.distributions as dist
from pyro.distributions import constraints


class UserPair:
    """p(code) = N(0, I), p(pixels | code) = N(decoder(code), noise^2); q(code | pixels) a
    diagonal normal from the encoder, or a point mass at its mean (``point``: no Monte-Carlo
    noise). ``seed`` draws the nets' initial weights."""

    def __init__(self, x_dim: int = 12, z_dim: int = 2, seed: int = 0, point: bool = False):
        torch.manual_seed(seed)
        self.decoder = nn.Sequential(nn.Linear(z_dim, 16), nn.Tanh(), nn.Linear(16, x_dim))
        self.encoder = nn.Sequential(nn.Linear(x_dim, 16), nn.Tanh(), nn.Linear(16, 2 * z_dim))
        self.z_dim, self.point = z_dim, point

    def model(self, x):
        pyro.module("decoder", self.decoder)
        noise = pyro.param("noise", torch.tensor(0.5), constraint=constraints.positive)
        with pyro.plate("rows", x.shape[0]):
            code = pyro.sample("code", dist.Normal(torch.zeros(self.z_dim), 1.0).to_event(1))
            pyro.sample("pixels", dist.Normal(self.decoder(code), noise).to_event(1), obs=x)

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("rows", x.shape[0]):
            loc, log_scale = self.encoder(x).chunk(2, dim=-1)
            if self.point:
                pyro.sample("code", dist.Delta(loc, event_dim=1))
            else:
                pyro.sample("code", dist.Normal(loc, log_scale.exp()).to_event(1))


def user_data(n: int = 200, x_dim: int = 12, seed: int = 1) -> torch.Tensor:
    """Real values from a 2-dimensional linear map plus noise."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(2, x_dim, generator=g)
    return torch.randn(n, 2, generator=g) @ w + 0.3 * torch.randn(n, x_dim, generator=g)

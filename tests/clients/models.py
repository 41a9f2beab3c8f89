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


class GaussianLatent:
    """z ~ N(0, I_D), x | z ~ N(z, s^2 I_D) per datapoint: p(x) = N(x; 0, (1 + s^2) I_D) and
    p(z|x) = N(x / (1 + s^2), s^2 / (1 + s^2) I_D), a family ``AutoNormal`` holds exactly.

    ``model`` has a plain data plate; ``subsampled_model`` and ``subsampled_guide`` a plate of
    ``len(x)`` that draws ``subsample_size`` rows per call (the model indexes x itself).
    """

    def __init__(self, dim: int = 2, noise: float = 0.5, subsample_size: int = 16):
        self.dim, self.noise, self.subsample_size = dim, noise, subsample_size

    def _prior(self):
        return dist.Normal(torch.zeros(self.dim, dtype=torch.float64), 1.0).to_event(1)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", self._prior())
            pyro.sample("x", dist.Normal(z, self.noise).to_event(1), obs=x)

    def subsampled_model(self, x):
        with pyro.plate("data", x.shape[0], subsample_size=self.subsample_size) as rows:
            z = pyro.sample("z", self._prior())
            pyro.sample("x", dist.Normal(z, self.noise).to_event(1), obs=x[rows])

    def posterior(self, x):
        var = 1.0 + self.noise ** 2
        return dist.Normal(x / var, self.noise / math.sqrt(var)).to_event(1)

    def exact_guide(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", self.posterior(x))

    def subsampled_guide(self, x):
        with pyro.plate("data", x.shape[0], subsample_size=self.subsample_size) as rows:
            pyro.sample("z", self.posterior(x[rows]))

    def set_exact(self, auto_normal, x):
        """Set a fitted ``AutoNormal``'s per-datapoint parameters to the exact posterior of x."""
        store = pyro.get_param_store()
        var = 1.0 + self.noise ** 2
        store[f"{type(auto_normal).__name__}.locs.z"] = x / var
        store[f"{type(auto_normal).__name__}.scales.z"] = torch.full_like(
            x, self.noise / math.sqrt(var))

    def exact_log_px(self, x):
        return dist.Normal(torch.zeros_like(x), math.sqrt(1.0 + self.noise ** 2)).log_prob(x).sum(-1)

    def simulate(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        return math.sqrt(1.0 + self.noise ** 2) * torch.randn(n, self.dim, generator=g,
                                                             dtype=torch.float64)


class TwoLayerLinearGaussian:
    """Two latent layers z2 -> z -> x, per datapoint:

        z2 ~ N(0, I_2),  z | z2 ~ N(A z2, s1^2 I_3),  x | z ~ N(B z, s2^2 I_4),

    so that z ~ N(0, S_z = A A^T + s1^2 I), x ~ N(0, S_x = B S_z B^T + s2^2 I), and the exact
    posterior factorises as p(z|x) p(z2|z) (x depends on z2 only through z):

        p(z|x)  = N(S_z B^T S_x^-1 x,  S_z - S_z B^T S_x^-1 B S_z),
        p(z2|z) = N(A^T S_z^-1 z,      I - A^T S_z^-1 A).
    """

    def __init__(self, s1: float = 0.7, s2: float = 0.5):
        g = torch.Generator().manual_seed(11)
        self.A = torch.randn(3, 2, generator=g, dtype=torch.float64)
        self.B = torch.randn(4, 3, generator=g, dtype=torch.float64)
        self.s1, self.s2 = s1, s2
        eye = torch.eye
        self.Sz = self.A @ self.A.T + s1 ** 2 * eye(3, dtype=torch.float64)
        self.Sx = self.B @ self.Sz @ self.B.T + s2 ** 2 * eye(4, dtype=torch.float64)
        self.Kz = self.Sz @ self.B.T @ torch.linalg.inv(self.Sx)  # E[z|x] = Kz x
        self.Pz = self.Sz - self.Kz @ self.B @ self.Sz
        self.M = self.A.T @ torch.linalg.inv(self.Sz)  # E[z2|z] = M z
        self.Q = eye(2, dtype=torch.float64) - self.M @ self.A

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1))
            z = pyro.sample("z", dist.Normal(z2 @ self.A.T, self.s1).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.B.T, self.s2).to_event(1), obs=x)

    def exact_guide(self, x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.MultivariateNormal(x @ self.Kz.T, self.Pz))
            pyro.sample("z2", dist.MultivariateNormal(z @ self.M.T, self.Q))

    def diagonal_params(self, shift: float = 0.1, requires_grad: bool = False):
        """Parameters of a diagonal guide q(z|x) q(z2|z) near the posterior (not at it): means
        off by ``shift`` (relative in x), scales wider by a factor exp(2 shift)."""
        params = {"W": (1 + shift) * self.Kz, "b": torch.full((3,), shift, dtype=torch.float64),
                  "log_sz": 0.5 * self.Pz.diagonal().log() + 2 * shift,
                  "V": (1 - shift) * self.M, "c": torch.full((2,), -shift, dtype=torch.float64),
                  "log_s2": 0.5 * self.Q.diagonal().log() + 2 * shift}
        return {k: v.clone().requires_grad_(requires_grad) for k, v in params.items()}

    def diagonal_guide(self, params):
        def guide(x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(x @ params["W"].T + params["b"],
                                                 params["log_sz"].exp()).to_event(1))
                pyro.sample("z2", dist.Normal(z @ params["V"].T + params["c"],
                                              params["log_s2"].exp()).to_event(1))
        return guide

    def diagonal_kl(self, params, x):
        """KL(q(z, z2|x) || p(z, z2|x)) per datapoint for ``diagonal_guide(params)``: both joints
        are Gaussian, [z; z2] with z2 = V z + c + noise."""
        with torch.no_grad():
            W, b, V, c = params["W"], params["b"], params["V"], params["c"]
            Sq = torch.diag(params["log_sz"].exp() ** 2)
            T = torch.diag(params["log_s2"].exp() ** 2)
            mq = x @ W.T + b
            q_mean = torch.cat([mq, mq @ V.T + c], -1)
            q_cov = torch.cat([torch.cat([Sq, Sq @ V.T], 1),
                               torch.cat([V @ Sq, V @ Sq @ V.T + T], 1)], 0)
            mp = x @ self.Kz.T
            p_mean = torch.cat([mp, mp @ self.M.T], -1)
            p_cov = torch.cat([torch.cat([self.Pz, self.Pz @ self.M.T], 1),
                               torch.cat([self.M @ self.Pz, self.M @ self.Pz @ self.M.T + self.Q], 1)], 0)
            return torch.distributions.kl_divergence(dist.MultivariateNormal(q_mean, q_cov),
                                                     dist.MultivariateNormal(p_mean, p_cov))

    def exact_log_px(self, x):
        return dist.MultivariateNormal(torch.zeros(4, dtype=torch.float64), self.Sx).log_prob(x)

    def simulate(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        L = torch.linalg.cholesky(self.Sx)
        return torch.randn(n, 4, generator=g, dtype=torch.float64) @ L.T

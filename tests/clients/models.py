"""Models and guides written as a Pyro user writes them, each with its log p(x) in closed form
(or by quadrature).

Nothing here uses pyvae: each model is a plain Pyro function with its own site names and
plate "data" over the rows of x, the way the client tests call pyvae on them. The classes hold a
``model(x)``, guides for it, ``exact_log_px(x)`` (per datapoint) and, where needed,
``simulate(n)``; float64 where closed forms are compared to Monte-Carlo estimates.
"""
import math

import torch
from torch import nn

import pyro
import pyro.distributions as dist
from pyro.infer import config_enumerate


# ------------------------------------------------------------------ Pyro's VAE example, small
class Encoder(nn.Module):
    """The encoder of Pyro's examples/vae/vae.py: x -> (z_loc, z_scale)."""

    def __init__(self, z_dim, hidden_dim, x_dim):
        super().__init__()
        self.fc1 = nn.Linear(x_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, z_dim)
        self.fc22 = nn.Linear(hidden_dim, z_dim)
        self.softplus = nn.Softplus()

    def forward(self, x):
        hidden = self.softplus(self.fc1(x))
        return self.fc21(hidden), torch.exp(self.fc22(hidden))


class Decoder(nn.Module):
    """The decoder of Pyro's examples/vae/vae.py: z -> Bernoulli means of the pixels."""

    def __init__(self, z_dim, hidden_dim, x_dim):
        super().__init__()
        self.fc1 = nn.Linear(z_dim, hidden_dim)
        self.fc21 = nn.Linear(hidden_dim, x_dim)
        self.softplus = nn.Softplus()
        self.sigmoid = nn.Sigmoid()

    def forward(self, z):
        return self.sigmoid(self.fc21(self.softplus(self.fc1(z))))


class PyroExampleVAE(nn.Module):
    """Pyro's examples/vae/vae.py at toy size: sites "latent" and "obs", Bernoulli pixels.

    ``log_marginal(x)`` integrates p(x|z) p(z) over a grid of the 2-D latent space (exact to
    the grid's quadrature error, far below the Monte-Carlo errors tested against).
    """

    def __init__(self, x_dim=8, z_dim=2, hidden_dim=16, seed=0, sharpness=3.0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = Encoder(z_dim, hidden_dim, x_dim)
        self.decoder = Decoder(z_dim, hidden_dim, x_dim)
        with torch.no_grad():  # a decoder whose pixels depend strongly on z: a peaked posterior
            self.decoder.fc21.weight.mul_(sharpness)
            self.decoder.fc1.weight.mul_(sharpness)
        self.x_dim, self.z_dim = x_dim, z_dim
        self.double()

    def model(self, x):
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            z_loc = x.new_zeros(torch.Size((x.shape[0], self.z_dim)))
            z_scale = x.new_ones(torch.Size((x.shape[0], self.z_dim)))
            z = pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))
            loc_img = self.decoder.forward(z)
            pyro.sample("obs", dist.Bernoulli(loc_img, validate_args=False).to_event(1),
                        obs=x.reshape(-1, self.x_dim))

    def guide(self, x):
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            z_loc, z_scale = self.encoder.forward(x)
            pyro.sample("latent", dist.Normal(z_loc, z_scale).to_event(1))

    @torch.no_grad()
    def sample(self, n, seed=0):
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=g, dtype=torch.float64)
        return torch.bernoulli(self.decoder(z), generator=g)

    @torch.no_grad()
    def log_marginal(self, x, half_width=7.0, points=281):
        grid = torch.linspace(-half_width, half_width, points, dtype=torch.float64)
        z = torch.cartesian_prod(grid, grid)                                  # (G, 2)
        log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
        probs = self.decoder(z)                                               # (G, x_dim)
        log_lik = (torch.xlogy(x[:, None], probs) + torch.xlogy(1 - x[:, None], 1 - probs)).sum(-1)
        cell = (grid[1] - grid[0]) ** 2
        return torch.logsumexp(log_lik + log_prior, -1) + cell.log()


# ------------------------------------------------------------------ two Gaussian layers
class TwoLayerGaussian:
    """z2 ~ N(0, I_a);  z | z2 ~ N(A z2, s^2 I_b);  x | z ~ N(W z + c, sigma^2 I_m).

    Sites "z2", "z", "x". x is Gaussian: N(c, W (A A^T + s^2 I) W^T + sigma^2 I); the posterior
    of u = (z2, z) is Gaussian with precision

        Lambda = [[I + A^T A / s^2, -A^T / s^2], [-A / s^2, I / s^2 + W^T W / sigma^2]].
    """

    def __init__(self, a=2, b=3, m=5, s=0.5, sigma=0.3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.A = torch.randn(b, a, generator=g, dtype=torch.float64)
        self.W = torch.randn(m, b, generator=g, dtype=torch.float64)
        self.c = 0.5 * torch.randn(m, generator=g, dtype=torch.float64)
        self.s, self.sigma, self.a, self.b, self.m = s, sigma, a, b, m

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            z2 = pyro.sample("z2", dist.Normal(x.new_zeros(x.shape[0], self.a), 1.0).to_event(1))
            z = pyro.sample("z", dist.Normal(z2 @ self.A.T, self.s).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.c, self.sigma).to_event(1), obs=x)

    def guide(self, x):
        """A deliberately poor amortized guide: z | x off the posterior mean and too wide,
        z2 | z a fixed linear map of z (the guide samples the layers in the other order)."""
        mean = self.posterior_mean(x)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(mean[:, self.a:] + 0.3, 0.4).to_event(1))
            pyro.sample("z2", dist.Normal(0.5 * z[..., :self.a], 0.6).to_event(1))

    def sample(self, n, seed=1):
        g = torch.Generator().manual_seed(seed)
        z2 = torch.randn(n, self.a, generator=g, dtype=torch.float64)
        z = z2 @ self.A.T + self.s * torch.randn(n, self.b, generator=g, dtype=torch.float64)
        return z @ self.W.T + self.c + self.sigma * torch.randn(n, self.m, generator=g,
                                                                 dtype=torch.float64)

    def log_marginal(self, x):
        cov = self.W @ (self.A @ self.A.T + self.s ** 2 * torch.eye(self.b, dtype=torch.float64)) \
            @ self.W.T + self.sigma ** 2 * torch.eye(self.m, dtype=torch.float64)
        return dist.MultivariateNormal(self.c, covariance_matrix=cov).log_prob(x)

    def precision(self):
        a, b = self.a, self.b
        lam = torch.zeros(a + b, a + b, dtype=torch.float64)
        lam[:a, :a] = torch.eye(a, dtype=torch.float64) + self.A.T @ self.A / self.s ** 2
        lam[:a, a:] = -self.A.T / self.s ** 2
        lam[a:, :a] = -self.A / self.s ** 2
        lam[a:, a:] = torch.eye(b, dtype=torch.float64) / self.s ** 2 + self.W.T @ self.W / self.sigma ** 2
        return lam

    def posterior_mean(self, x):
        rhs = torch.cat([torch.zeros(x.shape[0], self.a, dtype=torch.float64),
                         (x - self.c) @ self.W / self.sigma ** 2], -1)
        return torch.linalg.solve(self.precision(), rhs.T).T

    def posterior(self, x):
        """p(z2, z | x) over u = (z2, z), batch (N,)."""
        cov = torch.linalg.inv(self.precision())
        return dist.MultivariateNormal(self.posterior_mean(x), covariance_matrix=cov)

    def best_diagonal_kl(self):
        """KL of the best mean-field Gaussian over all a + b coordinates to the posterior:
        variances 1 / Lambda_ii, KL = (sum_i log Lambda_ii - log det Lambda) / 2."""
        lam = self.precision()
        return float(0.5 * (lam.diagonal().log().sum() - torch.logdet(lam)))

    def best_per_site_kl(self):
        """KL of the best q(z2) q(z) (a full Gaussian per site, none across the layers):
        (log det Lambda_11 + log det Lambda_22 - log det Lambda) / 2."""
        lam, a = self.precision(), self.a
        return float(0.5 * (torch.logdet(lam[:a, :a]) + torch.logdet(lam[a:, a:]) - torch.logdet(lam)))


# ------------------------------------------------------------------ conjugate, constrained latents
class GammaPoisson:
    """rate ~ Gamma(alpha, beta) per row; x_j | rate ~ Poisson(rate), j = 1..m (site "counts").

    log p(x) = alpha log beta - log Gamma(alpha) + log Gamma(alpha + S) - (alpha + S) log(beta + m)
               - sum_j log x_j!,   S = sum_j x_j
    (for m = 1 the negative binomial); the posterior is Gamma(alpha + S, beta + m).
    The latent site "rate" has batch shape (N,) and no event dimension.
    """

    def __init__(self, alpha=2.0, beta=0.5, m=4):
        self.alpha, self.beta, self.m = alpha, beta, m

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            rate = pyro.sample("rate", dist.Gamma(x.new_tensor(self.alpha), x.new_tensor(self.beta)))
            rates = rate.unsqueeze(-1).expand(rate.shape + x.shape[-1:])
            pyro.sample("counts", dist.Poisson(rates).to_event(1), obs=x)

    def guide(self, x):
        """An amortized Gamma that undercounts: Gamma(alpha + 0.7 S, beta + m)."""
        s = x.sum(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("rate", dist.Gamma(self.alpha + 0.7 * s, x.new_tensor(self.beta + self.m)))

    def sample(self, n, seed=0):
        torch.manual_seed(seed)
        rate = dist.Gamma(torch.full((n,), self.alpha, dtype=torch.float64), self.beta).sample()
        return torch.poisson(rate.unsqueeze(-1).expand(n, self.m))

    def log_marginal(self, x):
        s = x.sum(-1)
        a, b = self.alpha, self.beta
        return (a * math.log(b) - math.lgamma(a) + torch.lgamma(a + s) - (a + s) * math.log(b + self.m)
                - torch.lgamma(x + 1).sum(-1))


class BetaBernoulli:
    """p ~ Beta(a, b) per row, as a length-1 vector (site "p", event (1,)); x_j | p ~
    Bernoulli(p), j = 1..m (site "flips").

    log p(x) = log B(a + S, b + m - S) - log B(a, b) (the beta-binomial without its binomial
    coefficient: x is the sequence, not the count); the posterior is Beta(a + S, b + m - S).
    """

    def __init__(self, a=2.0, b=3.0, m=12):
        self.a, self.b, self.m = a, b, m

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            ones = x.new_ones(x.shape[0], 1)
            p = pyro.sample("p", dist.Beta(self.a * ones, self.b * ones).to_event(1))
            pyro.sample("flips", dist.Bernoulli(p.expand(p.shape[:-1] + x.shape[-1:])).to_event(1), obs=x)

    def guide(self, x):
        """An amortized Beta that is too confident: Beta(2 (a + S), 2 (b + m - S))."""
        s = x.sum(-1, keepdim=True)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("p", dist.Beta(2 * (self.a + s), 2 * (self.b + self.m - s)).to_event(1))

    def sample(self, n, seed=0):
        torch.manual_seed(seed)
        p = dist.Beta(torch.full((n, 1), self.a, dtype=torch.float64), self.b).sample()
        return torch.bernoulli(p.expand(n, self.m))

    def log_marginal(self, x):
        s = x.sum(-1)

        def log_beta(p, q):
            return torch.lgamma(p) + torch.lgamma(q) - torch.lgamma(p + q)

        a, b = torch.tensor(self.a, dtype=torch.float64), torch.tensor(self.b, dtype=torch.float64)
        return log_beta(a + s, b + self.m - s) - log_beta(a, b)


# ------------------------------------------------------------------ a discrete site enumerated in the model
class HierarchicalMixture:
    """y ~ Categorical(weights) (enumerated in the model, never sampled by a guide);
    z | y ~ N(means_y, 1); x | z ~ N(z, 0.5^2). Sites "y", "z", "x"; z is a scalar per row.

    log p(x) = log sum_y weights_y N(x; means_y, 1 + 0.25), and for a Gaussian q(z) the ELBO
    E_q[log p(x, z) - log q(z)] with log p(x, z) = log sum_y weights_y N(z; means_y, 1) N(x; z, 0.25)
    is a 1-D integral (``elbo_by_quadrature``).
    """

    def __init__(self):
        self.weights = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
        self.means = torch.tensor([-4.0, 0.0, 4.0], dtype=torch.float64)

    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            y = pyro.sample("y", dist.Categorical(self.weights), infer={"enumerate": "parallel"})
            z = pyro.sample("z", dist.Normal(self.means[y], 1.0))
            pyro.sample("x", dist.Normal(z, 0.5), obs=x[:, 0])

    def log_marginal(self, x):
        return torch.logsumexp(self.weights.log() + dist.Normal(self.means, 1.25 ** 0.5).log_prob(x), -1)

    def elbo_by_quadrature(self, x, loc, scale, points=4001):
        """ELBO of q = N(loc, scale^2) per row, by the trapezoid rule over +-10 scales."""
        t = torch.linspace(-10, 10, points, dtype=torch.float64)
        z = loc.unsqueeze(-1) + scale.unsqueeze(-1) * t                      # (N, G)
        log_prior = torch.logsumexp(
            self.weights.log() + dist.Normal(self.means, 1.0).log_prob(z.unsqueeze(-1)), -1)
        log_joint = log_prior + dist.Normal(z, 0.5).log_prob(x)
        log_q = dist.Normal(loc.unsqueeze(-1), scale.unsqueeze(-1)).log_prob(z)
        density = log_q.exp() * scale.unsqueeze(-1)                          # q(z) dz/dt
        return torch.trapezoid(density * (log_joint - log_q), t, dim=-1)


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

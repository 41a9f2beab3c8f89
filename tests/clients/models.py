"""Models and guides written as a Pyro user writes them, with their exact log p(x).

Nothing here uses pyvae: each model is a plain Pyro function with its own site names and
plate "data" over the rows of x, the way the client tests call pyvae on them.
"""
import math

import torch
from torch import nn

import pyro
import pyro.distributions as dist


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

"""Pareto-k: the generalized Pareto fit against simulated data and scipy's maximum likelihood."""
import math

import pytest
import torch

import pyro
import pyro.distributions as dist

from pyvae.evaluate import log_likelihood
from pyvae.infer.ais import prior_guide
from pyvae.infer.psis import gpd_fit, pareto_khat, tail_length
from pyvae.linear_gaussian import LinearGaussian


def gpd_sample(k, sigma, n, seed):
    """Inverse CDF: y = sigma / k ((1 - U)^(-k) - 1)."""
    u = torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return sigma / k * ((1 - u).pow(-k) - 1)


@pytest.mark.parametrize("k,sigma", [(0.2, 1.0), (0.5, 2.0), (0.9, 0.3)])
def test_gpd_fit_recovers_simulated_parameters(k, sigma):
    y = torch.stack([gpd_sample(k, sigma, 4000, seed) for seed in range(4)])
    k_hat, sigma_hat = gpd_fit(y, prior=False)
    assert k_hat.shape == (4,)
    assert (k_hat - k).abs().max() < 0.08, k_hat
    assert ((sigma_hat / sigma).log().abs() < 0.1).all(), sigma_hat


def test_gpd_fit_agrees_with_maximum_likelihood():
    stats = pytest.importorskip("scipy.stats")
    y = gpd_sample(0.6, 1.5, 3000, seed=7)
    k_hat, sigma_hat = gpd_fit(y, prior=False)
    k_ml, _, sigma_ml = stats.genpareto.fit(y.numpy(), floc=0)
    assert abs(float(k_hat) - k_ml) < 0.03
    assert abs(float(sigma_hat) / sigma_ml - 1) < 0.05


def test_khat_of_importance_weights():
    g = torch.Generator().manual_seed(0)
    n = 5000
    assert tail_length(n) == math.ceil(3 * math.sqrt(n))
    # exact weights (constant): no tail at all; light-tailed weights: small k
    assert torch.isnan(pareto_khat(torch.zeros(n, 1))).all()
    light = torch.randn(n, 3, generator=g, dtype=torch.float64) * 0.1
    assert (pareto_khat(light) < 0.3).all()
    # a proposal N(0, s^2) too narrow for the target N(0, 1): w = exp(z^2 (1/s^2 - 1) / 2) has
    # P(w > t) ~ t^(-1/(1 - s^2)), a Pareto tail with k = 1 - s^2 (0.96 for s = 0.2)
    s = 0.2
    z = torch.randn(n, 3, generator=g, dtype=torch.float64) * s
    heavy = -0.5 * z.pow(2) + 0.5 * (z / s).pow(2)
    khat = pareto_khat(heavy)
    assert (khat > 0.7).all(), khat


def test_khat_flags_a_poor_guide_and_not_the_exact_one():
    model = LinearGaussian.random(x_dim=10, z_dim=3, sigma=0.3, seed=0)
    x = model.sample(6, seed=1)

    def wide_guide(x):  # the exact posterior, 1.3 times wider: a good proposal
        post = model.posterior(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(post.mean, 1.69 * post.covariance_matrix))

    exact = log_likelihood(model.model, model.exact_guide, x, num_samples=2000, progress=False)
    assert not (exact.khat > 0.7).any() and exact.summary()["khat_over_0.7"] == 0
    wide = log_likelihood(model.model, wide_guide, x, num_samples=2000, progress=False)
    assert (wide.khat < 0.5).all(), wide.khat
    poor = log_likelihood(model.model, prior_guide(model.model), x, num_samples=2000,
                          progress=False)
    assert (poor.khat > 0.7).all(), poor.khat
    assert poor.summary()["khat_over_0.7"] == 6

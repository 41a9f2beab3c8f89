import pyro.poutine as poutine
import pytest
import torch

from pyvae.linear_gaussian import LinearGaussian


def test_exact_posterior_elbo_equals_log_marginal():
    """With q = p(z|x), log p(x,z) - log q(z|x) = log p(x) for every z: the ELBO is exact."""
    lg = LinearGaussian.random(x_dim=6, z_dim=3, sigma=0.7, seed=1)
    x = lg.sample(20, seed=2)
    tr_g = poutine.trace(lg.exact_guide).get_trace(x)
    tr_m = poutine.trace(poutine.replay(lg.model, trace=tr_g)).get_trace(x)
    tr_m.compute_log_prob(), tr_g.compute_log_prob()
    log_w = tr_m.nodes["x"]["log_prob"] + tr_m.nodes["z"]["log_prob"] - tr_g.nodes["z"]["log_prob"]
    assert torch.allclose(log_w, lg.log_marginal(x), atol=1e-8)


def test_marginal_matches_monte_carlo_moments():
    lg = LinearGaussian.random(x_dim=3, z_dim=2, sigma=0.3, seed=0)
    x = lg.sample(200_000, seed=5)
    m = lg.marginal()
    assert torch.allclose(x.mean(0), m.mean, atol=0.02)
    assert torch.allclose(torch.cov(x.T), m.covariance_matrix, atol=0.05)


def test_best_diagonal_kl_is_min_over_diagonal_gaussians():
    lg = LinearGaussian.random(x_dim=4, z_dim=2, sigma=0.5, seed=3)
    x = lg.sample(1, seed=0)
    post = lg.posterior(x)
    precision = torch.linalg.inv(post.covariance_matrix[0])
    q_star = torch.distributions.MultivariateNormal(post.loc[0], torch.diag(1 / torch.diagonal(precision)))
    p = torch.distributions.MultivariateNormal(post.loc[0], post.covariance_matrix[0])
    best = float(torch.distributions.kl_divergence(q_star, p))
    assert best == pytest.approx(lg.best_diagonal_kl(), abs=1e-10)
    for scale in (0.9, 1.1):  # perturbing the variances only increases the KL
        q = torch.distributions.MultivariateNormal(post.loc[0], scale * q_star.covariance_matrix)
        assert float(torch.distributions.kl_divergence(q, p)) > best

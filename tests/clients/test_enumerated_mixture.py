"""A mixture whose discrete component y is enumerated in the model only (``config_enumerate``,
the guide samples z alone): every estimate sums y out exactly and meets the closed-form log p(x).
"""
import pytest
import torch

import pyro
import pyro.distributions as dist

import pyvae.infer.evaluate as ev
from pyvae.errors import ConfigError
from pyvae.infer.ais import ais
from pyvae.infer.objectives import CIWAE, IWAE, MIWAE

from .models import EnumeratedMixture


@pytest.fixture
def mix():
    return EnumeratedMixture()


@pytest.fixture
def x(mix):
    return mix.simulate(60)


@pytest.mark.parametrize("k", [1, 3])
def test_exact_posterior_gives_log_px_for_any_k(mix, x, k):
    # with q = p(z|x), log p(x, z) - log q(z|x) = log p(x) at every z once y is summed out
    exact = mix.exact_log_px(x)
    ll = ev.log_likelihood(mix.model, mix.exact_guide, x, num_samples=k, progress=False)
    assert torch.allclose(ll.value, exact, atol=1e-10, rtol=0)
    assert torch.allclose(ev.elbo(mix.model, mix.exact_guide, x, k).value, exact, atol=1e-10, rtol=0)
    bound = ev.iwae_bound(mix.model, mix.exact_guide, x, k=k)
    assert torch.allclose(bound.value, exact, atol=1e-10, rtol=0)


def test_broad_guide_within_monte_carlo_error(mix, x):
    exact = mix.exact_log_px(x).mean().item()
    ll = ev.log_likelihood(mix.model, mix.broad_guide, x, num_samples=2000, progress=False)
    assert abs(ll.mean - exact) < 4 * ll.mean_stderr + 1e-3
    # a sampled y in the guide (no enumeration) stays as it was: exact posterior, exact weight
    with_y = ev.log_likelihood(mix.model, mix.guide_with_y, x, num_samples=2, progress=False)
    assert torch.allclose(with_y.value, mix.exact_log_px(x), atol=1e-10, rtol=0)


def test_gaps_of_the_exact_posterior_vanish(mix, x):
    result = ev.gaps(mix.model, mix.exact_guide, x, num_samples=4, elbo_samples=2,
                     refined_guide=mix.exact_guide, progress=False)
    assert result.total.abs().max() < 1e-10
    assert result.approximation.abs().max() < 1e-10 and result.amortization.abs().max() < 1e-10


def test_objectives_sum_y_out(mix, x):
    exact = mix.exact_log_px(x).mean().item()
    ll = ev.log_likelihood(mix.model, mix.broad_guide, x, num_samples=1000, progress=False)
    losses = {}
    for name, objective in (("iwae", IWAE(1000)), ("dreg", IWAE(1000, estimator="dreg")),
                            ("stl", IWAE(1000, estimator="stl"))):
        pyro.set_rng_seed(1)
        losses[name] = float(objective.differentiable_loss(mix.model, mix.broad_guide, x).detach())
    assert abs(-losses["iwae"] / len(x) - exact) < 4 * ll.mean_stderr + 1e-2
    # the estimators' surrogates (y summed out in their own trace of the model) share its value
    assert losses["dreg"] == pytest.approx(losses["iwae"], abs=1e-8)
    assert losses["stl"] == pytest.approx(losses["iwae"], abs=1e-8)
    for objective in (MIWAE(2, 500), CIWAE(1000, 0.5)):
        assert -objective.loss(mix.model, mix.broad_guide, x) / len(x) < exact + 4 * ll.mean_stderr


def test_ais_sums_y_out(mix):
    x = mix.simulate(8, seed=3)
    exact = mix.exact_log_px(x)
    # from the exact posterior every chain's weight is log p(x), whatever the transitions do
    start_exact = ais(mix.model, mix.exact_guide, x, num_steps=5, num_chains=2, progress=False, seed=0)
    assert torch.allclose(start_exact.value, exact, atol=1e-10, rtol=0)
    result = ais(mix.model, mix.broad_guide, x, num_steps=100, num_chains=16, progress=False,
                 seed=0)
    assert bool(torch.isfinite(result.value).all())
    assert abs(result.mean - exact.mean().item()) < 4 * result.mean_stderr + 0.05


def test_model_only_latent_is_refused_in_one_line(mix, x):
    def continuous_extra(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("w", dist.Normal(torch.zeros(x.shape[0], dtype=torch.float64), 1.0))
            pyro.sample("z", dist.Normal(torch.zeros(mix.dim, dtype=torch.float64), 1.0).to_event(1))

    calls = [lambda m: ev.log_likelihood(m, mix.broad_guide, x, num_samples=4, progress=False),
             lambda m: ev.elbo(m, mix.broad_guide, x),
             lambda m: ev.gaps(m, mix.broad_guide, x, num_samples=4, progress=False),
             lambda m: IWAE(4).loss(m, mix.broad_guide, x),
             lambda m: ais(m, mix.broad_guide, x[:4], num_steps=2, num_chains=2, progress=False)]
    for call in calls:
        with pytest.raises(ConfigError, match="latent site 'y' .*not sampled by the guide.*enumeration") as err:
            call(mix.model_unmarked)
        assert "\n" not in str(err.value)
        with pytest.raises(ConfigError, match="latent site 'w' .*sample it in the guide"):
            call(continuous_extra)

"""Pyro's autoguides fitted to a model with a "data" plate: AutoNormal works in every estimate
with the default batch size (and starts AIS); the guides that hold all rows in one joint draw,
and AutoDelta, are refused in one line."""
import pytest
import torch

import pyro
from pyro.infer import autoguide

import pyvae.infer.evaluate as ev
from pyvae.errors import ConfigError
from pyvae.infer.ais import ais

from .models import GaussianLatent

N = 150  # more than the default batch size of 100


@pytest.fixture
def lg():
    return GaussianLatent()


@pytest.fixture
def x(lg):
    return lg.simulate(N)


def _fitted(guide, x):
    guide(x)  # builds its parameters from a trace of the model, sized for the data plate
    return guide


def test_auto_normal_at_the_posterior_gives_log_px(lg, x):
    guide = _fitted(autoguide.AutoNormal(lg.model), x)
    lg.set_exact(guide, x)
    exact = lg.exact_log_px(x)
    ll = ev.log_likelihood(lg.model, guide, x, num_samples=3, progress=False)
    assert torch.allclose(ll.value, exact, atol=1e-10, rtol=0)
    assert torch.allclose(ev.elbo(lg.model, guide, x, 2).value, exact, atol=1e-10, rtol=0)
    result = ev.gaps(lg.model, guide, x, num_samples=3, elbo_samples=2, progress=False)
    assert result.total.abs().max() < 1e-10
    # as an AIS start: the auxiliary site is scored with its Delta, so every chain's weight
    # is log p(x) (before, the Delta scored z at -inf and AIS returned +inf)
    start = ais(lg.model, guide, x, num_steps=5, num_chains=2, progress=False, seed=0)
    assert torch.allclose(start.value, exact, atol=1e-9, rtol=0)


def test_auto_normal_away_from_the_posterior(lg, x):
    guide = _fitted(autoguide.AutoNormal(lg.model), x)
    store, post = pyro.get_param_store(), lg.posterior(x).base_dist
    store["AutoNormal.locs.z"], store["AutoNormal.scales.z"] = 0.8 * post.loc, 1.3 * post.scale
    exact = lg.exact_log_px(x).mean().item()
    ll = ev.log_likelihood(lg.model, guide, x, num_samples=500, progress=False)
    assert abs(ll.mean - exact) < 4 * ll.mean_stderr + 1e-3
    # ELBO = log p(x) - KL(q || p(z|x)), both Gaussian: the gap in closed form
    q = torch.distributions.Normal(0.8 * post.loc, 1.3 * post.scale)
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(post.loc, post.scale))
    elbo = ev.elbo(lg.model, guide, x, num_samples=200)
    assert abs(elbo.mean - (exact - kl.sum(-1).mean().item())) < 4 * elbo.mean_stderr
    gaps = ev.gaps(lg.model, guide, x, num_samples=500, progress=False, ais_steps=50,
                   ais_chains=8, seed=0)
    assert gaps.ais_start == "guide" and bool(torch.isfinite(gaps.log_px.value).all())
    assert abs(gaps.log_px.mean - exact) < 4 * gaps.log_px.mean_stderr + 0.02


def test_auto_normal_on_other_data_is_refused(lg, x):
    guide = _fitted(autoguide.AutoNormal(lg.model), x)
    with pytest.raises(ConfigError, match="plate has 150 datapoints and x has 40") as err:
        ev.log_likelihood(lg.model, guide, x[:40], num_samples=2, progress=False)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("cls", [autoguide.AutoDiagonalNormal, autoguide.AutoMultivariateNormal,
                                 autoguide.AutoLowRankMultivariateNormal, autoguide.AutoIAFNormal])
def test_joint_autoguides_are_refused_in_one_line(lg, x, cls):
    kwargs = {"hidden_dim": [2 * N * lg.dim]} if cls is autoguide.AutoIAFNormal else {}
    guide = _fitted(cls(lg.model, **kwargs), x)
    calls = [lambda: ev.log_likelihood(lg.model, guide, x, num_samples=2, progress=False),
             lambda: ev.elbo(lg.model, guide, x),
             lambda: ev.gaps(lg.model, guide, x, num_samples=2, progress=False),
             lambda: ais(lg.model, guide, x, num_steps=2, num_chains=2, progress=False)]
    for call in calls:
        with pytest.raises(ConfigError, match="one joint distribution over all rows.*AutoNormal") as err:
            call()
        assert "\n" not in str(err.value)


def test_auto_delta_is_refused_in_one_line(lg, x):
    guide = _fitted(autoguide.AutoDelta(lg.model), x)
    for call in (lambda: ev.log_likelihood(lg.model, guide, x, num_samples=2, progress=False),
                 lambda: ev.elbo(lg.model, guide, x),
                 lambda: ais(lg.model, guide, x, num_steps=2, num_chains=2, progress=False)):
        with pytest.raises(ConfigError, match="point mass .*without a density") as err:
            call()
        assert "\n" not in str(err.value)


@pytest.mark.parametrize("cls", [autoguide.AutoDiagonalNormal, autoguide.AutoMultivariateNormal])
def test_joint_estimate_of_the_batch(lg, cls):
    # q over all rows' latents at the exact posterior (packed row by row): log w = log p(X)
    x = lg.simulate(6)
    guide = _fitted(cls(lg.model), x)
    post = lg.posterior(x).base_dist
    store, name = pyro.get_param_store(), cls.__name__
    with torch.no_grad():
        guide.loc.copy_(post.loc.reshape(-1))  # an nn.Parameter of the guide
    store[f"{name}.scale"] = post.scale.reshape(-1)
    if cls is autoguide.AutoMultivariateNormal:
        store[f"{name}.scale_tril"] = torch.eye(x.numel(), dtype=torch.float64)
    exact = lg.exact_log_px(x).sum()
    joint = ev.joint_log_likelihood(lg.model, guide, x, num_samples=3)
    assert joint.value.shape == (1,) and float(joint.value) == pytest.approx(float(exact), abs=1e-9)
    # away from it: the IW estimate of log p(X) within its error, above the batch's ELBO
    with torch.no_grad():
        guide.loc.mul_(0.9)
    store[f"{name}.scale"] = 1.2 * post.scale.reshape(-1)
    joint = ev.joint_log_likelihood(lg.model, guide, x, num_samples=4000)
    assert abs(float(joint.value) - float(exact)) < 4 * float(joint.stderr) + 1e-3
    assert float(joint.elbo) < float(exact)

"""A model and guide whose "data" plate draws a subsample (``subsample_size=B``) of the rows of
x: every estimate is per datapoint, for every row, with the plate's subsample fixed to each
batch of B rows in turn."""
import pytest
import torch

import pyro
import pyro.distributions as dist
from pyro.infer import autoguide

import pyvae.infer.evaluate as ev
from pyvae.infer.ais import GuideCannotScore, ais
from pyvae.infer.objectives import IWAE

from .models import GaussianLatent

N = 50  # three subsamples of 16 and a last one of 2 new rows


@pytest.fixture
def lg():
    return GaussianLatent(subsample_size=16)


@pytest.fixture
def x(lg):
    return lg.simulate(N)


def test_every_row_gets_its_own_estimate(lg, x):
    exact = lg.exact_log_px(x)
    ll = ev.log_likelihood(lg.subsampled_model, lg.subsampled_guide, x, num_samples=3,
                           progress=False)
    assert ll.value.shape == (N,)
    assert torch.allclose(ll.value, exact, atol=1e-10, rtol=0)
    assert torch.allclose(ev.elbo(lg.subsampled_model, lg.subsampled_guide, x, 2).value, exact,
                          atol=1e-10, rtol=0)
    result = ev.gaps(lg.subsampled_model, lg.subsampled_guide, x, num_samples=3, progress=False)
    assert result.total.abs().max() < 1e-10
    start = ais(lg.subsampled_model, lg.subsampled_guide, x, num_steps=4, num_chains=2,
                progress=False, seed=0)
    assert torch.allclose(start.value, exact, atol=1e-10, rtol=0)


def test_auto_normal_of_a_subsampled_model(lg, x):
    guide = autoguide.AutoNormal(lg.subsampled_model)
    guide(x)  # parameters for all N rows; each call reads those of its subsample
    lg.set_exact(guide, x)
    exact = lg.exact_log_px(x)
    ll = ev.log_likelihood(lg.subsampled_model, guide, x, num_samples=2, progress=False)
    assert torch.allclose(ll.value, exact, atol=1e-10, rtol=0)
    start = ais(lg.subsampled_model, guide, x, num_steps=4, num_chains=2, progress=False, seed=0)
    assert torch.allclose(start.value, exact, atol=1e-9, rtol=0)


def test_a_guide_that_cannot_score_its_draws_does_not_start_ais(lg, x):
    def redrawing_guide(x):  # z a deterministic map of a draw AIS cannot condition on
        with pyro.plate("data", x.shape[0]):
            u = pyro.sample("noise", lg.posterior(x), infer={"is_auxiliary": True})
            pyro.sample("z", dist.Delta(u, event_dim=1))

    with pytest.raises(GuideCannotScore, match="non-finite log q0 at its own draws"):
        ais(lg.model, redrawing_guide, x, num_steps=2, num_chains=2, progress=False)
    result = ev.gaps(lg.model, redrawing_guide, x, num_samples=3, progress=False, ais_steps=20,
                     ais_chains=4, seed=0)
    assert result.ais_start == "prior" and bool(torch.isfinite(result.log_px.value).all())


def test_objectives_weigh_the_drawn_subsample(lg, x):
    exact = lg.exact_log_px(x)
    bound, scale = IWAE(3).per_datapoint(lg.subsampled_model, lg.subsampled_guide, x)
    assert bound.shape == (16,) and scale == pytest.approx(N / 16)
    # each value is the exact log p(x) of one drawn row, rows without repeats
    match = (bound[:, None] - exact[None, :]).abs() < 1e-10
    assert bool((match.sum(1) == 1).all()) and int(match.any(0).sum()) == 16

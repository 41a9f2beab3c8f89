"""pyvae.infer.weights: per-datapoint importance weights of any Pyro model/guide pair, checked
on the linear-Gaussian model, where log p(x) and p(z|x) are exact, and the checks that refuse
pairs without per-datapoint weights. (VAE.log_weights against this traced path: tests/test_vae.py;
models written as users write them: tests/clients/.)"""
import math

import pytest
import torch

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
from pyro.infer import config_enumerate

from pyvae import ConfigError
from pyvae.infer.weights import (PARTICLE_PLATE, batches, joint_log_weights, log_weights,
                                 max_plate_nesting, own_weights, particle_traces, per_datapoint)
from pyvae.linear_gaussian import LinearGaussian

N, K = 12, 7


@pytest.fixture
def x(lg):
    return lg.sample(N, seed=1)


def shifted_guide(lg, plate=None, shift=0.4, scale=0.6):
    """q(z|x): the posterior mean moved by ``shift``, fixed scales (a mismatched mean-field q)."""
    plate = plate or (lambda x: pyro.plate("data", x.shape[0]))

    def guide(x):
        loc = lg.posterior(x).loc + shift
        with plate(x):
            pyro.sample("z", dist.Normal(loc, torch.full_like(loc, scale)).to_event(1))
    return guide


# ------------------------------------------------------------------------------ the weights
def test_exact_posterior_gives_log_px_for_every_particle(lg, x):
    log_w, scale = log_weights(lg.model, lg.exact_guide, x, K)
    assert log_w.dtype == torch.float64 and log_w.shape == (K, N) and scale == 1.0
    torch.testing.assert_close(log_w, lg.log_marginal(x).expand(K, N), rtol=0, atol=1e-10)


def test_log_weights_are_log_p_minus_log_q_of_the_guides_own_draws(lg, x):
    guide = shifted_guide(lg)
    pyro.set_rng_seed(0)
    log_w, _ = log_weights(lg.model, guide, x, K, nesting=1)
    pyro.set_rng_seed(0)
    model_trace, guide_trace = particle_traces(lg.model, guide, x, K, nesting=1)
    z = guide_trace.nodes["z"]["value"]
    assert z.shape == (K, N, 2)  # one guide call draws all particles
    assert torch.equal(model_trace.nodes["z"]["value"], z)  # the model replays them
    frames = [f.name for f in guide_trace.nodes["z"]["cond_indep_stack"]]
    assert PARTICLE_PLATE in frames and "data" in frames
    q = dist.Normal(lg.posterior(x).loc + 0.4, 0.6).to_event(1)
    want = lg.prior().log_prob(z) + lg.likelihood(z).log_prob(x) - q.log_prob(z)
    torch.testing.assert_close(log_w, want.to(torch.float64), rtol=0, atol=1e-10)


def test_a_subsampled_plate_reports_its_scale_and_leaves_the_weights_unscaled(lg, x):
    idx = torch.tensor([0, 3, 5])

    def plate(x):
        return pyro.plate("data", N, subsample=idx)

    def model(x):
        with plate(x):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", lg.likelihood(z), obs=x)

    def annealed(x):
        with plate(x):
            with poutine.scale(scale=0.5):  # as KL annealing does
                z = pyro.sample("z", lg.prior())
            pyro.sample("x", lg.likelihood(z), obs=x)

    guide = shifted_guide(lg, plate)
    pyro.set_rng_seed(1)
    plain, scale = log_weights(model, guide, x[idx], K, nesting=1)
    assert scale == N / len(idx)
    pyro.set_rng_seed(1)
    full, _ = log_weights(lg.model, shifted_guide(lg), x[idx], K, nesting=1)
    torch.testing.assert_close(plain, full, rtol=0, atol=1e-12)  # not N / batch times log w
    # scaled: poutine.scale factors stay inside the weights, the data scale does not
    pyro.set_rng_seed(1)
    unscaled, _ = log_weights(annealed, guide, x[idx], K, nesting=1)
    pyro.set_rng_seed(1)
    scaled, scale = log_weights(annealed, guide, x[idx], K, nesting=1, scaled=True)
    assert scale == N / len(idx)
    pyro.set_rng_seed(1)
    _, guide_trace = particle_traces(annealed, guide, x[idx], K, nesting=1)
    log_prior = lg.prior().log_prob(guide_trace.nodes["z"]["value"]).to(torch.float64)
    torch.testing.assert_close(unscaled, plain, rtol=0, atol=1e-12)
    torch.testing.assert_close(scaled - unscaled, -0.5 * log_prior, rtol=0, atol=1e-10)


def test_an_enumerated_model_site_is_summed_out_exactly(lg, x):
    offset, pi = 1.5, 0.3

    @config_enumerate
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            y = pyro.sample("y", dist.Bernoulli(torch.full(x.shape[:1], pi, dtype=x.dtype)))
            pyro.sample("x", dist.Normal(z @ lg.weight.T + lg.bias + offset * y[..., None],
                                         lg.sigma).to_event(1), obs=x)

    guide = shifted_guide(lg)
    pyro.set_rng_seed(2)
    log_w, _ = log_weights(model, guide, x, K, nesting=1)
    pyro.set_rng_seed(2)
    _, guide_trace = particle_traces(model, guide, x, K, nesting=1)
    z = guide_trace.nodes["z"]["value"]
    mean = z @ lg.weight.T + lg.bias
    # log p(x, z) = log p(z) + log sum_y p(y) p(x | z, y)
    log_px_z = torch.logaddexp(math.log(1 - pi) + dist.Normal(mean, lg.sigma).to_event(1).log_prob(x),
                               math.log(pi) + dist.Normal(mean + offset, lg.sigma).to_event(1).log_prob(x))
    q = dist.Normal(lg.posterior(x).loc + 0.4, 0.6).to_event(1)
    want = lg.prior().log_prob(z) + log_px_z - q.log_prob(z)
    torch.testing.assert_close(log_w, want.to(torch.float64), rtol=0, atol=1e-10)


def test_joint_log_weights_of_the_exact_posterior_are_log_p_of_all_rows(lg, x):
    log_w = joint_log_weights(lg.model, lg.exact_guide, x, K, nesting=1)
    assert log_w.dtype == torch.float64 and log_w.shape == (K,)
    torch.testing.assert_close(log_w, lg.log_marginal(x).sum().expand(K), rtol=0, atol=1e-9)


def test_an_object_with_its_own_log_weights_is_asked_for_them(x):
    class Scorer:
        def model(self, x):
            pass

        def guide(self, x):
            pass

        def log_weights(self, x, particles):
            return torch.arange(particles * x.shape[0], dtype=torch.float64).reshape(particles, -1)

    scorer = Scorer()
    assert own_weights(scorer.model, scorer.guide) is scorer
    log_w, scale = log_weights(scorer.model, scorer.guide, x, 3, nesting=1)
    assert torch.equal(log_w, scorer.log_weights(x, 3)) and scale == 1.0
    assert own_weights(scorer.model, Scorer().guide) is None  # model and guide of two objects
    with poutine.block(hide=[]):  # under a handler, the pair is traced like any other
        assert own_weights(scorer.model, scorer.guide) is None


def test_per_datapoint_sums_all_but_the_particle_and_data_dimensions():
    lp = torch.arange(4 * 3 * 5, dtype=torch.float64).reshape(4, 3, 5)  # particles, inner plate, data
    torch.testing.assert_close(per_datapoint(lp, -3, -1, 4), lp.sum(1))
    # a site outside the particle plate (no particle dimension) is the same for every particle
    torch.testing.assert_close(per_datapoint(lp[0, 0], -3, -1, 4), lp[0, 0].expand(4, 5))


# ------------------------------------------------------------------------------ the checks
def test_max_plate_nesting_counts_the_plates_of_model_and_guide(lg, x):
    assert max_plate_nesting(lg.model, lg.exact_guide, x) == 1

    def model(x):
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", lg.prior())
            with pyro.plate("pixels", x.shape[1], dim=-1):
                pyro.sample("x", dist.Normal((z @ lg.weight.T + lg.bias).squeeze(-2), lg.sigma), obs=x)

    def guide(x):
        post = lg.posterior(x)
        with pyro.plate("data", x.shape[0], dim=-2):
            pyro.sample("z", dist.MultivariateNormal(post.loc[:, None], post.covariance_matrix[:, None]))
    assert max_plate_nesting(model, guide, x) == 2


def _normal(x):
    return dist.Normal(torch.zeros(x.shape[0], dtype=x.dtype), 1.0)


def _pair(model_site=None, guide_site=None, outside=False):
    """The linear-Gaussian model and its exact guide, each with one extra site ``(name, fn,
    infer)`` (``fn(x)`` its distribution) in the data plate, or outside it."""
    lg = LinearGaussian.random(x_dim=5, z_dim=2, sigma=0.5, seed=0)

    def with_site(site, x, inside):
        if site and inside != outside:
            pyro.sample(site[0], site[1](x), infer=site[2])

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", lg.likelihood(z), obs=x)
            with_site(model_site, x, inside=True)
        with_site(model_site, x, inside=False)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", lg.posterior(x))
            with_site(guide_site, x, inside=True)
        with_site(guide_site, x, inside=False)
    return model, guide


def _sequential_pair():
    def model(x):
        for i in pyro.plate("data", x.shape[0]):
            pyro.sample(f"x_{i}", dist.Normal(0.0, 1.0), obs=x[i, 0])
    return model, lambda x: None


@pytest.mark.parametrize("pair, message", [
    (_pair(model_site=("w", _normal, {})),
     "the model's latent site 'w' (a continuous Normal) is not sampled by the guide"),
    (_pair(model_site=("y", lambda x: dist.Bernoulli(torch.full(x.shape[:1], 0.5)), {})),
     "site 'y' (discrete Bernoulli) is not sampled by the guide, so it has no importance weight: "
     "mark it for enumeration"),
    (_pair(model_site=("y", lambda x: dist.Bernoulli(torch.full(x.shape[:1], 0.5)),
                       {"enumerate": "sequential"})),
     "site 'y' is marked for sequential enumeration"),
    (_pair(model_site=("w", _normal, {}), guide_site=("w", lambda x: dist.Delta(torch.zeros(x.shape[0])), {})),
     "the guide's site 'w' is a point mass"),
    (_pair(model_site=("w", lambda x: dist.Normal(0.0, 1.0), {}),
           guide_site=("w", lambda x: dist.Normal(0.0, 1.0), {}), outside=True),
     "site 'w' is outside the 'data' plate"),
    (_sequential_pair(), "the 'data' plate must be vectorized"),
], ids=["continuous", "discrete", "sequential", "point-mass", "outside", "not-vectorized"])
def test_pairs_without_per_datapoint_weights_are_one_config_error(pair, message):
    model, guide = pair
    x = LinearGaussian.random(x_dim=5, z_dim=2, sigma=0.5, seed=0).sample(4, seed=1)
    with pytest.raises(ConfigError) as err:
        max_plate_nesting(model, guide, x)
    assert message in str(err.value) and "\n" not in str(err.value)
    model, guide = _pair()  # the same pair without the extra site has weights
    assert max_plate_nesting(model, guide, x) == 1


def test_observed_values_outside_the_support_are_refused(x):
    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=z.sum(-1, keepdim=True).expand(x.shape)).to_event(1),
                        obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 1.0).to_event(1))
    grey = torch.full((3, 4), 0.5)
    with pytest.raises(ConfigError, match="the observed site 'x' has values outside the support "
                                          "of its Bernoulli distribution"):
        max_plate_nesting(model, guide, grey)
    assert max_plate_nesting(model, guide, torch.bernoulli(grey)) == 1


# ------------------------------------------------------------------------------ batches
def test_batches_follow_the_guides_data_plate(lg):
    x = lg.sample(10, seed=3)
    amortised = batches(lg.exact_guide, x, 4)  # a plate as large as the rows it is given
    assert [b.rows for b in amortised] == [range(0, 4), range(4, 8), range(8, 10)]
    assert all(b.subsample is None and torch.equal(b.x, x[b.rows.start:b.rows.stop]) for b in amortised)

    def fitted(x):  # parameters per datapoint of the 10 rows it was fitted to, as AutoNormal's
        with pyro.plate("data", 10):
            pyro.sample("z", dist.Normal(torch.zeros(10, 2), 1.0).to_event(1))
    whole = batches(fitted, x, 4)
    assert len(whole) == 1 and whole[0].rows == range(10) and whole[0].x is x
    with pytest.raises(ConfigError, match="the guide's 'data' plate has 10 datapoints and x has 6"):
        batches(fitted, x[:6], 4)

    def subsampled(x):
        with pyro.plate("data", 10, subsample_size=4) as idx:
            pyro.sample("z", dist.Normal(torch.zeros(len(idx), 2), 1.0).to_event(1))
    parts = batches(subsampled, x, 3)
    assert [b.subsample.tolist() for b in parts] == [[0, 1, 2, 3], [4, 5, 6, 7], [6, 7, 8, 9]]
    assert [b.rows for b in parts] == [range(0, 4), range(4, 8), range(8, 10)]
    assert parts[-1].keep(torch.arange(4)).tolist() == [2, 3]  # the last batch's new rows

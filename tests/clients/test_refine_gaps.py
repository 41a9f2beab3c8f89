"""refine and the gap split on models written as Pyro users write them, against closed forms.

Every model here has an exact log p(x) (tests/clients/models.py): a two-layer linear-Gaussian
z2 -> z -> x, Gamma-Poisson and Beta-Bernoulli (constrained latents), and a small copy of Pyro's
VAE example (sites "latent"/"obs", its own nn.Modules) whose 2-D latent space is integrated on
a grid. ELBOs are bounds: a refined ELBO above log p(x), or a gap below zero, beyond four
standard errors is a bug.
"""
import pytest
import torch
from torch.distributions import MultivariateNormal, kl_divergence

import pyro
import pyro.distributions as dist
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoNormal

import pyvae
from pyvae import evaluate
from pyvae.errors import TrainingDiverged
from pyvae.refine import AUXILIARY_SITE, refine

from .models import BetaBernoulli, HierarchicalMixture, GammaPoisson, PyroExampleVAE, TwoLayerGaussian

pytestmark = pytest.mark.usefixtures("one_thread")


def as_mvn(q):
    """A Gaussian q over u as a MultivariateNormal (for closed-form KLs)."""
    if isinstance(q, MultivariateNormal):
        return q
    return MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))


def assert_split_holds(g, exact):
    """Bounds in order, each gap non-negative, all within four standard errors."""
    s = g.summary()
    assert s["elbo_refined"] <= exact.mean().item() + 4 * s["elbo_refined_stderr"], s
    assert s["approximation_gap"] >= -4 * s["approximation_gap_stderr"], s
    assert s["amortization_gap"] >= -4 * s["amortization_gap_stderr"], s
    assert s["total_gap"] == pytest.approx(s["approximation_gap"] + s["amortization_gap"])
    return s


def test_two_layers_full_rank_refines_both_layers_to_the_exact_posterior():
    m = TwoLayerGaussian()
    x = m.sample(8)
    guide = refine(m.model, x, init=m.guide, family="full-rank", steps=1000, lr=0.1,
                   lr_final=0.01, seed=0)
    # one Gaussian over u = (z2, z): the exact posterior, correlations across the layers included
    assert guide.latents.names == ["z2", "z"]
    kl = kl_divergence(guide.distribution(), m.posterior(x))
    assert kl.max() < 0.02, kl
    exact = m.log_marginal(x)
    g = evaluate.gaps(m.model, m.guide, x, num_samples=2000, elbo_samples=500,
                      refined_guide=guide, batch_size=3, progress=False)
    s = assert_split_holds(g, exact)
    # the refined ELBO is log p(x) less the closed-form KL; the gap is all amortization
    assert s["elbo_refined"] == pytest.approx(float((exact - kl.detach()).mean()),
                                              abs=4 * s["elbo_refined_stderr"] + 1e-3)
    assert s["amortization_gap"] > 20
    # from this guide the IW estimate falls short of the refined ELBO; the refined guide's is exact
    assert g.log_px_iw.mean < s["elbo_refined"]
    assert g.log_px.mean == pytest.approx(exact.mean().item(), abs=4 * g.log_px.mean_stderr + 0.02)


def test_two_layers_diagonal_gap_is_the_mean_field_optimum_over_both_layers():
    m = TwoLayerGaussian()
    x = m.sample(6)
    guide = refine(m.model, x, init=m.guide, family="diagonal", steps=600, lr=0.1,
                   lr_final=0.001, particles=4, seed=0)
    gap = kl_divergence(as_mvn(guide.distribution()), m.posterior(x))
    best = m.best_diagonal_kl()
    assert (gap > best - 1e-9).all()
    assert gap.mean().item() == pytest.approx(best, abs=0.02)
    # one family per site would stop at 0.71 nats; the joint full-rank family reaches 0
    assert 0.5 < m.best_per_site_kl() < best


@pytest.mark.slow
def test_ais_log_px_bounds_the_refined_elbo_on_two_layers():
    """(about 30 s)"""
    m = TwoLayerGaussian()
    x = m.sample(4)
    guide = refine(m.model, x, init=m.guide, family="full-rank", steps=1000, lr=0.1,
                   lr_final=0.01, seed=0)
    g = evaluate.gaps(m.model, m.guide, x, num_samples=500, elbo_samples=500, refined_guide=guide,
                      ais_steps=300, ais_chains=8, seed=0, progress=False)
    exact = m.log_marginal(x)
    s = assert_split_holds(g, exact)
    assert g.ais_start == "guide"
    assert s["log_px"] == pytest.approx(exact.mean().item(), abs=0.15)
    assert s["elbo_refined"] <= s["log_px"] + 4 * s["approximation_gap_stderr"] + 0.05


@pytest.mark.parametrize("client", [GammaPoisson, BetaBernoulli])
def test_constrained_latent_refines_on_its_support(client):
    """A positive (Gamma) and a unit-interval (Beta) latent: the Gaussian family lives on
    log z / logit z, the Jacobian enters log q, and the refined ELBO stays a bound."""
    m = client()
    x = m.sample(10)
    guide = refine(m.model, x, init=m.guide, family="diagonal", steps=500, lr=0.05,
                   lr_final=0.002, seed=0)
    assert not guide.latents.direct
    trace = pyro.poutine.trace(guide).get_trace(x)
    name = guide.latents.names[0]
    value = trace.nodes[name]["value"]
    assert bool(trace.nodes[name]["fn"].support.check(value).all())
    assert AUXILIARY_SITE in trace.nodes
    exact = m.log_marginal(x)
    g = evaluate.gaps(m.model, m.guide, x, num_samples=2000, elbo_samples=1000,
                      refined_guide=guide, progress=False)
    s = assert_split_holds(g, exact)
    # a log-normal / logit-normal q is within a few hundredths of a nat of the Gamma / Beta posterior
    assert exact.mean().item() - s["elbo_refined"] < 0.05
    assert s["amortization_gap"] > 0.05
    assert g.log_px.mean == pytest.approx(exact.mean().item(), abs=4 * g.log_px.mean_stderr + 0.01)


def test_pyro_example_vae_refines_site_latent_and_splits_its_gap():
    vae = PyroExampleVAE()
    x = vae.sample(10)
    start = refine(vae.model, x, init=vae.guide, family="full-rank", steps=0)
    z_loc, z_scale = vae.encoder(x)
    assert torch.allclose(start.distribution().mean, z_loc.detach())
    assert torch.allclose(start.distribution().stddev, z_scale.detach())
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    guide = refine(vae.model, x, init=vae.guide, family="full-rank", steps=500, lr=0.05,
                   lr_final=0.002, seed=0)
    assert guide.latents.names == ["latent"] and guide.latents.direct
    assert all(torch.equal(v, before[k]) for k, v in vae.state_dict().items())
    exact = vae.log_marginal(x)
    g = evaluate.gaps(vae.model, vae.guide, x, num_samples=2000, elbo_samples=500,
                      refined_guide=guide, progress=False)
    s = assert_split_holds(g, exact)
    assert s["amortization_gap"] > 1.0
    assert exact.mean().item() - s["elbo_refined"] < 0.1
    assert g.log_px.mean == pytest.approx(exact.mean().item(), abs=4 * g.log_px.mean_stderr + 0.02)


def test_model_with_pyro_params_is_refined_with_the_trained_values():
    """A model whose parameters are pyro.param sites refines with the values the caller's
    param store holds, not their initial values, and leaves the store as it was."""
    def model(x):
        loc = pyro.param("loc", torch.zeros(1, dtype=torch.float64))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(loc.expand(x.shape[0], 1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 0.5).to_event(1), obs=x)

    pyro.param("loc", torch.full((1,), 3.0, dtype=torch.float64))
    x = torch.full((4, 1), 3.0, dtype=torch.float64)
    guide = refine(model, x, family="diagonal", steps=400, lr=0.1, lr_final=0.001, seed=0)
    # p(z | x) = N((loc + 4 x) / 5, 1 / 5) with loc = 3
    assert torch.allclose(guide.distribution().mean, torch.full((4, 1), 3.0, dtype=torch.float64), atol=0.05)
    assert list(pyro.get_param_store().keys()) == ["loc"]
    assert float(pyro.param("loc")) == 3.0


def test_divergence_names_the_site_instead_of_blaming_the_learning_rate():
    def model(x):  # a Poisson rate that a Gaussian latent makes negative
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 1), 1.0).to_event(1))
            pyro.sample("counts", dist.Poisson(z).to_event(1), obs=x)

    x = torch.ones(20, 1)
    with pytest.raises(TrainingDiverged, match="site 'counts' \\(model\\) is not finite") as info:
        refine(model, x, steps=5, seed=0)
    assert "lower lr" not in str(info.value)


def test_what_refine_refuses_is_one_config_error():
    m = TwoLayerGaussian()
    x = m.sample(4)

    def discrete(x):
        with pyro.plate("data", x.shape[0]):
            k = pyro.sample("k", dist.Bernoulli(0.5 * torch.ones(x.shape[0])))
            pyro.sample("x", dist.Normal(k.unsqueeze(-1).expand(x.shape).double(), 1.0).to_event(1), obs=x)

    def subsampled(x):
        with pyro.plate("data", x.shape[0], subsample_size=2) as rows:
            z = pyro.sample("z", dist.Normal(torch.zeros(2, 1), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x[rows, :1])

    def global_latent(x):
        scale = pyro.sample("scale", dist.LogNormal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, scale).expand(x.shape).to_event(1), obs=x)

    cases = [(discrete, {}, "latent site 'k' is discrete"),
             (subsampled, {}, "subsamples 2 of 4 rows"),
             (global_latent, {}, "outside the 'data' plate"),
             (m.model, {"init": m.posterior(x)}, "the model has latent sites 'z2', 'z'")]
    for model, kwargs, message in cases:
        with pytest.raises(pyvae.ConfigError, match=message):
            refine(model, x, steps=1, **kwargs)
    guide = refine(m.model, x, steps=1)
    with pytest.raises(pyvae.ConfigError, match="or consecutive rows of it"):
        guide(x[[0, 2]])


def test_model_enumerated_discrete_site_is_summed_out():
    """A mixture whose component y the model enumerates: refine fits q(z) alone, TraceEnum_ELBO
    sums y out, and the refined Gaussian is the best Gaussian (its ELBO, by quadrature, cannot
    be raised by a deterministic optimiser) and below the exact log p(x)."""
    m = HierarchicalMixture()
    x = torch.tensor([[-4.2], [0.3], [3.5], [5.0], [1.8]], dtype=torch.float64)
    guide = refine(m.model, x, family="diagonal", steps=800, lr=0.1, lr_final=0.001,
                   particles=4, seed=0)
    assert guide.latents.names == ["z"] and guide.latents.enumerated == ["y"]
    q = guide.distribution()
    loc, scale = q.mean[:, 0].detach(), q.stddev[:, 0].detach()
    refined = m.elbo_by_quadrature(x, loc, scale)
    params = [loc.clone().requires_grad_(), scale.log().clone().requires_grad_()]
    best = torch.optim.LBFGS(params, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        best.zero_grad()
        loss = -m.elbo_by_quadrature(x, params[0], params[1].exp()).sum()
        loss.backward()
        return loss

    best.step(closure)
    optimum = m.elbo_by_quadrature(x, params[0], params[1].exp()).detach()
    exact = m.log_marginal(x)
    assert (optimum <= exact + 1e-9).all()
    assert (optimum - refined).max() < 0.01, (optimum, refined)
    # Pyro's own TraceEnum_ELBO of the refined guide agrees with the quadrature
    pyro.set_rng_seed(0)
    mc = -TraceEnum_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1).loss(
        m.model, guide, x) / len(x)
    assert mc == pytest.approx(float(refined.mean()), abs=0.01)


def test_an_autoguide_starts_the_refinement_at_its_own_moments():
    """init=AutoNormal(model): the start is the mean and covariance of its draws on log(rate),
    which are the autoguide's own loc and scale there (within 256 draws' error)."""
    m = GammaPoisson()
    x = m.sample(6)
    auto = AutoNormal(m.model)
    svi = SVI(m.model, auto, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(200):
        svi.step(x)
    start = refine(m.model, x, init=auto, family="diagonal", steps=0).distribution()
    loc, scale = auto.locs.rate.detach(), auto.scales.rate.detach()
    assert ((start.mean[:, 0] - loc).abs() < 4 * scale / 256 ** 0.5).all()
    assert ((start.stddev[:, 0] / scale - 1).abs() < 4 / (2 * 255) ** 0.5).all()


def test_a_flow_family_refines_a_two_layer_model():
    m = TwoLayerGaussian()
    x = m.sample(6)
    guide = refine(m.model, x, init=m.guide, family="iaf", steps=300, lr=0.02, seed=0)
    assert guide.latents.names == ["z2", "z"] and guide.loc.shape == (6, m.a + m.b)
    exact = m.log_marginal(x)
    refined = evaluate.elbo(m.model, guide, x, num_samples=1000, progress=False)
    amortized = evaluate.elbo(m.model, m.guide, x, num_samples=1000, progress=False)
    assert refined.mean <= exact.mean().item() + 4 * refined.mean_stderr
    assert refined.mean > amortized.mean + 20


def test_a_nested_plate_on_a_latent_is_one_config_error():
    def nested(x):
        with pyro.plate("data", x.shape[0], dim=-1):
            with pyro.plate("parts", 3, dim=-2):
                z = pyro.sample("z", dist.Normal(torch.zeros(3, x.shape[0]), 1.0))
            pyro.sample("x", dist.Normal(z.sum(-2, keepdim=True).T, 1.0).to_event(1), obs=x[:, :1])

    with pytest.raises(pyvae.ConfigError, match="declare per-datapoint dimensions with .to_event"):
        refine(nested, torch.zeros(4, 1), steps=1)

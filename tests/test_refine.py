"""Non-amortized refinement: exact optima on the linear-Gaussian model, initialisation from the
encoder, and a model that stays untouched."""
import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T
from pyro.distributions.conditional import ConditionalDistribution
from pyro.infer import Trace_ELBO

import pyvae
from pyvae.evaluate import elbo
from pyvae.guides import GUIDES
from pyvae.linear_gaussian import LinearGaussian
from pyvae.refine import RefinedGuide, refine


pytestmark = pytest.mark.usefixtures("one_thread")


def correlated_model():
    """A 2-D latent with a strongly correlated posterior: the best diagonal q is 0.78 nats off."""
    weight = torch.tensor([[1.0, 0.9], [0.9, 1.0], [0.6, 0.5]], dtype=torch.float64)
    return LinearGaussian(weight, torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64), 0.5)


@torch.no_grad()
def exact_gap(model, guide, x):
    """log p(x) - ELBO(q_i) = KL(q_i || p(z|x_i)) per datapoint, in closed form."""
    q = guide.distribution()
    if guide.family == "diagonal":
        q = MultivariateNormal(q.mean, covariance_matrix=torch.diag_embed(q.variance))
    return kl_divergence(q, model.posterior(x))


def test_full_rank_refinement_reaches_the_exact_posterior():
    model = correlated_model()
    x = model.sample(16, seed=1)
    guide = refine(model.model, x, family="full-rank", steps=1500, lr=0.1, lr_final=0.01,
                   path_gradient=True, seed=0)
    gap = exact_gap(model, guide, x)
    assert gap.max() < 1e-3, gap
    # Pyro's own Monte-Carlo ELBO of the refined guide is log p(x) (zero variance at the posterior)
    elbo = -Trace_ELBO(num_particles=50, vectorize_particles=True).loss(model.model, guide, x)
    assert abs(elbo - model.log_marginal(x).sum().item()) < 1e-3 * len(x)
    posterior = model.posterior(x)
    assert torch.allclose(guide.distribution().covariance_matrix, posterior.covariance_matrix, atol=1e-3)
    assert torch.allclose(guide.distribution().mean, posterior.mean, atol=1e-3)


def test_full_rank_refinement_stays_at_a_sharp_posterior():
    """Posterior sds of about 0.02, as for MNIST's active units: steps on the Cholesky factor's
    off-diagonal must be relative to each row's scale, or lr 1e-2 throws q far off the optimum
    it starts at (with L's raw entries as parameters this gap was 132 nats)."""
    weight = torch.randn(30, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    model = LinearGaussian(weight, torch.zeros(30, dtype=torch.float64), 0.1)
    x = model.sample(8, seed=0)
    posterior = model.posterior(x)
    assert posterior.covariance_matrix.diagonal(dim1=-2, dim2=-1).sqrt().max() < 0.05
    guide = refine(model.model, x, init=posterior, family="full-rank", steps=200, lr=1e-2, seed=0)
    assert exact_gap(model, guide, x).max() < 0.05


def test_diagonal_refinement_gap_is_the_best_mean_field_kl():
    model = correlated_model()
    x = model.sample(16, seed=1)
    guide = refine(model.model, x, family="diagonal", steps=500, lr=0.1, lr_final=1e-4,
                   particles=8, seed=0)
    gap = exact_gap(model, guide, x)
    best = model.best_diagonal_kl()
    assert best > 0.7
    assert gap.mean().item() == pytest.approx(best, abs=1e-2)
    assert (gap > best - 1e-9).all()  # no diagonal q can beat the optimum
    # the optimal mean-field variances are 1 / (posterior precision)_ii
    precision = torch.linalg.inv(model.posterior(x).covariance_matrix[0])
    variance = guide.distribution().variance
    assert torch.allclose(variance, (1 / precision.diagonal()).expand_as(variance), rtol=0.1)


def test_history_records_the_elbo_and_it_improves():
    model = correlated_model()
    x = model.sample(8, seed=2)
    guide = refine(model.model, x, family="diagonal", steps=200, lr=0.05, seed=0)
    assert len(guide.history) == 200
    assert sum(guide.history[-20:]) / 20 > sum(guide.history[:20]) / 20


def test_refinement_starts_at_the_encoder_and_leaves_the_model_alone(binary_data):
    vae = pyvae.VAE(x_dim=12, z_dim=3, hidden=(16,))
    pyvae.Trainer(vae, epochs=2, batch_size=100, lr=3e-3, progress=False).fit(binary_data)
    x = binary_data[:20]
    before = {k: v.clone() for k, v in vae.state_dict().items()}
    pyro.get_param_store().clear()
    pyro.param("someone_elses", torch.ones(2))

    start = refine(vae.model, x, init=vae.encoder, family="diagonal", steps=0)
    q = vae.encoder(x)
    assert torch.allclose(start.distribution().mean, q.mean, atol=1e-6)
    assert torch.allclose(start.distribution().stddev, q.stddev, atol=1e-6)

    guide = refine(vae.model, x, init=vae.encoder, family="full-rank", steps=150, lr=0.02, seed=0)
    for k, v in vae.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.requires_grad for p in vae.parameters())
    assert list(pyro.get_param_store().keys()) == ["someone_elses"]
    # per-datapoint parameters do better than the shared encoder on the same batch
    pyro.set_rng_seed(1)
    amortized = -Trace_ELBO(num_particles=200, vectorize_particles=True).loss(vae.model, vae.guide, x)
    refined = -Trace_ELBO(num_particles=200, vectorize_particles=True).loss(vae.model, guide, x)
    assert refined > amortized


def test_flow_encoder_initialises_by_moments():
    model = correlated_model()
    x = model.sample(5, seed=3)
    encoder = pyvae.guides.make_guide("planar", 3, 2, hidden=(), flow_length=2).double()
    pyro.set_rng_seed(0)
    guide = refine(model.model, x, init=encoder, family="full-rank", steps=0)
    draws = encoder(x).sample((4000,))
    mean, std = draws.mean(0), draws.std(0)
    # the refinement starts from 256 draws: its moments agree with 4000 others within their noise
    q = guide.distribution()
    assert ((q.mean - mean).abs() < 4 * std / 256 ** 0.5).all()
    assert ((q.stddev - std).abs() < 4 * std / (2 * 255) ** 0.5).all()


def test_bad_input_is_a_config_error():
    model = correlated_model()
    x = model.sample(4, seed=0)
    with pytest.raises(pyvae.ConfigError, match="choose one of: diagonal, full-rank, low-rank, iaf"):
        refine(model.model, x, family="nope")
    with pytest.raises(pyvae.ConfigError, match=r"expected \(4,\), \(2,\)"):
        refine(model.model, x, init=model.posterior(x[:3]))
    guide = refine(model.model, x, steps=1)
    assert isinstance(guide, RefinedGuide)
    with pytest.raises(pyvae.ConfigError, match="belongs to the batch of 4 datapoints"):
        guide(model.sample(4, seed=9))


@pytest.mark.parametrize("family", ["low-rank", "iaf", "planar", "radial", "householder",
                                    "spline", "sylvester"])
def test_every_family_refines_at_least_to_the_best_diagonal(family):
    """Per-datapoint refinement of each non-diagonal family ends at or above the best a
    diagonal Gaussian can do (its gap, in closed form, is 0.78 nats on this posterior)."""
    model = correlated_model()
    x = model.sample(4, seed=1)
    best_diagonal_gap = model.best_diagonal_kl()
    assert best_diagonal_gap > 0.7
    options = {"rank": 1} if family == "low-rank" else {}
    init = None
    if family != "low-rank":
        init = GUIDES[family](3, 2, hidden=(8,), **({} if family == "sylvester" else
                                                   {"flow_hidden": [16]})).double()
    guide = refine(model.model, x, init=init, family=family, steps=200, lr=0.05,
                   lr_final=0.005, seed=0, **options)
    assert guide.family == family and len(guide.history) == 200
    estimate = elbo(model.model, guide, x, num_samples=1000, batch_size=len(x))
    gap = model.log_marginal(x) - estimate.value
    assert float(gap.mean()) < best_diagonal_gap - 0.1, (gap, best_diagonal_gap)


def test_flow_refinement_starts_at_the_encoder():
    model = correlated_model()
    x = model.sample(5, seed=2)
    encoder = GUIDES["planar"](3, 2, hidden=(8,), flow_hidden=[16]).double()
    guide = refine(model.model, x, init=encoder, family="planar", steps=0)
    pyro.set_rng_seed(3)
    z_encoder = encoder(x).sample()
    pyro.set_rng_seed(3)
    z_refined = guide.distribution().sample()
    assert torch.allclose(z_encoder, z_refined)
    with pytest.raises(pyvae.ConfigError, match="needs init to be a 'planar'"):
        refine(model.model, x, init=GUIDES["radial"](3, 2, hidden=(8,)).double(), family="planar")
    # from a Gaussian start, the flow's base starts at that Gaussian's mean and variances
    guide = refine(model.model, x, init=model.posterior(x), family="radial", steps=0)
    assert torch.allclose(guide.loc, model.posterior(x).mean)
    assert torch.allclose(guide.log_scale.exp(), model.posterior(x).stddev)


class _TinyBase(ConditionalDistribution, nn.Module):
    def __init__(self, context_dim, latent_dim):
        super().__init__()
        self.head = nn.Linear(context_dim, 2 * latent_dim)

    def condition(self, context):
        loc, log_scale = self.head(context).chunk(2, dim=-1)
        return dist.Normal(loc, log_scale.exp()).to_event(1)


class TinyFlow(nn.Module):
    """A flow family from outside pyvae.guides, with only what refine asks of one
    (``pyvae.refine.FlowFamily``): a body, a base conditioned on its output, transforms."""

    def __init__(self, context_dim, latent_dim, hidden=()):
        super().__init__()
        self.body = nn.Identity()
        self.base = _TinyBase(context_dim, latent_dim)
        self.transforms = nn.ModuleList([T.conditional_planar(latent_dim, context_dim, [8])])

    def forward(self, features):
        context = self.body(features)
        return dist.TransformedDistribution(self.base.condition(context),
                                            [t.condition(context) for t in self.transforms])


def test_flow_families_come_from_the_registry_given():
    model = correlated_model()
    x = model.sample(4, seed=1)
    # pyvae's planar, named explicitly: the same refinement, number for number, as by default
    settings = dict(init=model.posterior(x), steps=20, lr=0.05, seed=0)
    default = refine(model.model, x, family="planar", **settings)
    given = refine(model.model, x, family="planar", families={"planar": GUIDES["planar"]},
                   **settings)
    assert given.family == "planar" and given.history == default.history
    # a flow family pyvae does not know, and a registry of every guide family (its Gaussian
    # names are refine's own)
    tiny = refine(model.model, x, family="tiny", families={"tiny": TinyFlow}, **settings)
    # (pyvae's planar has two transforms; a fresh TinyFlow one)
    assert tiny.family == "tiny" and len(tiny.history) == 20 and len(tiny.transforms) == 1
    start = TinyFlow(3, 2).double()
    from_start = refine(model.model, x, init=start, family="tiny", steps=0,
                        families={**GUIDES, "tiny": TinyFlow})
    pyro.set_rng_seed(3)
    z_start = start(x).sample()
    pyro.set_rng_seed(3)
    assert torch.allclose(from_start.distribution().sample(), z_start)
    # the registry given is the only one: the default's flows are not in it
    with pytest.raises(pyvae.ConfigError, match="choose one of: diagonal, full-rank, low-rank, "
                                                "tiny$"):
        refine(model.model, x, family="planar", families={"tiny": TinyFlow})
    with pytest.raises(pyvae.ConfigError, match="families must map a flow family's name"):
        refine(model.model, x, family="planar", families=[TinyFlow])


def test_a_flow_family_registered_in_guides_later_is_refinable_by_name(monkeypatch):
    model = correlated_model()
    x = model.sample(4, seed=1)
    monkeypatch.setitem(GUIDES, "tiny", TinyFlow)  # registered after pyvae was imported
    tiny = refine(model.model, x, family="tiny", init=model.posterior(x), steps=3, lr=0.05, seed=0)
    assert tiny.family == "tiny" and len(tiny.transforms) == 1


def test_an_unknown_family_is_one_config_error_line():
    model = correlated_model()
    x = model.sample(4, seed=0)
    with pytest.raises(pyvae.ConfigError) as error:
        refine(model.model, x, family="nope")
    assert str(error.value) == ("unknown refinement family 'nope'; choose one of: "
                                f"{', '.join(GUIDES)}")
    with pytest.raises(pyvae.ConfigError) as error:
        RefinedGuide(x, "iaf", torch.zeros(4, 2), torch.eye(2).expand(4, 2, 2))
    assert str(error.value) == ("unknown Gaussian refinement family 'iaf'; choose one of: "
                                "diagonal, full-rank, low-rank")

import copy
import math
import pickle

import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO

import pyvae
from pyvae import ConfigError, Trainer
from pyvae.priors import MixtureOfGaussians, VampPrior, make_prior


def _log_normal(z, loc, scale):
    """sum_d log N(z_d; loc_d, scale_d), by the formula, in float64."""
    z, loc, scale = z.double(), loc.double(), scale.double()
    return (-0.5 * ((z - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)


def test_mixture_log_prob_matches_explicit_sum_over_components():
    prior = MixtureOfGaussians(z_dim=3, components=4)
    with torch.no_grad():
        prior.logits.copy_(torch.tensor([0.3, -1.0, 2.0, 0.0]))
        prior.log_scale.copy_(0.3 * torch.randn(4, 3))
    z = 2 * torch.randn(5, 7, 3)  # (particles, N, z_dim)
    ours = prior().log_prob(z)
    log_pi = torch.log_softmax(prior.logits.double(), 0)
    terms = torch.stack([log_pi[k] + _log_normal(z, prior.loc[k], prior.log_scale[k].exp())
                         for k in range(4)], dim=-1)
    ref = torch.logsumexp(terms, -1)
    assert ours.shape == (5, 7)
    assert torch.allclose(ours.double(), ref, atol=1e-5)


def test_vamp_log_prob_is_mean_of_encoder_posteriors_at_pseudo_inputs():
    vae = pyvae.VAE(x_dim=12, z_dim=3, hidden=(8,), prior="vamp", prior_components=6)
    prior = vae.prior
    z = torch.randn(2, 5, 3)
    ours = prior().log_prob(z)
    with torch.no_grad():
        u = torch.nn.functional.hardtanh(prior.pseudo_inputs_raw, 0, 1)
        per_k = []
        for k in range(6):
            loc, scale = vae.encoder.loc_scale(u[k])
            per_k.append(_log_normal(z, loc, scale))
        ref = torch.logsumexp(torch.stack(per_k, -1), -1) - math.log(6)
    assert ours.shape == (2, 5)
    assert torch.allclose(ours.double(), ref, atol=1e-5)


def test_vamp_pseudo_inputs_start_as_in_the_paper_and_stay_in_unit_interval():
    torch.manual_seed(0)
    prior = make_prior("vamp", 4, x_dim=784)
    assert prior.components == 500 and prior.pseudo_inputs_raw.shape == (500, 784)
    raw = prior.pseudo_inputs_raw.detach()
    assert abs(float(raw.mean()) - 0.05) < 1e-3 and abs(float(raw.std()) - 0.01) < 1e-3
    with torch.no_grad():
        raw[0, 0], raw[0, 1] = -3.0, 4.0
    u = prior.pseudo_inputs().detach()
    assert float(u.min()) == 0.0 and float(u.max()) == 1.0
    real = make_prior("vamp", 4, x_dim=5, unit_interval=False)
    assert torch.equal(real.pseudo_inputs(), real.pseudo_inputs_raw)


def test_vamp_registers_pseudo_inputs_once_and_encoder_once():
    vae = pyvae.VAE(x_dim=12, z_dim=3, hidden=(8,), prior="vamp", prior_components=5)
    x = torch.bernoulli(torch.full((4, 12), 0.5))
    Trace_ELBO().loss(vae.model, vae.guide, x)
    names = set(pyro.get_param_store().keys())
    assert "prior$$$pseudo_inputs_raw" in names
    assert not any(n.startswith("prior$$$") and "encoder" in n for n in names)
    assert not any(k.startswith("prior._encode") or k.startswith("prior.encoder")
                   for k in vae.state_dict())


@pytest.mark.parametrize("prior", ["mixture", "vamp"])
def test_prior_site_scores_particle_batches(prior):
    vae = pyvae.VAE(x_dim=12, z_dim=3, hidden=(8,), prior=prior, prior_components=4)
    x = torch.bernoulli(torch.full((5, 12), 0.5))
    guide_tr = poutine.trace(pyro.plate("particles", 3, dim=-2)(vae.guide)).get_trace(x)
    assert guide_tr.nodes["z"]["value"].shape == (3, 5, 3)
    tr = poutine.trace(poutine.replay(pyro.plate("particles", 3, dim=-2)(vae.model),
                                      trace=guide_tr)).get_trace(x)
    tr.compute_log_prob()
    assert tr.nodes["z"]["log_prob"].shape == (3, 5)
    loss = Trace_ELBO(num_particles=3, vectorize_particles=True).loss(vae.model, vae.guide, x)
    assert math.isfinite(loss)


@pytest.mark.parametrize("prior", ["normal", "mixture", "vamp"])
def test_each_prior_trains_without_nan_and_learns_its_parameters(prior, binary_data):
    pyro.set_rng_seed(1)
    options = {} if prior == "normal" else {"prior_components": 5}
    vae = pyvae.VAE(x_dim=12, z_dim=2, hidden=(16,), prior=prior, **options)
    before = {k: v.clone() for k, v in vae.prior.named_parameters()}
    history = Trainer(vae, epochs=2, batch_size=100, lr=1e-2, progress=False).fit(
        binary_data[:500], binary_data[500:])
    assert all(math.isfinite(r["train_elbo"]) and math.isfinite(r["valid_elbo"]) for r in history)
    for name, value in vae.prior.named_parameters():
        assert not torch.equal(value, before[name]), f"prior parameter {name} was not trained"
    assert torch.isfinite(vae.sample(4)).all()


@pytest.mark.parametrize("prior", ["normal", "mixture", "vamp"])
def test_priors_follow_the_module_dtype(prior):
    # the same mechanism moves them to a GPU: buffers and parameters, no tensors made on the CPU
    vae = pyvae.VAE(x_dim=12, z_dim=3, hidden=(8,), prior=prior, prior_components=3
                    if prior != "normal" else None).double()
    d = vae.prior()
    assert d.sample().dtype == torch.float64
    assert d.log_prob(torch.zeros(2, 3, dtype=torch.float64)).dtype == torch.float64


def test_prior_config_errors():
    with pytest.raises(ConfigError, match="prior 'normal' takes no option 'components'"):
        pyvae.VAE(x_dim=12, prior="normal", prior_components=3)
    with pytest.raises(ConfigError, match="components must be >= 1"):
        pyvae.VAE(x_dim=12, prior="mixture", prior_components=0)
    with pytest.raises(ConfigError, match="unknown prior 'nope'; choose one of: normal, mixture, vamp"):
        make_prior("nope", 3)
    with pytest.raises(ConfigError, match="no encoder"):
        VampPrior(3, 12, components=2)()


def test_vae_with_named_prior_options_rebuilds_from_config():
    vae = pyvae.VAE(x_dim=12, z_dim=3, hidden=(8,), prior="mixture", prior_components=7)
    again = pyvae.VAE.from_config(vae.config)
    assert again.prior.components == 7
    again.load_state_dict(vae.state_dict())


def test_vamp_copies_point_at_their_own_encoder():
    vae = pyvae.VAE(x_dim=12, z_dim=3, hidden=(8,), prior="vamp", prior_components=4)
    for other in (copy.deepcopy(vae), pickle.loads(pickle.dumps(vae))):
        assert other.prior._encode.__self__ is other
        z = torch.randn(5, 3)
        assert torch.allclose(other.prior().log_prob(z), vae.prior().log_prob(z))


def test_standard_normal_scores_as_normal_does():
    prior = make_prior("normal", 4)()
    z = torch.randn(3, 5, 4, requires_grad=True)
    reference = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(4), torch.ones(4)), 1)
    torch.testing.assert_close(prior.log_prob(z), reference.log_prob(z))
    grad, = torch.autograd.grad(prior.log_prob(z).sum(), z)
    torch.testing.assert_close(grad, -z)
    assert prior.log_prob(torch.zeros(4)).shape == ()
    assert prior.expand([5]).log_prob(torch.zeros(4)).shape == (5,)  # broadcast to batch shape

import math

import pyro
import pyro.poutine as poutine
import pytest
import torch
import torch.nn.functional as F
from pyro.infer import Trace_ELBO

import pyvae
from pyvae import ConfigError
from pyvae.infer import weights


def test_model_trace_sites_shapes_and_plate():
    vae = pyvae.VAE(x_dim=12, z_dim=3, hidden=(8, 5))
    x = torch.bernoulli(torch.full((7, 12), 0.5))
    tr = poutine.trace(vae.model).get_trace(x)
    z, obs = tr.nodes["z"], tr.nodes["x"]
    assert z["value"].shape == (7, 3)
    assert not z["is_observed"] and obs["is_observed"]
    assert torch.equal(obs["value"], x)
    assert z["fn"].event_shape == (3,) and z["fn"].batch_shape == (7,)
    assert obs["fn"].event_shape == (12,) and obs["fn"].batch_shape == (7,)
    for site in (z, obs):
        frames = site["cond_indep_stack"]
        assert [f.name for f in frames] == ["data"] and frames[0].size == 7
    # nets registered through pyro.module under readable names
    names = set(pyro.get_param_store().keys())
    assert "decoder$$$0.weight" in names


def test_guide_trace_site_and_reparameterised():
    vae = pyvae.VAE(x_dim=12, z_dim=3, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 12), 0.5))
    tr = poutine.trace(vae.guide).get_trace(x)
    site = tr.nodes["z"]
    assert site["value"].shape == (5, 3)
    assert site["fn"].has_rsample
    assert [f.name for f in site["cond_indep_stack"]] == ["data"]
    assert any(k.startswith("encoder$$$") for k in pyro.get_param_store().keys())


def test_trace_elbo_equals_hand_computed_elbo_at_fixed_z():
    """-Trace_ELBO.loss = sum_n [log p(x_n|z_n) + log N(z_n; 0, I) - log N(z_n; mu_n, sigma_n)]."""
    torch.manual_seed(1)
    vae = pyvae.VAE(x_dim=10, z_dim=4, hidden=(6,))
    x = torch.bernoulli(torch.full((9, 10), 0.3))
    guide_trace = poutine.trace(vae.guide).get_trace(x)
    z = guide_trace.nodes["z"]["value"].detach()
    loss = Trace_ELBO().loss(vae.model, poutine.replay(vae.guide, trace=guide_trace), x)

    with torch.no_grad():
        loc, log_scale = vae.encoder.net(x).chunk(2, -1)
        scale = log_scale.exp()
        p = torch.sigmoid(vae.decoder(z)).double()
        xd, zd = x.double(), z.double()
        log_px_z = (xd * p.log() + (1 - xd) * (1 - p).log()).sum()
        log_pz = (-0.5 * zd ** 2 - 0.5 * math.log(2 * math.pi)).sum()
        log_qz = (-0.5 * ((zd - loc.double()) / scale.double()) ** 2 - scale.double().log()
                  - 0.5 * math.log(2 * math.pi)).sum()
        elbo = float(log_px_z + log_pz - log_qz)
    assert -loss == pytest.approx(elbo, rel=1e-5, abs=1e-4)


def test_bernoulli_log_prob_matches_bce():
    logits = torch.randn(4, 6) * 5
    x = torch.bernoulli(torch.full((4, 6), 0.5))
    ours = pyvae.likelihoods.Bernoulli()(logits).log_prob(x)
    ref = -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_model_accepts_particle_dimension():
    vae = pyvae.VAE(x_dim=12, z_dim=3, hidden=(8,))
    x = torch.bernoulli(torch.full((5, 12), 0.5))
    loss = Trace_ELBO(num_particles=4, vectorize_particles=True).loss(vae.model, vae.guide, x)
    assert math.isfinite(loss)


@pytest.mark.parametrize("kwargs, message", [
    (dict(z_dim=0), "z_dim"),
    (dict(guide="nope"), "unknown guide 'nope'; choose one of: diagonal"),
    (dict(likelihood="nope"), "unknown likelihood"),
    (dict(prior="nope"), "unknown prior"),
    (dict(activation="nope"), "unknown activation"),
    (dict(hidden=(0,)), "layer sizes must be positive"),
])
def test_bad_vae_config_raises_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        pyvae.VAE(x_dim=12, **kwargs)


def test_guide_rejects_wrong_input_width():
    vae = pyvae.VAE(x_dim=12, z_dim=2, hidden=(4,))
    with pytest.raises(ConfigError, match=r"shape \(3, 11\).*expects \(\.\.\., 12\)"):
        vae.guide(torch.zeros(3, 11))


def test_custom_components_are_accepted_as_objects():
    guide = pyvae.guides.Diagonal(12, 2, hidden=(5,))
    vae = pyvae.VAE(x_dim=12, z_dim=2, hidden=(4,), guide=guide)
    assert vae.encoder is guide and vae.config is None


def _weights_both_ways(vae, x, particles=6, seed=0):
    """(VAE.log_weights as evaluation takes it, the Pyro path through traced model and guide)."""
    assert weights.own_weights(vae.model, vae.guide) is vae
    pyro.set_rng_seed(seed)
    fast, scale = weights.log_weights(vae.model, vae.guide, x, particles)
    assert scale == 1.0
    pyro.set_rng_seed(seed)
    with pyro.poutine.block(hide=[]):  # a handler around them: the generic, traced path
        assert weights.own_weights(vae.model, vae.guide) is None
        traced, _ = weights.log_weights(vae.model, vae.guide, x, particles)
    return fast, traced


@pytest.mark.parametrize("kwargs", [
    dict(guide="diagonal"), dict(guide="iaf"), dict(guide="planar"), dict(guide="sylvester"),
    dict(guide="full-rank"), dict(guide="low-rank"), dict(guide="spline"),
    dict(prior="mixture", prior_components=3), dict(prior="vamp", prior_components=3),
    dict(likelihood="gaussian"), dict(likelihood="discretized_logistic"),
])
def test_vae_log_weights_are_the_traced_model_and_guides(kwargs):
    likelihood = kwargs.get("likelihood", "bernoulli")
    g = torch.Generator().manual_seed(2)
    x = (torch.bernoulli(torch.full((5, 12), 0.4), generator=g) if likelihood == "bernoulli"
         else torch.randint(0, 256, (5, 12), generator=g).float() / 255)
    fast, traced = _weights_both_ways(pyvae.VAE(12, 3, hidden=(8,), **kwargs), x)
    assert fast.dtype == torch.float64 and fast.shape == (6, 5)
    torch.testing.assert_close(fast, traced, rtol=0, atol=1e-9)


def test_vae_log_weights_of_a_conv_vae_and_of_a_subclass():
    x = torch.bernoulli(torch.full((3, 784), 0.3))
    fast, traced = _weights_both_ways(pyvae.VAE(784, 2, hidden=(16,), arch="conv"), x, particles=2)
    torch.testing.assert_close(fast, traced, rtol=0, atol=1e-9)

    class Custom(pyvae.VAE):  # a subclass that changes model keeps the traced path
        def model(self, x):
            return super().model(x)

    class Same(pyvae.VAE):  # one that changes neither model nor guide keeps log_weights
        pass

    custom = Custom(12, 2, hidden=(8,))
    assert weights.own_weights(custom.model, custom.guide) is None
    same = Same(12, 2, hidden=(8,))
    assert weights.own_weights(same.model, same.guide) is same
    other = pyvae.VAE(12, 2, hidden=(8,))
    assert weights.own_weights(other.model, custom.guide) is None

    class Scorer:  # any object with model, guide and log_weights of its own (duck-typed)
        def model(self, x):
            pass

        def guide(self, x):
            pass

        def log_weights(self, x, particles):
            return torch.zeros(particles, x.shape[0], dtype=torch.float64)

    scorer = Scorer()
    assert weights.own_weights(scorer.model, scorer.guide) is scorer

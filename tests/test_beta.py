import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO

import pyvae
from pyvae import ConfigError, Trainer
from pyvae.beta import SiteScale, kl_weight, scale_site


def _parts(vae, x, guide_trace):
    """log p(x|z), log p(z), log q(z|x) summed over the batch, at the z of guide_trace."""
    z = guide_trace.nodes["z"]["value"].detach()
    with torch.no_grad():
        log_px = float(vae.likelihood(vae.decoder(z)).log_prob(x).sum())
        log_pz = float(vae.prior().log_prob(z).sum())
        log_qz = float(vae.encode(x).log_prob(z).sum())
    return log_px, log_pz, log_qz


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, 4.0])
def test_beta_weights_only_the_latent_site(beta):
    torch.manual_seed(0)
    vae = pyvae.VAE(x_dim=10, z_dim=3, hidden=(6,))
    x = torch.bernoulli(torch.full((8, 10), 0.4))
    scaler = SiteScale("z", beta)
    guide = scale_site(vae.guide, scaler)
    guide_trace = poutine.trace(guide).get_trace(x)
    loss = Trace_ELBO().loss(scale_site(vae.model, scaler), poutine.replay(guide, trace=guide_trace), x)
    log_px, log_pz, log_qz = _parts(vae, x, guide_trace)
    assert loss == pytest.approx(-log_px + beta * (log_qz - log_pz), rel=1e-5, abs=1e-4)
    if beta == 0.0:  # the reconstruction term alone
        assert loss == pytest.approx(-log_px, rel=1e-5)
    if beta == 1.0:  # the negative ELBO, as Trace_ELBO computes it unscaled
        plain = Trace_ELBO().loss(vae.model, poutine.replay(vae.guide, trace=guide_trace), x)
        assert loss == pytest.approx(plain, rel=1e-6)


def test_beta_multiplies_the_analytic_kl_of_tracemeanfield():
    torch.manual_seed(1)
    vae = pyvae.VAE(x_dim=10, z_dim=3, hidden=(6,))
    x = torch.bernoulli(torch.full((8, 10), 0.4))
    scaler = SiteScale("z", 0.25)
    guide = scale_site(vae.guide, scaler)
    guide_trace = poutine.trace(guide).get_trace(x)
    loss = TraceMeanField_ELBO().loss(scale_site(vae.model, scaler),
                                      poutine.replay(guide, trace=guide_trace), x)
    log_px, _, _ = _parts(vae, x, guide_trace)
    with torch.no_grad():
        kl = float(torch.distributions.kl_divergence(vae.encode(x), vae.prior().expand((8,))).sum())
    assert loss == pytest.approx(-log_px + 0.25 * kl, rel=1e-5)


def test_kl_weight_ramps_linearly_over_the_warmup_epochs():
    assert kl_weight(2.0, 0, 0, 0, 10) == 2.0
    assert kl_weight(1.0, 2, 0, 0, 10) == 0.0
    assert kl_weight(1.0, 2, 0, 5, 10) == pytest.approx(0.25)
    assert kl_weight(1.0, 2, 1, 5, 10) == pytest.approx(0.75)
    assert kl_weight(0.5, 2, 2, 0, 10) == 0.5 and kl_weight(0.5, 2, 7, 3, 10) == 0.5


def test_trainer_with_warmup_records_beta_and_validates_with_the_true_elbo(binary_data):
    vae = pyvae.VAE(x_dim=12, z_dim=2, hidden=(16,))
    train, valid = binary_data[:300], binary_data[300:]
    trainer = Trainer(vae, epochs=3, batch_size=50, kl_warmup=2, beta=0.1, lr=0.02, progress=False)
    history = trainer.fit(train, valid)
    steps = 6
    assert [r["beta"] for r in history] == pytest.approx(
        [0.1 * min(1, (e + (steps - 1) / steps) / 2) for e in range(3)])
    # the recorded validation value is the ELBO (from many draws here), not the beta-weighted
    # objective, which differs from it by (1 - beta) KL
    pyro.set_rng_seed(5)
    elbo = pyvae.evaluate.elbo(vae.model, vae.guide, valid, num_samples=200)
    with torch.no_grad():
        q = vae.encode(valid).base_dist
        kl = float((0.5 * (q.scale ** 2 + q.loc ** 2 - 1) - q.scale.log()).sum(-1).mean())
    beta_elbo = elbo.mean + (1 - 0.1) * kl
    one_draw_sd = float((elbo.stderr * 200 ** 0.5).square().mean().sqrt())
    tol = 4 * one_draw_sd / len(valid) ** 0.5
    assert abs(beta_elbo - elbo.mean) > 2 * tol
    assert abs(history[-1]["valid_elbo"] - elbo.mean) < tol
    plain = Trainer(pyvae.VAE(x_dim=12, z_dim=2, hidden=(16,)), epochs=1, progress=False)
    assert "beta" not in plain.fit(binary_data)[0]  # beta = 1, no warm-up: the plain ELBO


@pytest.mark.parametrize("kwargs", [dict(beta=-1.0), dict(beta=float("inf")), dict(kl_warmup=-2)])
def test_bad_beta_raises_config_error(kwargs):
    with pytest.raises(ConfigError, match="beta|kl_warmup"):
        Trainer(pyvae.VAE(x_dim=12, z_dim=2, hidden=(4,)), **kwargs)

import math

import pyro
import pytest
import torch

import pyvae
from pyvae import ConfigError, Trainer, bits_per_dim
from pyvae.data import TensorData
from pyvae.likelihoods import (LIKELIHOODS, DiscretizedLogistic, DiscretizedLogisticDistribution,
                               Gaussian, GaussianPerImage, make_likelihood)
from pyvae.models.likelihoods import bernoulli_log_density

GRID = torch.arange(256, dtype=torch.float64) / 255


def test_discretized_logistic_sums_to_one_over_the_256_bins():
    # locations inside, at the edges of and far outside [0, 1]; scales from tiny to huge
    loc = torch.tensor([0.3, 0.0, 1.0, 0.5, 2.0 / 255, -3.0, 4.0, 0.77], dtype=torch.float64)
    scale = torch.tensor([0.1, 0.01, 0.2, 1e-4, 1e-3, 1.0, 50.0, 0.03], dtype=torch.float64)
    d = DiscretizedLogisticDistribution(loc, scale)
    log_p = d.log_prob(GRID[:, None].expand(256, 8))
    assert torch.isfinite(log_p).all()
    assert torch.allclose(log_p.exp().sum(0), torch.ones(8, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.allclose(torch.logsumexp(log_p, 0), torch.zeros(8, dtype=torch.float64), atol=1e-12)


def test_discretized_logistic_bins_match_the_logistic_cdf():
    loc, scale = torch.tensor(0.4, dtype=torch.float64), torch.tensor(0.05, dtype=torch.float64)
    d = DiscretizedLogisticDistribution(loc, scale)
    cdf = lambda v: torch.sigmoid((v - loc) / scale)
    h = 0.5 / 255
    for k in (0, 1, 100, 102, 254, 255):
        x = GRID[k]
        expected = cdf(x + h) if k == 0 else 1 - cdf(x - h) if k == 255 else cdf(x + h) - cdf(x - h)
        assert float(d.log_prob(x).exp()) == pytest.approx(float(expected), rel=1e-9, abs=1e-300)


def test_discretized_logistic_mean_and_samples():
    d = DiscretizedLogisticDistribution(torch.tensor([0.2, 0.9]), torch.tensor([0.05, 0.3]))
    exact = (d.log_prob(GRID.float()[:, None].expand(256, 2)).exp() * GRID.float()[:, None]).sum(0)
    assert torch.allclose(d.mean, exact, atol=1e-5)
    torch.manual_seed(0)
    s = d.sample((20000,))
    assert ((s * 255 - (s * 255).round()).abs() < 1e-4).all() and s.min() >= 0 and s.max() <= 1
    assert torch.allclose(s.mean(0), exact, atol=0.01)


def test_likelihood_layouts_and_log_densities_by_formula():
    x = torch.rand(3, 4)
    out = torch.randn(3, 8)
    d = DiscretizedLogistic()(out)
    assert d.event_shape == (4,) and DiscretizedLogistic().param_dim(4) == 8
    g = Gaussian(4)
    with torch.no_grad():
        g.log_scale.copy_(torch.tensor([0.1, -0.2, 0.3, -9.0]))  # the last is floored at 1e-3
    scale = torch.tensor([0.1, -0.2, 0.3, math.log(1e-3)]).exp()
    ref = (-0.5 * ((x - out[:, :4]) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(g(out[:, :4]).log_prob(x), ref, atol=1e-4)
    gi = GaussianPerImage()
    assert gi.param_dim(4) == 5
    out5 = torch.randn(3, 5)
    s = out5[:, 4:].exp()
    ref = (-0.5 * ((x - out5[:, :4]) / s) ** 2 - s.log() - 0.5 * math.log(2 * math.pi)).sum(-1)
    assert torch.allclose(gi(out5).log_prob(x), ref, atol=1e-4)
    # continuous Bernoulli: x log p + (1-x) log(1-p) + log C(p), C(p) = 2 atanh(1-2p) / (1-2p)
    logits = torch.randn(3, 4)
    p = torch.sigmoid(logits).double()
    log_c = torch.log(2 * torch.atanh(1 - 2 * p) / (1 - 2 * p))
    ref = (x.double() * p.log() + (1 - x.double()) * (1 - p).log() + log_c).sum(-1)
    ours = make_likelihood("continuous_bernoulli")(logits).log_prob(x)
    assert torch.allclose(ours.double(), ref, atol=1e-4)


def test_bits_per_dim():
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    # a density on 8-bit data divided by 256: + D log 256 nats, i.e. + 8 bits/dim
    assert bits_per_dim(-100.0, 10, levels=256) == pytest.approx(-100 / (10 * math.log(2)) + 8)
    with pytest.raises(ConfigError):
        bits_per_dim(1.0, 0)


def _eight_bit_data(n=300, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    proto = torch.randint(0, 256, (3, d), generator=g).float()
    noise = torch.randint(-20, 21, (n, d), generator=g).float()
    return (proto[torch.randint(0, 3, (n,), generator=g)] + noise).clamp(0, 255) / 255


@pytest.mark.parametrize("name", sorted(LIKELIHOODS))
def test_each_likelihood_trains_without_nan(name):
    pyro.set_rng_seed(0)
    x = _eight_bit_data()
    data = TensorData(x, binarize="fixed" if name == "bernoulli" else "none")
    vae = pyvae.VAE(x_dim=12, z_dim=2, hidden=(16,), likelihood=name)
    history = Trainer(vae, epochs=3, batch_size=50, lr=1e-2, progress=False).fit(data, data)
    assert all(math.isfinite(r["train_elbo"]) and math.isfinite(r["valid_elbo"]) for r in history)
    assert history[-1]["valid_elbo"] > history[0]["valid_elbo"] - 1.0
    assert torch.isfinite(vae.reconstruct(data.x[:5])).all() and torch.isfinite(vae.sample(3)).all()
    if name == "gaussian":
        assert pyro.get_param_store()["likelihood$$$log_scale"].shape == (12,)


def test_data_checks_use_the_likelihood_declarations():
    grey = TensorData(torch.rand(20, 4))
    with pytest.raises(ConfigError, match="needs binary data"):
        grey.check_for(make_likelihood("bernoulli"), 4)
    grey.check_for(make_likelihood("continuous_bernoulli"), 4)
    with pytest.raises(ConfigError, match="grid k/255"):
        grey.check_for(make_likelihood("discretized_logistic"), 4)
    TensorData(_eight_bit_data(d=4)).check_for(make_likelihood("discretized_logistic"), 4)
    reals = TensorData(torch.randn(20, 4) * 5)
    reals.check_for(make_likelihood("gaussian", 4), 4)
    with pytest.raises(ConfigError, match=r"values must lie in \[0, 1\]"):
        reals.check_for(make_likelihood("continuous_bernoulli"), 4)


def test_likelihood_config_errors():
    with pytest.raises(ConfigError, match="unknown likelihood 'nope'; choose one of: bernoulli, "
                       "continuous_bernoulli, gaussian, gaussian_image, discretized_logistic"):
        make_likelihood("nope")
    with pytest.raises(ConfigError, match="needs x_dim"):
        make_likelihood("gaussian")
    with pytest.raises(ConfigError, match="min_scale"):
        make_likelihood("gaussian", 3, min_scale=0)


def test_bernoulli_log_density_is_the_same_with_and_without_a_gradient():
    """With a gradient (its derivative written out) and without: one value."""
    logits = torch.randn(7, 784) * 30  # the tails of both forms included
    x = torch.bernoulli(torch.full((7, 784), 0.3))
    p = LIKELIHOODS["bernoulli"]()
    with torch.no_grad():
        plain = p(logits).log_prob(x)
    leaf = logits.clone().requires_grad_()
    graded = p(leaf).log_prob(x)
    reference = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(plain, reference, rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(graded.detach(), plain, rtol=1e-6, atol=1e-3)
    grad, = torch.autograd.grad(graded.sum(), leaf)
    torch.testing.assert_close(grad, x - torch.sigmoid(logits))


def test_bernoulli_log_density_is_float32_exact_per_pixel():
    """softplus as max(l, 0) + log(1 + exp(-|l|)): within float32 rounding of the float64 value
    (x*l - softplus(l) is a difference of terms up to |l| + 1, so a few ulps of that), tails
    and zero included."""
    logits = torch.cat([torch.randn(4000, generator=torch.Generator().manual_seed(0)) * 6,
                        torch.tensor([-100., -30., -17., -1e-3, -1e-7, 0., 1e-7, 1e-3, 17., 30., 100.])])
    for fill in (0.0, 1.0, 0.3):
        x = torch.full_like(logits, fill)
        exact = x.double() * logits.double() - torch.nn.functional.softplus(logits.double())
        for leaf in (logits, logits.clone().requires_grad_()):
            ours = bernoulli_log_density(leaf, x).detach().double()
            ulp = torch.finfo(torch.float32).eps * (logits.double().abs() + 1)
            assert ((ours - exact).abs() <= 2 * ulp).all(), fill


def test_bernoulli_log_density_gradients_in_logits_and_data():
    logits = (torch.randn(5, 30) * 4).requires_grad_()
    x = torch.rand(5, 30).requires_grad_()
    weight = torch.randn(5, 30)
    grad_l, grad_x = torch.autograd.grad((bernoulli_log_density(logits, x) * weight).sum(),
                                         (logits, x))
    torch.testing.assert_close(grad_l, weight * (x - torch.sigmoid(logits)))
    torch.testing.assert_close(grad_x, weight * logits)

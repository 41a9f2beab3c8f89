"""Gradient estimators (reparam, stl, dreg) and the objectives of Rainforth et al. (miwae, ciwae,
piwae), checked on the linear-Gaussian model.

Many independent gradient draws come from one call: the same datapoint is repeated R times and
every copy gets its own guide parameters (a per-row shift of the mean and of the log-scale), so
the gradient of row r is the r-th draw of the single-datapoint gradient estimate.
"""
import json
import math
import os

import numpy as np
import pytest
import torch

import pyro
import pyro.distributions as dist
import pyro.distributions.transforms as T

from pyvae import ConfigError, VAE
from pyvae.cli import main
from pyvae.diagnostics import gradient_snr
from pyvae.linear_gaussian import LinearGaussian
from pyvae.config import TrainConfig
from pyvae.objectives import IWAE, MIWAE, PIWAE, make_objective, path_score

from test_distributed import _data, _torchrun

R = 3000  # gradient draws per estimator


@pytest.fixture(scope="module")
def lg():
    return LinearGaussian.random(x_dim=5, z_dim=2, sigma=0.5, seed=0)


def draws(lg, objective, shift=0.3, log_scale_shift=0.2, seed=0, rows=R, check_value=False):
    """(R, 4) gradient draws of objective.differentiable_loss for the guide's loc and log-scale
    shifts (two coordinates each), and (R, 5) draws for a shift of the model's bias."""
    x = lg.sample(1, seed=1).expand(rows, lg.x_dim)
    post = lg.posterior(x[:1])
    loc = post.loc[0] + shift
    log_scale = 0.5 * post.covariance_matrix[0].diagonal().log() + log_scale_shift
    d_loc = torch.zeros(rows, 2, dtype=torch.float64, requires_grad=True)
    d_scale = torch.zeros(rows, 2, dtype=torch.float64, requires_grad=True)
    d_bias = torch.zeros(rows, lg.x_dim, dtype=torch.float64, requires_grad=True)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc + d_loc, (log_scale + d_scale).exp()).to_event(1))

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", dist.Normal(z @ lg.weight.T + lg.bias + d_bias, lg.sigma).to_event(1), obs=x)

    if check_value:  # the surrogate's value is the bound
        objective.loss(model, guide, x)  # (the first call traces model and guide once)
        pyro.set_rng_seed(seed)
        bound = objective.loss(model, guide, x)
    pyro.set_rng_seed(seed)
    loss = objective.differentiable_loss(model, guide, x)
    if check_value:
        assert loss.item() == pytest.approx(bound, rel=1e-12)
    loss.backward()
    return torch.cat([d_loc.grad, d_scale.grad], 1), d_bias.grad


def agree(a, b, z=4.5):
    """Means of two sets of draws within z combined standard errors, coordinate by coordinate."""
    se = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    return ((a.mean(0) - b.mean(0)).abs() / se).max().item() < z


# ------------------------------------------------------------------------------ unbiasedness
@pytest.mark.parametrize("name, k, options", [
    ("iwae", 8, {}), ("miwae", 4, {"groups": 3}), ("ciwae", 8, {"ciwae_beta": 0.3}),
    ("piwae", 4, {"groups": 3})])
def test_dreg_is_unbiased_and_leaves_the_model_gradient_alone(lg, name, k, options):
    standard, model_standard = draws(lg, make_objective(name, k, "reparam", **options), seed=1)
    dreg, model_dreg = draws(lg, make_objective(name, k, "dreg", **options), seed=2)
    assert agree(standard, dreg)
    # less noise for the guide ...
    assert (dreg.var(0) < standard.var(0)).all()
    # ... and, with the same draws of z, the very same gradient for the model
    _, model_same_draws = draws(lg, make_objective(name, k, "dreg", **options), seed=1)
    assert torch.allclose(model_same_draws, model_standard, rtol=1e-9, atol=1e-12)
    assert agree(model_standard, model_dreg)


@pytest.mark.parametrize("estimator", ["reparam", "stl", "dreg"])
@pytest.mark.parametrize("name", ["iwae", "miwae", "ciwae", "piwae"])
def test_surrogate_value_is_the_bound(lg, name, estimator):
    draws(lg, make_objective(name, 3, estimator, groups=2, ciwae_beta=0.4), rows=20, check_value=True)


def test_stl_is_unbiased_for_the_elbo_and_biased_for_iwae(lg):
    standard, _ = draws(lg, make_objective("trace_elbo", 1), seed=1)
    stl, _ = draws(lg, make_objective("trace_elbo", 1, "stl"), seed=2)
    assert agree(standard, stl)
    # with several particles the ELBO's mean of log w, not a logsumexp: still unbiased
    standard, _ = draws(lg, make_objective("trace_elbo", 3), seed=3)
    stl, _ = draws(lg, make_objective("trace_elbo", 3, "stl"), seed=4)
    assert agree(standard, stl)
    # for IWAE_k, k > 1, dropping the score term changes the expectation (Tucker et al. 2018)
    standard, _ = draws(lg, IWAE(8), seed=5)
    stl, _ = draws(lg, IWAE(8, "stl"), seed=6)
    assert not agree(standard, stl, z=10)


def test_piwae_trains_the_model_on_iwae_mk_and_the_guide_on_miwae(lg):
    # the same draws of z (same seed): gradients equal those of the two bounds, to rounding
    guide_piwae, model_piwae = draws(lg, PIWAE(3, 4, "dreg"), seed=7)
    guide_miwae, _ = draws(lg, MIWAE(3, 4, "dreg"), seed=7)
    _, model_iwae = draws(lg, IWAE(12), seed=7)
    assert torch.allclose(guide_piwae, guide_miwae, rtol=1e-9, atol=1e-12)
    assert torch.allclose(model_piwae, model_iwae, rtol=1e-9, atol=1e-12)
    assert not torch.allclose(model_piwae, draws(lg, MIWAE(3, 4), seed=7)[1])


# ------------------------------------------------------------------------------ at the optimum
def exact_posterior_guide(lg, as_flow):
    """q(z|x) = p(z|x) with learnable loc offset and Cholesky factor, both at the exact values."""
    offset = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    scale_tril = torch.linalg.cholesky(lg.posterior(torch.zeros(1, lg.x_dim, dtype=torch.float64))
                                       .covariance_matrix[0]).requires_grad_()

    def guide(x):
        loc = lg.posterior(x).loc + offset
        with pyro.plate("data", x.shape[0]):
            if as_flow:  # z = loc + L eps as a TransformedDistribution (the flows' code path)
                base = dist.Normal(torch.zeros_like(loc), 1.0).to_event(1)
                q = dist.TransformedDistribution(base, [T.LowerCholeskyAffine(loc, scale_tril)])
            else:
                q = dist.MultivariateNormal(loc, scale_tril=scale_tril)
            pyro.sample("z", q)
    return guide, [offset, scale_tril]


@pytest.mark.parametrize("as_flow", [False, True])
@pytest.mark.parametrize("name, estimator", [("iwae", "stl"), ("iwae", "dreg"),
                                             ("trace_elbo", "stl"), ("piwae", "dreg")])
def test_guide_gradient_is_zero_at_the_exact_posterior(lg, as_flow, name, estimator):
    x = lg.sample(30, seed=2)
    guide, params = exact_posterior_guide(lg, as_flow)
    make_objective(name, 10, estimator, groups=2).differentiable_loss(lg.model, guide, x).backward()
    assert max(p.grad.abs().max().item() for p in params) < 1e-9
    for p in params:
        p.grad = None
    make_objective(name, 10, groups=2).differentiable_loss(lg.model, guide, x).backward()
    assert max(p.grad.abs().max().item() for p in params) > 1e-2  # the score term's noise


def test_path_score_of_a_flow_without_using_its_inverse():
    # an IAF has an inverse: the gradient of log q at a copy of z (through the inverse) must
    # equal J^-T d log q / d z0 computed from the cached base sample
    torch.manual_seed(0)
    context = torch.randn(6, 3)
    layers = [T.conditional_affine_autoregressive(4, 3, [16]), T.conditional_planar(4, 3, [8])]
    base = dist.Normal(torch.zeros(6, 4), torch.ones(6, 4)).to_event(1)
    q = dist.ConditionalTransformedDistribution(base, layers).condition(context)
    z = q.rsample()
    q.log_prob(z)
    score = path_score(q, z)
    iaf = dist.TransformedDistribution(base, [layers[0].condition(context)])
    z = iaf.rsample()
    leaf = z.detach().requires_grad_()
    by_inverse, = torch.autograd.grad(iaf.log_prob(leaf).sum(), leaf)  # cache miss: the inverse
    assert torch.allclose(path_score(iaf, z), by_inverse, atol=1e-4)
    assert score.shape == (6, 4) and torch.isfinite(score).all()


# ------------------------------------------------------------------------------ SNR
def test_dreg_raises_the_guide_snr_at_a_near_optimal_guide(lg):
    # near the optimum the standard estimator's guide gradient is mostly score-term noise
    shift = dict(shift=0.02, log_scale_shift=0.02, rows=1500)
    standard, _ = draws(lg, IWAE(64), seed=1, **shift)
    dreg, _ = draws(lg, IWAE(64, "dreg"), seed=2, **shift)
    snr = lambda g: (g.mean(0).abs() / g.std(0)).mean().item()  # noqa: E731
    assert snr(dreg) > 2 * snr(standard)
    assert agree(standard, dreg)


def test_gradient_snr_reports_encoder_and_decoder(lg):
    x = lg.sample(8, seed=3)
    post = lg.posterior(x)

    def guide(x):
        loc = pyro.param("q_loc", post.loc + 0.05)
        log_scale = pyro.param("q_log_scale", 0.5 * post.covariance_matrix.diagonal(dim1=-2, dim2=-1).log())
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def model(x):
        bias = pyro.param("p_bias", lg.bias.clone())
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", dist.Normal(z @ lg.weight.T + bias, lg.sigma).to_event(1), obs=x)

    pyro.clear_param_store()
    standard = gradient_snr((model, guide), x, IWAE(64), repeats=40)
    dreg = gradient_snr((model, guide), x, IWAE(64, "dreg"), repeats=40)
    assert {g["name"]: g["side"] for g in standard.groups} == {
        "q_loc": "encoder", "q_log_scale": "encoder", "p_bias": "decoder"}
    assert dreg.side_snr["encoder"] > 1.5 * standard.side_snr["encoder"]
    assert dreg.side_snr["decoder"] == pytest.approx(standard.side_snr["decoder"], rel=0.5)
    with pytest.raises(ConfigError, match="repeats"):
        gradient_snr((model, guide), x, IWAE(4), repeats=1)


# ------------------------------------------------------------------------------ guides, CLI
@pytest.mark.parametrize("family", ["diagonal", "full-rank", "iaf", "planar", "sylvester"])
def test_every_guide_family_trains_with_dreg(family):
    torch.manual_seed(0)
    x = torch.bernoulli(torch.full((6, 10), 0.4))
    vae = VAE(x_dim=10, z_dim=3, hidden=(8,), guide=family)
    IWAE(4, "dreg").differentiable_loss(vae.model, vae.guide, x).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in vae.parameters())


@pytest.mark.parametrize("estimator", ["stl", "dreg"])
def test_subsampled_plate_scales_bound_and_gradient_after_the_logsumexp(lg, estimator):
    x, idx = lg.sample(20, seed=4), torch.tensor([1, 4, 9, 13])
    loc = torch.zeros(2, dtype=torch.float64, requires_grad=True)

    def pair(plate):
        def model(x):
            with plate():
                z = pyro.sample("z", lg.prior())
                pyro.sample("x", lg.likelihood(z), obs=x)

        def guide(x):
            with plate():
                pyro.sample("z", dist.Normal(lg.posterior(x).loc + loc, 0.3).to_event(1))
        return model, guide

    grads, losses = [], []
    for plate in (lambda: pyro.plate("data", 20, subsample=idx), lambda: pyro.plate("data", 4)):
        pyro.set_rng_seed(0)
        loc.grad = None
        loss = IWAE(6, estimator).differentiable_loss(*pair(plate), x[idx])
        loss.backward()
        grads.append(loc.grad.clone())
        losses.append(loss.item())
    assert losses[0] == pytest.approx(5 * losses[1], rel=1e-12)
    assert torch.allclose(grads[0], 5 * grads[1], rtol=1e-10)


def test_bad_estimators_are_one_line_errors():
    """The objective's options are checked once, by the fields of TrainConfig, which
    make_objective then trusts."""
    with pytest.raises(ConfigError, match="unknown estimator 'drag'"):
        TrainConfig(loss="iwae", particles=5, estimator="drag")
    with pytest.raises(ConfigError, match="dreg equals stl"):
        TrainConfig(loss="trace_elbo", particles=5, estimator="dreg")
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        TrainConfig(loss="ciwae", particles=5, ciwae_beta=1.5)
    with pytest.raises(ConfigError, match="tracemeanfield_elbo"):
        TrainConfig(loss="tracemeanfield_elbo", estimator="stl")
    with pytest.raises(ConfigError, match="particles must be positive"):
        TrainConfig(loss="iwae", particles=0)


def test_cli_trains_with_dreg_and_draws_the_snr(tmp_path, binary_data, capsys):
    data = tmp_path / "data.npy"
    np.save(data, binary_data.numpy())
    run = tmp_path / "run"
    assert main(["train", "--data-file", str(data), "--out", str(run), "--epochs", "1",
                 "--hidden", "8", "--z-dim", "2", "--loss", "piwae", "--groups", "2",
                 "--particles", "3", "--estimator", "dreg", "--no-progress"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["trainer"]["estimator"], config["trainer"]["groups"]) == ("dreg", 2)
    assert "train IWAE_6" in capsys.readouterr().out
    assert main(["snr", str(run), "--k", "1,4", "--estimator", "reparam,dreg", "--repeats", "5",
                 "--batch-size", "10", "--split", "valid"]) == 0
    out = capsys.readouterr().out
    assert "| 4 | dreg |" in out
    rows = json.loads((run / "snr.json").read_text())["rows"]
    assert [(r["k"], r["estimator"]) for r in rows] == [(1, "reparam"), (1, "dreg"), (4, "reparam"), (4, "dreg")]
    assert all(r["encoder_snr"] > 0 and r["decoder_snr"] > 0 for r in rows)
    # the same draws for both estimators: the decoder's gradients, hence SNRs, are the same
    assert rows[2]["decoder_snr"] == pytest.approx(rows[3]["decoder_snr"], rel=1e-4)
    assert os.path.isfile(run / "figures" / "snr.png")
    assert main(["train", "--data-file", str(data), "--out", str(tmp_path / "r2"), "--epochs", "1",
                 "--estimator", "dreg"]) == 2
    assert capsys.readouterr().err.strip() == ("pyvae train: error: the trace_elbo objective takes "
                                               "the estimator(s) reparam, stl, not 'dreg'; with k = 1 dreg equals stl")


@pytest.mark.slow
def test_dreg_trains_data_parallel(tmp_path):
    # two torchrun processes; the VampPrior runs the encoder in the model too, so the guide's
    # parameters get gradients along both streams of the surrogate, through one DDP

    data = tmp_path / "data.npy"
    np.save(data, _data().numpy())
    out = tmp_path / "run"
    proc = _torchrun(2, "-m", "pyvae", "train", "--distributed", "--data-file", str(data),
                     "--out", str(out), "--epochs", "2", "--batch-size", "30", "--hidden", "8",
                     "--z-dim", "2", "--prior", "vamp", "--prior-components", "3", "--loss", "iwae",
                     "--particles", "3", "--estimator", "dreg", "--threads", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("epoch 2: train IWAE_3") == 1
    history = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(h["train_elbo"]) for h in history)

"""AIS and BDMC on the linear-Gaussian model, where log p(x) is known exactly."""
import json
import math
import os

import pytest
import torch

import pyro
import pyro.distributions as dist

import pyvae
from pyvae.cli import main
from pyvae.infer.ais import (ais, bdmc, jackknife_stderr, prior_guide, recommend_steps,
                             sigmoid_schedule)
from pyvae.evaluate import log_likelihood
from pyvae.linear_gaussian import LinearGaussian

pytestmark = pytest.mark.usefixtures("one_thread")


def narrow_model():
    """A 3-D latent whose posterior sds are ~0.1: importance sampling from the prior is poor."""
    return LinearGaussian.random(x_dim=10, z_dim=3, sigma=0.3, seed=0)


def sharp_model():
    """A 3-D latent whose posterior sds (0.022-0.045) are 22-45x narrower than the prior's."""
    return LinearGaussian.random(x_dim=12, z_dim=3, sigma=0.1, seed=0)


def issue_model():
    """D = 30, Z = 10, sigma = 0.3: posterior sds 0.037-0.108 against the prior's 1 (IW with
    K = 16,000 from the prior is 190 nats off)."""
    return LinearGaussian.random(x_dim=30, z_dim=10, sigma=0.3, seed=0)


def from_prior(model, x, **kw):
    kw.setdefault("num_chains", 16)
    return ais(model.model, prior_guide(model.model), x, progress=False, **kw)


def test_default_ais_from_the_prior_is_accurate_on_a_sharp_posterior():
    """The step is fitted to q0 before annealing and follows the narrowing targets: 200 steps
    land 1.1 nats from exact on average (a start at step 0.01 adapted x1.02/x0.98 lands 8.3
    nats away, 7.2 below), and the error shrinks as the steps grow."""
    model = sharp_model()
    x = model.sample(8, seed=1)
    exact = model.log_marginal(x)
    errors = {}
    for steps in (25, 50, 200):
        r = from_prior(model, x, num_steps=steps, leapfrog_steps=3, seed=0)
        errors[steps] = (r.value - exact).abs().mean().item()
        assert float((r.value - exact).mean()) < 0.1 + 3 * r.mean_stderr  # a stochastic lower bound
    assert errors[200] < 1.5, errors
    assert errors[25] > errors[50] > errors[200], errors
    # the step was fitted to q0 = N(0, I): about its sd over the leapfrog steps, far above 0.01
    assert (r.tuned_step_size > 0.1).all() and (r.tuned_step_size < 2.0).all(), r.tuned_step_size


def test_the_tuned_step_scales_with_the_start_distribution():
    """z ~ N(0, s^2 I): the step fitted at beta = 0 is proportional to s."""
    def make(scale):
        def model(x):
            with pyro.plate("data", x.shape[0]):
                z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2, dtype=torch.float64),
                                                 scale).to_event(1))
                pyro.sample("x", dist.Normal(z, 1.0).to_event(1), obs=x)
        return model

    x = torch.zeros(4, 2, dtype=torch.float64)
    steps = [ais(make(s), prior_guide(make(s)), x, num_steps=2, num_chains=64, leapfrog_steps=3,
                 progress=False, seed=0).tuned_step_size for s in (1.0, 0.01)]
    ratio = steps[0] / steps[1]
    assert ((ratio > 50) & (ratio < 200)).all(), ratio


def test_an_explicit_step_size_is_not_tuned():
    model = sharp_model()
    x = model.sample(2, seed=1)
    r = from_prior(model, x, num_steps=2, step_size=0.05, seed=0)
    assert r.tuned_step_size is None


def test_jackknife_stderr_is_the_leave_one_out_spread():
    log_w = 2 * torch.randn(16, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    loo = torch.stack([torch.logsumexp(torch.cat([log_w[:i], log_w[i + 1:]]), 0) - math.log(15)
                       for i in range(16)])
    expected = (15 / 16 * (loo - loo.mean(0)).pow(2).sum(0)).sqrt()
    assert torch.allclose(jackknife_stderr(log_w), expected, rtol=1e-10)
    # one chain carries all the weight: leaving it out moves the estimate by ~800 nats
    one = torch.full((16, 1), -800.0, dtype=torch.float64)
    one[0] = 0.0
    assert jackknife_stderr(one).item() > 700
    assert jackknife_stderr(torch.zeros(16, 1, dtype=torch.float64)).item() == 0


def test_stderr_covers_the_error_and_low_chain_ess_is_flagged():
    """Over 5 seeds, at least 80% of the per-datapoint errors lie within 2 reported standard
    errors; 2 annealing steps from the prior leave the chains' weights so uneven that every
    datapoint is flagged, the exact posterior as start none."""
    model = sharp_model()
    x = model.sample(8, seed=1)
    exact = model.log_marginal(x)
    covered = []
    for seed in range(5):
        r = from_prior(model, x, num_steps=100, leapfrog_steps=3, seed=100 * seed)
        covered.append((r.value - exact).abs() < 2 * r.stderr)
    assert torch.cat(covered).double().mean() >= 0.8, torch.stack(covered)
    r = from_prior(model, x, num_steps=2, leapfrog_steps=3, seed=0)
    assert r.unreliable.all() and r.summary()["unreliable"] == 8
    exact_start = ais(model.model, model.exact_guide, x, num_steps=2, num_chains=16,
                      progress=False, seed=0)
    assert not exact_start.unreliable.any()


@pytest.mark.slow
def test_full_size_ais_and_bdmc_accuracy():
    """D = 30, Z = 10, sigma = 0.3; AIS from the prior, 1000 steps x 16 chains, defaults
    otherwise: within 0.3 nats of exact log p(x) on average over 20 datapoints, closer than
    at 250 steps, and a BDMC width of at most 1 nat."""
    model = issue_model()
    x = model.sample(20, seed=1)
    exact = model.log_marginal(x)
    errors = {}
    for steps in (250, 1000):
        r = from_prior(model, x, num_steps=steps, seed=0)
        errors[steps] = (r.value - exact).mean().item()
    assert abs(errors[1000]) < 0.3, errors
    assert abs(errors[1000]) < abs(errors[250]), errors
    result = bdmc(model.model, prior_guide(model.model), torch.zeros(20, 30, dtype=torch.float64),
                  num_steps=1000, num_chains=16, progress=False, seed=0)
    assert result.mean_width <= 1.0, result.mean_width


def test_recommend_steps_names_the_smallest_count_within_tolerance():
    widths = {100: 2.0, 200: -0.8, 300: 0.4, 1000: 0.1, 3000: 0.3}
    assert recommend_steps(widths, 0.5) == 300
    assert recommend_steps(widths, 1.0) == 200
    assert recommend_steps(widths, 0.2) == 1000
    assert recommend_steps(widths, 0.05) is None
    with pytest.raises(pyvae.ConfigError, match="tolerance"):
        recommend_steps(widths, float("nan"))


def test_schedule_runs_from_zero_to_one():
    beta = sigmoid_schedule(50)
    assert beta.shape == (51,) and beta[0] == 0 and beta[-1] == 1
    assert (beta.diff() > 0).all()
    # denser steps at the ends than in the middle
    assert beta.diff()[0] < beta.diff()[25]


def test_ais_weights_are_unbiased():
    """E[w] = p(x) for any number of steps: with many chains, log mean w is log p(x)."""
    model = LinearGaussian.random(x_dim=3, z_dim=2, sigma=0.3, seed=0)
    x = model.sample(4, seed=1)
    result = ais(model.model, prior_guide(model.model), x, num_steps=10, num_chains=4000,
                 leapfrog_steps=3, step_size=0.2, progress=False, seed=0)
    error = result.value - model.log_marginal(x)
    assert error.abs().max() < 0.2, error
    assert result.value.dtype == torch.float64 and result.log_weights.shape == (4000, 4)
    assert 0.3 < float(result.acceptance.mean()) < 0.95


def test_ais_from_the_prior_reaches_exact_log_px_where_iw_does_not():
    model = narrow_model()
    x = model.sample(4, seed=1)
    exact = model.log_marginal(x)
    chains = 256
    result = ais(model.model, prior_guide(model.model), x, num_steps=400, num_chains=chains,
                 leapfrog_steps=3, step_size=0.1, progress=False, seed=0)
    assert (result.value - exact).abs().mean() < 0.1, result.value - exact
    iw = log_likelihood(model.model, prior_guide(model.model), x, num_samples=chains,
                        progress=False, seed=0)
    assert (iw.value - exact).abs().mean() > 2.0, iw.value - exact


def test_ais_with_the_exact_posterior_as_start_is_exact():
    model = narrow_model()
    x = model.sample(3, seed=2)
    result = pyvae.ais(model.model, model.exact_guide, x, num_steps=5, num_chains=4,
                       progress=False, seed=0)
    assert torch.allclose(result.value, model.log_marginal(x), atol=1e-9)
    assert torch.allclose(result.stderr, torch.zeros(3, dtype=torch.float64), atol=1e-6)


def test_bdmc_sandwiches_exact_log_px_and_narrows_with_more_steps():
    model = LinearGaussian.random(x_dim=6, z_dim=2, sigma=0.3, seed=3)
    template = torch.zeros(8, 6, dtype=torch.float64)
    widths = []
    for steps in (5, 80):
        result = bdmc(model.model, prior_guide(model.model), template, num_steps=steps,
                      num_chains=8, leapfrog_steps=3, step_size=0.1, progress=False, seed=0)
        exact = model.log_marginal(result.x)
        assert result.x.shape == template.shape and not torch.equal(result.x, template)
        # stochastic bounds: on average over datapoints, up to Monte-Carlo error
        assert float((result.lower.value - exact).mean()) < 0.05
        assert float((result.upper.value - exact).mean()) > -0.05
        widths.append(result.mean_width)
    assert widths[1] < widths[0] / 3, widths
    assert widths[1] < 1.0, widths


def test_ais_rejects_bad_settings_and_non_invertible_guides():
    model = narrow_model()
    x = model.sample(2)
    with pytest.raises(pyvae.ConfigError, match="num_steps"):
        ais(model.model, model.exact_guide, x, num_steps=0, progress=False)
    with pytest.raises(pyvae.ConfigError, match="step_size"):
        ais(model.model, model.exact_guide, x, step_size=-1.0, progress=False)
    vae = pyvae.VAE(x_dim=10, z_dim=3, hidden=(8,), guide="planar", likelihood="gaussian")
    with pytest.raises(pyvae.ConfigError, match="cannot score arbitrary z"):
        ais(vae.model, vae.guide, torch.rand(2, 10), num_steps=2, num_chains=2, progress=False)


# ------------------------------------------------------------------------------ CLI
@pytest.fixture
def run_dir(tmp_path, binary_data):
    data = tmp_path / "data.pt"
    torch.save({"x": binary_data}, data)
    out = str(tmp_path / "run")
    assert main(["train", "--data-file", str(data), "--valid-size", "100", "--epochs", "1",
                 "--batch-size", "50", "--z-dim", "2", "--hidden", "16", "--out", out,
                 "--no-progress"]) == 0
    return out


def test_cli_evaluate_with_ais_and_bdmc(run_dir, capsys):
    capsys.readouterr()
    assert main(["evaluate", run_dir, "--num-samples", "200", "--max-datapoints", "5", "--ais",
                 "--ais-steps", "20", "--ais-chains", "4", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "AIS 20 steps x 4 chains" in table and "Pareto k" in table
    assert "AIS chain ESS < 2" in table and "datapoints unreliable" in table
    stored = json.load(open(os.path.join(run_dir, "eval.json")))
    assert stored["ais_steps"] == 20 and math.isfinite(stored["ais_log_px"])
    assert stored["khat_over_0.7"] <= 5 and stored["khat_max"] is not None
    # a sloppy AIS and a K=200 IW estimate of a 2-D latent agree to a few nats
    assert abs(stored["ais_minus_iw"]) < 3
    assert main(["bdmc", run_dir, "--num-datapoints", "3", "--steps", "5,40", "--chains", "4",
                 "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "BDMC on 3 datapoints" in table and "bdmc.json" in table
    stored = json.load(open(os.path.join(run_dir, "bdmc.json")))
    runs = stored["runs"]
    assert [r["num_steps"] for r in runs] == [5, 40]
    assert all(r["upper"] > r["lower"] - 0.5 for r in runs)
    assert all(0 <= r["lower_unreliable"] <= 3 for r in runs) and "low chain ESS" in table
    # the recommendation follows the tolerance: a huge one takes the smallest count
    assert stored["tolerance"] == 0.5
    assert stored["recommended_steps"] == recommend_steps(
        {r["num_steps"]: r["mean_width"] for r in runs}, 0.5)
    assert main(["bdmc", run_dir, "--num-datapoints", "3", "--steps", "5,40", "--chains", "4",
                 "--tolerance", "1000", "--no-progress"]) == 0
    assert "5 steps give a width within 1000 nats: pass --ais-steps 5 --ais-chains 4" in \
        capsys.readouterr().out
    assert main(["bdmc", run_dir, "--num-datapoints", "3", "--steps", "5", "--chains", "4",
                 "--tolerance", "1e-9", "--no-progress"]) == 0
    assert "no step count in 5 reaches a width within 1e-09 nats" in capsys.readouterr().out
    assert main(["bdmc", run_dir, "--tolerance", "-1"]) == 2
    assert "tolerance must be a positive number" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["bdmc", run_dir, "--steps", "0"])
    assert exit_.value.code == 2 and "positive" in capsys.readouterr().err


def test_ais_on_a_constrained_latent():
    """z ~ Gamma(2, 1), x_j | z ~ Poisson(z) for 5 counts: AIS runs on log z (biject_to of the
    positive support, with its log-Jacobian) and matches the exact negative-binomial marginal

        log p(x) = a log b - lgamma(a) + lgamma(a + S) - (a + S) log(b + n) - sum_j lgamma(x_j + 1).
    """
    a, b, n = 2.0, 1.0, 5

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Gamma(torch.tensor(a, dtype=torch.float64), b))
            rate = z.unsqueeze(-1).expand(z.shape + (x.shape[-1],))
            pyro.sample("x", dist.Poisson(rate).to_event(1), obs=x)

    x = torch.tensor([[0, 1, 0, 2, 1], [5, 7, 4, 6, 9], [1, 1, 1, 1, 1]], dtype=torch.float64)
    s = x.sum(-1)
    exact = (a * math.log(b) - math.lgamma(a) + torch.lgamma(a + s) - (a + s) * math.log(b + n)
             - torch.lgamma(x + 1).sum(-1))
    result = ais(model, prior_guide(model), x, num_steps=100, num_chains=256, leapfrog_steps=3,
                 step_size=0.2, progress=False, seed=0)
    error = result.value - exact
    assert (error.abs() < 3 * result.stderr + 0.02).all() and error.abs().max() < 0.1, error

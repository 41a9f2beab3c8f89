"""AIS and BDMC on the linear-Gaussian model, where log p(x) is known exactly."""
import math

import pytest
import torch

import pyvae
from pyvae.infer.ais import ais, bdmc, prior_guide, sigmoid_schedule
from pyvae.evaluate import log_likelihood
from pyvae.linear_gaussian import LinearGaussian

pytestmark = pytest.mark.usefixtures("one_thread")


def narrow_model():
    """A 3-D latent whose posterior sds are ~0.1: importance sampling from the prior is poor."""
    return LinearGaussian.random(x_dim=10, z_dim=3, sigma=0.3, seed=0)


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
                        progress=False)
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
    from pyvae.cli import main

    data = tmp_path / "data.pt"
    torch.save({"x": binary_data}, data)
    out = str(tmp_path / "run")
    assert main(["train", "--data-file", str(data), "--valid-size", "100", "--epochs", "1",
                 "--batch-size", "50", "--z-dim", "2", "--hidden", "16", "--out", out,
                 "--no-progress"]) == 0
    return out


def test_cli_evaluate_with_ais_and_bdmc(run_dir, capsys):
    import json
    import os

    from pyvae.cli import main

    capsys.readouterr()
    assert main(["evaluate", run_dir, "--num-samples", "200", "--max-datapoints", "5", "--ais",
                 "--ais-steps", "20", "--ais-chains", "4", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "AIS 20 steps x 4 chains" in table and "Pareto k" in table
    stored = json.load(open(os.path.join(run_dir, "eval.json")))
    assert stored["ais_steps"] == 20 and math.isfinite(stored["ais_log_px"])
    assert stored["khat_over_0.7"] <= 5 and stored["khat_max"] is not None
    # a sloppy AIS and a K=200 IW estimate of a 2-D latent agree to a few nats
    assert abs(stored["ais_minus_iw"]) < 3
    assert main(["bdmc", run_dir, "--num-datapoints", "3", "--steps", "5,40", "--chains", "4",
                 "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "BDMC on 3 datapoints" in table and "bdmc.json" in table
    runs = json.load(open(os.path.join(run_dir, "bdmc.json")))["runs"]
    assert [r["num_steps"] for r in runs] == [5, 40]
    assert all(r["upper"] > r["lower"] - 0.5 for r in runs)
    with pytest.raises(SystemExit) as exit_:
        main(["bdmc", run_dir, "--steps", "0"])
    assert exit_.value.code == 2 and "positive" in capsys.readouterr().err


def test_ais_on_a_constrained_latent():
    """z ~ Gamma(2, 1), x_j | z ~ Poisson(z) for 5 counts: AIS runs on log z (biject_to of the
    positive support, with its log-Jacobian) and matches the exact negative-binomial marginal

        log p(x) = a log b - lgamma(a) + lgamma(a + S) - (a + S) log(b + n) - sum_j lgamma(x_j + 1).
    """
    import pyro
    import pyro.distributions as dist

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

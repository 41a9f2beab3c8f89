"""pyvae.evaluate, checked against exact answers on the linear-Gaussian model: log p(x), p(z|x)
and the ELBO of any Gaussian q are known in closed form there (the objectives' own tests are in
tests/test_objectives.py)."""
import json
import math
import os
import re

import pytest
import torch

import pyro
import pyro.distributions as dist

from pyvae import ConfigError, Trainer, VAE
from pyvae import evaluate as ev
from pyvae.cli import main
from pyvae.linear_gaussian import LinearGaussian
from runs import config, load_vae

N = 20


@pytest.fixture
def x(lg):
    return lg.sample(N, seed=1)


def diagonal_q(lg, x, shift=0.2, scale=0.4):
    """A mismatched mean-field Gaussian: the posterior mean moved by ``shift``, fixed scales."""
    loc = lg.posterior(x).loc + shift
    return dist.Normal(loc, torch.full_like(loc, scale)).to_event(1)


def diagonal_guide(lg, shift=0.2, scale=0.4, plate=None):
    plate = plate or (lambda x: pyro.plate("data", x.shape[0]))

    def guide(x):
        with plate(x):
            pyro.sample("z", diagonal_q(lg, x, shift, scale))
    return guide


def exact_elbo(lg, q, x):
    """ELBO(q) = log p(x) - KL(q || p(z|x)), in closed form for Gaussian q."""
    post = lg.posterior(x)
    q_mvn = dist.MultivariateNormal(q.base_dist.loc, scale_tril=torch.diag_embed(q.base_dist.scale))
    return lg.log_marginal(x) - torch.distributions.kl_divergence(q_mvn, post)


# ------------------------------------------------------------------------------ exact answers
@pytest.mark.parametrize("k, chunk", [(1, None), (100, None), (100, 7)])
def test_exact_posterior_gives_exact_log_px(lg, x, k, chunk):
    # with q = p(z|x), every weight equals p(x): the estimate is exact for any K
    result = ev.log_likelihood(lg.model, lg.exact_guide, x, num_samples=k, chunk_size=chunk,
                               batch_size=8, progress=False)
    assert result.value.dtype == torch.float64 and result.value.shape == (N,)
    assert torch.allclose(result.value, lg.log_marginal(x), atol=1e-4, rtol=0)
    assert torch.allclose(result.ess, torch.full((N,), float(k), dtype=torch.float64))
    if k > 1:
        assert result.stderr.abs().max() < 1e-6


def test_elbo_matches_closed_form(lg, x):
    guide = diagonal_guide(lg)
    estimate = ev.elbo(lg.model, guide, x, num_samples=2000)
    exact = exact_elbo(lg, diagonal_q(lg, x), x)
    assert exact.mean() < lg.log_marginal(x).mean() - 0.2  # the guide is visibly off
    z = (estimate.value - exact) / estimate.stderr
    assert z.abs().max() < 4.5
    assert abs(estimate.mean - exact.mean().item()) < 4 * estimate.mean_stderr


def test_bounds_are_ordered_and_converge(lg, x):
    guide = diagonal_guide(lg)
    exact = lg.log_marginal(x).mean().item()
    elbo = ev.elbo(lg.model, guide, x, num_samples=1000)
    iwae10 = ev.iwae_bound(lg.model, guide, x, k=10, repeats=100)
    iwae1000 = ev.iwae_bound(lg.model, guide, x, k=1000, repeats=5)
    ll = ev.log_likelihood(lg.model, guide, x, num_samples=5000, progress=False)

    def below(a, b, se):  # a <= b within 3 standard errors
        return a <= b + 3 * se
    assert below(elbo.mean, iwae10.mean, math.hypot(elbo.mean_stderr, iwae10.mean_stderr))
    assert below(iwae10.mean, iwae1000.mean, math.hypot(iwae10.mean_stderr, iwae1000.mean_stderr))
    assert below(iwae1000.mean, exact, iwae1000.mean_stderr)
    # the differences are real, not within noise: the bounds tighten with k
    assert iwae10.mean - elbo.mean > 0.1 and iwae1000.mean - iwae10.mean > 0.01
    assert abs(ll.mean - exact) < 0.05
    # per datapoint, the error is within its reported standard error
    assert ((ll.value - lg.log_marginal(x)).abs() < 4.5 * ll.stderr).all()
    # the K-sample ELBO that comes with the estimate agrees with the separate one
    assert abs(ll.summary()["elbo"] - elbo.mean) < 4 * math.hypot(elbo.mean_stderr, ll.summary()["elbo_stderr"])


def test_stderr_matches_spread_over_repeats(lg):
    x = lg.sample(8, seed=2)
    guide = diagonal_guide(lg, shift=0.2, scale=0.7)
    runs = []
    for seed in range(40):
        pyro.set_rng_seed(seed)
        runs.append(ev.log_likelihood(lg.model, guide, x, num_samples=100, progress=False))
    values = torch.stack([r.value for r in runs])
    reported = torch.stack([r.stderr for r in runs]).mean(0)
    ratio = values.std(0) / reported
    assert ((ratio > 0.6) & (ratio < 1.6)).all(), ratio
    # ESS and the error come from the same weights: stderr^2 = (K / ESS - 1) / (K - 1)
    for r in runs:
        assert torch.allclose(r.stderr.square(), (100 / r.ess - 1) / 99, rtol=1e-9, atol=1e-12)
    # and the ESS is K p(x)^2 / E_q[w^2], up to O(1/K): E_q[w^2] / p(x)^2 = E_q[(p(z|x)/q(z))^2]
    # integrated on a grid over the 2-D latent
    ess = torch.stack([r.ess for r in runs]).mean(0)
    expected = 100 / _second_moment_ratio(lg, x, diagonal_q(lg, x, shift=0.2, scale=0.7))
    assert torch.allclose(ess, expected, rtol=0.15), (ess, expected)


def _second_moment_ratio(lg, x, q, half=6.0, m=241):
    """E_q[(p(z|x) / q(z|x))^2] per datapoint, by quadrature on a grid over the 2-D latent."""
    post = lg.posterior(x)
    t = torch.linspace(-half, half, m, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).reshape(-1, 1, 2)
    z = grid + post.loc.to(torch.float64)  # centred on each posterior mean
    log_post, log_q = post.log_prob(z), q.log_prob(z.to(q.base_dist.loc.dtype)).to(torch.float64)
    cell = float(t[1] - t[0]) ** 2
    return (torch.exp(2 * log_post - log_q) * cell).sum(0)


def test_chunking_gives_the_same_draws_and_numbers(lg, x):
    # torch's CPU normal sampler fills 16 values at a time, so chunks of 16k values reproduce
    # the single draw exactly; the streaming logsumexp then agrees to rounding
    guide = diagonal_guide(lg)
    results = []
    for chunk in (None, 64, 16, 32):
        pyro.set_rng_seed(3)
        results.append(ev.log_likelihood(lg.model, guide, x, num_samples=64, chunk_size=chunk,
                                         progress=False))
    for r in results[1:]:
        assert torch.allclose(r.value, results[0].value, atol=1e-12, rtol=0)
        assert torch.allclose(r.stderr, results[0].stderr, atol=1e-10, rtol=0)
        assert torch.allclose(r.elbo, results[0].elbo, atol=1e-12, rtol=0)


def test_streaming_logsumexp_is_stable():
    acc = ev._Accumulator(2, "cpu")
    big = torch.tensor([[-1000.0, 1000.0], [-1001.0, 999.0]], dtype=torch.float64)
    acc.update(big[:1])
    acc.update(big[1:])
    value, _, ess = acc.log_mean_exp()
    expected = torch.logsumexp(big, 0) - math.log(2)
    assert torch.allclose(value, expected) and torch.isfinite(ess).all()


# ------------------------------------------------------------------------------ subsampling
def _subsampled(lg, factor=10):
    """Model and guide whose "data" plate claims ``factor`` times more data than the batch."""
    def plate(x):
        return pyro.plate("data", factor * x.shape[0], subsample=torch.arange(x.shape[0]))

    def model(x):
        with plate(x):
            z = pyro.sample("z", lg.prior())
            pyro.sample("x", lg.likelihood(z), obs=x)
    return model, plate


def test_subsampled_plate_does_not_scale_the_weights(lg, x):
    model, plate = _subsampled(lg)
    # exact posterior: the estimate is log p(x) per datapoint, not 10 log p(x)
    def exact_sub(x):
        with plate(x):
            pyro.sample("z", lg.posterior(x))
    result = ev.log_likelihood(model, exact_sub, x, num_samples=10, progress=False)
    assert torch.allclose(result.value, lg.log_marginal(x), atol=1e-4, rtol=0)
    # a mismatched guide: the same draws give the same per-datapoint values as without subsampling
    pyro.set_rng_seed(5)
    plain = ev.log_likelihood(lg.model, diagonal_guide(lg), x, num_samples=500, progress=False)
    pyro.set_rng_seed(5)
    sub = ev.log_likelihood(model, diagonal_guide(lg, plate=plate), x, num_samples=500, progress=False)
    assert torch.allclose(sub.value, plain.value, atol=1e-10, rtol=0)
    # Pyro's RenyiELBO scales the log-weights by N / batch before its logsumexp: with the very
    # same model and guide its "bound" lands far above log p(x), the pitfall avoided above
    renyi = pyro.infer.RenyiELBO(alpha=0, num_particles=500, vectorize_particles=True)
    biased = -renyi.loss(model, diagonal_guide(lg, plate=plate), x) / (10 * N)
    assert biased - lg.log_marginal(x).mean().item() > 1.0


def test_site_outside_data_plate_is_refused(lg, x):
    def model(x):
        pyro.sample("w", dist.Normal(0.0, 1.0))
        lg.model(x)

    def guide(x):
        pyro.sample("w", dist.Normal(0.0, 1.0))
        lg.exact_guide(x)
    with pytest.raises(ConfigError, match="site 'w' is outside the 'data' plate"):
        ev.log_likelihood(model, guide, x, num_samples=2, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_samples=0), "num_samples must be a positive integer"),
    (dict(num_samples=10, chunk_size=0), "chunk_size must be a positive integer"),
    (dict(num_samples=10, batch_size=-1), "batch_size must be a positive integer"),
])
def test_bad_counts(lg, x, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        ev.log_likelihood(lg.model, lg.exact_guide, x, progress=False, **kwargs)


# ------------------------------------------------------------------------------ gaps
def test_gaps_split_into_approximation_and_amortization(lg, x):
    # refined guide = the exact posterior: no approximation gap, all of the gap is amortization
    guide = diagonal_guide(lg)
    result = ev.gaps(lg.model, guide, x, num_samples=2000, elbo_samples=500,
                     refined_guide=lg.exact_guide, progress=False)
    exact_gap = (lg.log_marginal(x) - exact_elbo(lg, diagonal_q(lg, x), x)).mean().item()
    s = result.summary()
    se = math.hypot(s["log_px_stderr"], s["elbo_stderr"])
    assert exact_gap > 1.0
    assert abs(s["total_gap"] - exact_gap) < 4 * se + 0.02  # + the estimate's small bias
    assert abs(s["approximation_gap"]) < 4 * s["log_px_stderr"] + 0.02
    assert abs(s["amortization_gap"] - exact_gap) < 4 * se + 0.02
    assert torch.allclose(result.total, result.approximation + result.amortization)
    plain = ev.gaps(lg.model, guide, x, num_samples=100, progress=False)
    assert plain.approximation is None and "amortization_gap" not in plain.summary()


# ------------------------------------------------------------------------------ latent usage
def test_active_units_and_kl_per_dimension(lg):
    x = torch.linspace(-2, 2, 200, dtype=torch.float64).unsqueeze(-1).expand(-1, 5)

    def guide(x):
        # dimension 0 follows x; dimension 1 ignores it (an inactive unit, collapsed to the prior)
        loc = torch.stack([x[:, 0], torch.zeros_like(x[:, 0])], -1)
        scale = torch.tensor([0.5, 1.0], dtype=x.dtype).expand_as(loc)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))
    units = ev.active_units(guide, x)
    assert units["num_active"] == 1 and units["active"].tolist() == [True, False]
    assert torch.allclose(units["variance"][0], x[:, 0].var(unbiased=False))
    kl = ev.kl_per_dimension(guide, x, model=lg.model)
    # KL(N(m, s^2) || N(0, 1)) = (s^2 + m^2 - 1)/2 - log s
    expected0 = (0.25 + x[:, 0].pow(2) - 1).mul(0.5).sub(math.log(0.5)).mean()
    assert torch.allclose(kl, torch.stack([expected0, torch.zeros(())]).double(), atol=1e-10)
    same = ev.kl_per_dimension(guide, x, prior=lg.prior())
    assert torch.allclose(kl, same)


def test_kl_to_prior_matches_closed_form_and_works_for_joint_guides(lg, x):
    """KL(q || p(z)) by Monte Carlo over the guide's own draws equals the closed form."""
    pyro.set_rng_seed(0)
    q = diagonal_q(lg, x)
    exact = torch.distributions.kl_divergence(q, lg.prior().expand([x.shape[0]])).mean()
    mc = ev.kl_to_prior(diagonal_guide(lg), x, model=lg.model, num_samples=2000)
    assert float(mc) == pytest.approx(float(exact), abs=0.02)
    # a joint (non-factorized) q: the exact posterior, KL(N(mu, S) || N(0, I)) in closed form
    post = lg.posterior(x)
    exact_joint = torch.distributions.kl_divergence(
        post, dist.MultivariateNormal(torch.zeros(2, dtype=x.dtype), torch.eye(2, dtype=x.dtype))).mean()
    mc_joint = ev.kl_to_prior(lg.exact_guide, x, model=lg.model, num_samples=2000)
    assert float(mc_joint) == pytest.approx(float(exact_joint), abs=0.02)


def test_kl_per_dimension_monte_carlo_without_closed_form():
    x = torch.zeros(4, 3)
    prior = dist.StudentT(4.0, torch.zeros(2), torch.ones(2)).to_event(1)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], 2), 0.5).to_event(1))
    pyro.set_rng_seed(0)
    kl = ev.kl_per_dimension(guide, x, prior=prior, num_samples=20000)
    grid = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    q = torch.distributions.Normal(0.0, 0.5)
    p = torch.distributions.StudentT(4.0, 0.0, 1.0)
    density = q.log_prob(grid).exp()
    exact = torch.trapezoid(density * (q.log_prob(grid) - p.log_prob(grid)), grid)
    assert torch.allclose(kl, exact.expand(2), atol=0.02)


# ------------------------------------------------------------------------------ training with iwae
def test_trainer_trains_with_iwae(binary_data):
    vae = VAE(x_dim=12, z_dim=2, hidden=(16,))
    history = Trainer(vae, loss="iwae", particles=8, epochs=2, batch_size=100,
                      progress=False, lr=3e-3).fit(binary_data)
    assert history[1]["train_elbo"] > history[0]["train_elbo"]
    with pytest.raises(ConfigError, match="unknown loss 'iwea'; choose one of: .*iwae"):
        Trainer(vae, loss="iwea")  # TrainConfig checks the name; make_objective trusts it


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda(lg, x):
    lg_cuda = LinearGaussian(lg.weight.cuda(), lg.bias.cuda(), lg.sigma)
    result = ev.log_likelihood(lg_cuda.model, lg_cuda.exact_guide, x.cuda(), num_samples=50,
                               progress=False)
    assert result.value.is_cuda
    assert torch.allclose(result.value.cpu(), lg.log_marginal(x), atol=1e-4)


# ------------------------------------------------------------------------------ CLI
def _train_run(tmp_path, binary_data, name, *flags):
    """A one-epoch run on the small binary data, trained with the CLI; its directory."""
    data = tmp_path / "data.pt"
    torch.save({"x": binary_data}, data)
    out = str(tmp_path / name)
    assert main(["train", "--data-file", str(data), "--valid-size", "100", "--epochs", "1",
                 "--batch-size", "50", "--z-dim", "2", "--hidden", "16", "--out", out,
                 "--no-progress", *flags]) == 0
    return out


def _agrees_with_fresh_draws(run_dir, result):
    """eval.json's log p^(x) and ELBO agree, within their errors, with the public estimators run
    on fresh draws of the run's model (rebuilt from its checkpoint) on the same datapoints."""
    vae = load_vae(run_dir)
    data_file = config(run_dir)["data"]["data_file"]
    x = torch.load(data_file, weights_only=True)["x"][-result["num_datapoints"]:]
    pyro.set_rng_seed(result["seed"] + 1000)
    ll = ev.log_likelihood(vae.model, vae.guide, x, num_samples=500, progress=False).summary()
    assert abs(ll["log_px"] - result["log_px"]) < 4 * math.hypot(ll["log_px_stderr"], result["log_px_stderr"])
    assert abs(ll["elbo"] - result["elbo"]) < 4 * math.hypot(ll["elbo_stderr"], result["elbo_stderr"])


@pytest.fixture
def run_dir(tmp_path, binary_data):
    return _train_run(tmp_path, binary_data, "run")


def test_cli_evaluate_table_and_json(run_dir, capsys):
    capsys.readouterr()
    assert main(["evaluate", run_dir, "--num-samples", "50", "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "log p(x), K=50" in table and "active units" in table and "eval.json" in table
    stored = json.load(open(os.path.join(run_dir, "eval.json")))
    assert stored["num_samples"] == 50 and stored["num_datapoints"] == 100
    # (elbo <= log_px holds for any weights, by Jensen): check both against fresh draws instead
    _agrees_with_fresh_draws(run_dir, stored)
    assert f"{stored['log_px']:.3f}" in table
    assert main(["evaluate", run_dir, "--num-samples", "50", "--json", "--chunk-size", "7",
                 "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    se = math.hypot(printed["log_px_stderr"], stored["log_px_stderr"])
    assert abs(printed["log_px"] - stored["log_px"]) < 4 * se
    assert printed == json.load(open(os.path.join(run_dir, "eval.json")))


def test_cli_evaluate_flow_guide(tmp_path, binary_data, capsys):
    """A guide that does not factorize over dimensions still gets its KL (and no per-dim KL)."""
    out = _train_run(tmp_path, binary_data, "iaf", "--guide", "iaf")
    capsys.readouterr()
    assert main(["evaluate", out, "--num-samples", "20", "--json", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["kl"] > 0 and result["kl_per_dimension"] is None
    _agrees_with_fresh_draws(out, result)


@pytest.mark.parametrize("args, message", [
    (["evaluate", "{tmp}", "--num-samples", "10"], "is not a pyvae run directory"),
    (["evaluate", "{run}", "--num-samples", "0"], "--num-samples: must be positive"),
    (["evaluate", "{run}", "--num-samples", "-3"], "--num-samples: must be positive"),
    (["evaluate", "{run}", "--split", "nope"], "unknown split 'nope'"),
])
def test_cli_evaluate_bad_input_one_line_exit_2(args, message, run_dir, tmp_path, capsys):
    args = [a.format(tmp=str(tmp_path / "nothing"), run=run_dir) for a in args]
    capsys.readouterr()
    try:
        code = main(args)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and "Traceback" not in err


# ------------------------------------------------------------------------------ docs
def _doc_blocks():
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "evaluation.md")
    return re.findall(r"```python\n(.*?)```", open(path).read(), re.S)


def test_docs_quick_start_runs():
    exec(compile(_doc_blocks()[0], "docs/evaluation.md", "exec"), {})


@pytest.mark.slow
def test_docs_every_block_runs():
    namespace = {}
    for block in _doc_blocks():
        exec(compile(block, "docs/evaluation.md", "exec"), namespace)
    assert namespace["g"].summary()["approximation_gap"] < 0.05


def test_pyros_checks_run_on_each_batchs_first_chunk_only(lg, x):
    """Validation (x in the likelihood's support, valid parameters) runs on the first chunk of
    each batch as Pyro's switch says; the batch's other chunks run unchecked; the switch is
    restored; the numbers do not depend on it."""
    seen = []

    def guide(xb):
        seen.append(dist.is_validation_enabled())
        lg.exact_guide(xb)

    with pyro.validation_enabled(True):
        checked = ev.log_likelihood(lg.model, guide, x, num_samples=12, chunk_size=3,
                                    batch_size=10, progress=False, seed=0)
        assert dist.is_validation_enabled()
    # two batches of four chunks each (the first call traces the plates)
    assert seen[-8:] == [True, False, False, False] * 2
    seen.clear()
    with pyro.validation_enabled(False):
        unchecked = ev.log_likelihood(lg.model, guide, x, num_samples=12, chunk_size=3,
                                      batch_size=10, progress=False, seed=0)
    assert not any(seen)
    assert torch.equal(checked.log_px, unchecked.log_px)
    # a value outside the support is still Pyro's error under validation
    bernoulli = VAE(x_dim=5, z_dim=2, hidden=(4,))
    with pyro.validation_enabled(True), pytest.raises(ValueError, match="support"):
        ev.log_likelihood(bernoulli.model, bernoulli.guide, torch.full((4, 5), 0.5),
                          num_samples=6, chunk_size=2, progress=False)

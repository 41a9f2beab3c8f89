"""``pyvae evaluate`` against exact answers: a VAE with a 2-D latent, whose log p(x), ELBO, ESS and
standard errors are integrals over z computed by quadrature on a grid, independently of the
importance sampler. Every number eval.json reports is checked against its own recomputation."""
import json
import math
import os

import pytest
import torch

import pyro

from pyvae.evaluate import log_weights
from runs import Quadrature, binary_rows, cli, data_rows, load_vae, train, write_data

K = 2000
VALID = 200
N_EXACT = 12  # datapoints integrated by quadrature
K_RAW = 500  # samples per datapoint when all 200 are evaluated


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    base = tmp_path_factory.mktemp("exact")
    x, _ = binary_rows(500)
    data = write_data(base / "data.pt", x)
    out = train(base / "run", data, "--valid-size", VALID, "--binarize", "none", "--batch-size", "10",
                "--z-dim", "2", "--hidden", "16", "--lr", "0.02", "--threads", "1", epochs=6)
    vae = load_vae(out)
    xs = data_rows(data, VALID, "test")
    return out, vae, xs, Quadrature(vae, xs[:N_EXACT])


def evaluate(run_dir, *flags, k=K):
    assert cli("evaluate", run_dir, "--num-samples", k, "--no-progress", "--threads", "1", *flags) == 0
    with open(os.path.join(run_dir, "eval.json")) as f:
        return json.load(f)


def test_quadrature_is_converged(run):
    """The grid holds all of q's mass and the integrals do not move on a finer, wider grid."""
    _, vae, xs, quad = run
    assert torch.allclose(quad.q_mass, torch.ones_like(quad.q_mass), atol=1e-6)
    finer = Quadrature(vae, xs[:2], half=8.0, m=361)
    assert torch.allclose(finer.log_px, quad.log_px[:2], atol=1e-6, rtol=0)
    assert torch.allclose(finer.elbo, quad.elbo[:2], atol=1e-6, rtol=0)


def test_evaluate_matches_the_exact_integrals(run, one_thread):
    out, vae, xs, quad = run
    xs = xs[:N_EXACT]
    r = evaluate(out, "--max-datapoints", N_EXACT)
    n = len(xs)
    assert r["num_datapoints"] == n and r["num_samples"] == K and r["split"] == "test"
    assert r["z_dim"] == 2 and r["epoch"] == 6
    exact_log_px, exact_elbo = float(quad.log_px.mean()), float(quad.elbo.mean())
    # the guide is visibly not the posterior, so the gap is not zero and the checks have teeth
    assert exact_log_px - exact_elbo > 0.05

    # the estimates are within their reported errors of the exact values
    assert abs(r["log_px"] - exact_log_px) < 4 * r["log_px_stderr"] + 1e-9
    assert abs(r["elbo"] - exact_elbo) < 4 * r["elbo_stderr"]
    # the ELBO's reported error is the true one, sqrt(Var_q[log w] / K), integrated exactly
    assert r["elbo_stderr"] == pytest.approx(quad.elbo_stderr(K), rel=0.1)

    # derived numbers, recomputed from the reported ones and from the exact ones
    assert r["nll"] == pytest.approx(-r["log_px"], abs=1e-12)
    assert r["bits_per_dim"] == pytest.approx(r["nll"] / (vae.x_dim * math.log(2)), rel=1e-12)
    assert r["gap"] == pytest.approx(r["log_px"] - r["elbo"], abs=1e-12)
    exact_gap = exact_log_px - exact_elbo
    assert abs(r["gap"] - exact_gap) < 4 * (r["log_px_stderr"] + r["elbo_stderr"])

    # KL(q(z|x) || p(z)) per dimension in closed form for a diagonal Gaussian and N(0, I)
    with torch.no_grad():
        q = vae.encode(xs).base_dist
        kl_dims = (0.5 * (q.scale.square() + q.loc.square() - 1) - q.scale.log()).double().mean(0)
        # active units: dimensions whose code mean varies across x by more than 0.01
        active = int((q.loc.double().var(0, unbiased=False) > 0.01).sum())
    assert r["kl_per_dimension"] == pytest.approx(kl_dims.tolist(), rel=1e-5, abs=1e-6)
    # the total KL is a Monte-Carlo estimate (10 draws per datapoint): within a loose band
    assert r["kl"] == pytest.approx(float(kl_dims.sum()), abs=0.15 + 0.05 * float(kl_dims.sum()))
    assert r["active_units"] == active


def test_log_weights_give_the_reported_statistics(run, one_thread):
    """Each statistic of eval.json, recomputed from raw log-weights of fresh draws (the public
    ``pyvae.evaluate.log_weights``): logsumexp - log K, the ESS (sum w)^2 / sum w^2, the
    delta-method error sqrt((K/ESS - 1)/(K - 1)), the mean and spread of log w. The tolerance is
    the spread of each statistic over replicate sets of K draws."""
    out, vae, xs, quad = run
    r = evaluate(out, "--seed", "11", k=K_RAW)
    assert r["num_datapoints"] == VALID
    n, reps = len(xs), []
    pyro.set_rng_seed(12345)
    for _ in range(10):
        with torch.no_grad():
            lw, _ = log_weights(vae.model, vae.guide, xs, K_RAW)
        assert lw.shape == (K_RAW, n)
        w = torch.softmax(lw, 0)
        ess = 1.0 / w.square().sum(0)
        se = ((K_RAW / ess - 1) / (K_RAW - 1)).sqrt()
        reps.append({
            "log_px": float((torch.logsumexp(lw, 0) - math.log(K_RAW)).mean()),
            "log_px_stderr": float(se.square().sum().sqrt() / n),
            "elbo": float(lw.mean(0).mean()),
            "elbo_stderr": float((lw.var(0) / K_RAW).sum().sqrt() / n),
            "ess_mean": float(ess.mean()), "ess_min": float(ess.min())})
    for key in reps[0]:
        values = torch.tensor([rep[key] for rep in reps], dtype=torch.float64)
        spread = float(values.std())
        assert abs(r[key] - float(values.mean())) < 4 * spread + 1e-6 * abs(r[key]), (
            key, r[key], values.tolist())
    # and the replicate spread of log p^(x) is what the reported error says it is
    spread = float(torch.tensor([rep["log_px"] for rep in reps]).std())
    assert 0.4 < spread / r["log_px_stderr"] < 2.5

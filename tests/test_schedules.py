"""Schedules and the β-weighted objective inside the training loop, seen from outside: the
learning rate each epoch records is the one the optimizer steps with (also after a resume), and a
run trained on a β-weighted loss validates with the plain ELBO, recomputed here from its
checkpoint."""
import math

import pytest
import torch

import pyro

import pyvae
from runs import binary_rows, cli, data_rows, load_vae, metrics, train, without_seconds, write_data

FLAGS = ["--z-dim", "2", "--hidden", "8", "--batch-size", "20", "--valid-size", "20",
         "--threads", "1", "--lr", "0.002"]
STEPS = 4  # 80 training rows in batches of 20


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    x, _ = binary_rows(100)
    return write_data(tmp_path_factory.mktemp("sched") / "data.pt", x)


@pytest.fixture
def stepped_lr(monkeypatch):
    """The learning rate of every optimizer step, read from the torch optimizer itself."""
    seen = []
    step = torch.optim.Adam.step

    def spy(self, *args, **kwargs):
        seen.append(sorted({g["lr"] for g in self.param_groups}))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    return seen


def burda(epoch):
    """Burda et al.: stage i lasts 3^i epochs at 10^(-i/7) times the base rate."""
    i = 0
    while epoch >= sum(3 ** j for j in range(i + 1)):
        i += 1
    return 10 ** (-min(i, 7) / 7)


@pytest.mark.parametrize("schedule, epochs, factor", [
    ("burda", 5, burda),
    ("cosine", 4, lambda e: 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * e / 4))),
])
def test_recorded_lr_is_the_one_the_optimizer_steps_with(schedule, epochs, factor, tmp_path,
                                                         data_file, stepped_lr, one_thread):
    out = train(tmp_path / "run", data_file, *FLAGS, "--schedule", schedule, epochs=epochs)
    expected = [0.002 * factor(e) for e in range(epochs)]
    assert [r["lr"] for r in metrics(out)] == pytest.approx(expected, rel=1e-12)
    assert stepped_lr == [[pytest.approx(lr, rel=1e-12)] for lr in expected for _ in range(STEPS)]


def test_lr_after_resume_follows_the_schedule(tmp_path, data_file, stepped_lr, one_thread):
    """Burda's schedule over 5 epochs: 1, a, a, a, a^2 (a = 10^(-1/7)). Stopped after 3 epochs and
    resumed, epochs 4 and 5 step with the schedule's rates, not one stored with the optimizer."""
    expected = [0.002 * burda(e) for e in range(5)]
    assert len(set(expected[2:])) == 2
    ref = train(tmp_path / "ref", data_file, *FLAGS, "--schedule", "burda", epochs=5)
    del stepped_lr[:]
    cut = train(tmp_path / "cut", data_file, *FLAGS, "--schedule", "burda", epochs=3)
    assert cli("train", "--resume", cut, "--epochs", 5, "--no-progress") == 0
    assert [r["lr"] for r in metrics(cut)] == pytest.approx(expected, rel=1e-12)
    assert stepped_lr == [[pytest.approx(lr, rel=1e-12)] for lr in expected for _ in range(STEPS)]
    assert without_seconds(metrics(cut)) == without_seconds(metrics(ref))


def _true_elbo(vae, x, beta):
    """(ELBO, β-ELBO, tolerance) of x under the VAE: the ELBO from 400 draws per datapoint, the
    β-weighted objective from it and the closed-form KL, and 4 standard errors of a one-draw
    mean over x (what validation computes)."""
    pyro.set_rng_seed(99)
    est = pyvae.evaluate.elbo(vae.model, vae.guide, x, num_samples=400)
    with torch.no_grad():
        q = vae.encode(x).base_dist
        kl = (0.5 * (q.scale.square() + q.loc.square() - 1) - q.scale.log()).sum(-1).double()
    one_draw_sd = (est.stderr * math.sqrt(400)).square().mean().sqrt()
    tol = 4 * float(one_draw_sd) / math.sqrt(len(x)) + 4 * est.mean_stderr
    return est.mean, est.mean + (1 - beta) * float(kl.mean()), tol


@pytest.fixture(scope="module")
def bigger_data_file(tmp_path_factory):
    x, _ = binary_rows(400)
    return write_data(tmp_path_factory.mktemp("beta") / "data.pt", x)


@pytest.mark.parametrize("flags, beta", [(["--beta", "0"], 0.0),
                                         # 10 steps per epoch: (2 + 9/10) / 10 after 3 epochs
                                         (["--kl-warmup", "10"], 0.29)])
def test_beta_runs_validate_with_the_unscaled_elbo(flags, beta, tmp_path, bigger_data_file, one_thread):
    out = train(tmp_path / "run", bigger_data_file, "--z-dim", "2", "--hidden", "8", "--batch-size", "20",
                "--threads", "1", "--lr", "0.02", "--binarize", "none", "--valid-size", "200",
                *flags, epochs=3)
    records = metrics(out)
    assert records[-1]["beta"] == pytest.approx(beta)
    vae = load_vae(out)
    x = data_rows(bigger_data_file, 200, "valid")
    elbo, beta_elbo, tol = _true_elbo(vae, x, beta)
    # the two objectives differ by (1 - β) KL, well beyond the noise: the check can fail
    assert abs(beta_elbo - elbo) > 3 * tol, (elbo, beta_elbo, tol)
    assert abs(records[-1]["valid_elbo"] - elbo) < tol, (records[-1]["valid_elbo"], elbo, beta_elbo, tol)

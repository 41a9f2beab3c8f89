"""Each script in examples/ runs end to end with tiny settings on synthetic data."""
import os
import re
import subprocess
import sys

import pytest
import torch

from pyvae.cli import main

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def run_example(name, *args):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def data_file(tmp_path):
    g = torch.Generator().manual_seed(0)
    prototypes = torch.bernoulli(torch.full((4, 16), 0.5), generator=g)
    labels = torch.randint(0, 4, (300,), generator=g)
    x = (prototypes[labels] + torch.bernoulli(torch.full((300, 16), 0.1), generator=g)) % 2
    path = str(tmp_path / "data.pt")
    torch.save({"x": x, "labels": labels}, path)
    return path


def test_train_mnist(data_file, tmp_path):
    out = str(tmp_path / "run")
    stdout = run_example("train_mnist.py", "--data-file", data_file, "--valid-size", "60",
                         "--epochs", "1", "--z-dim", "2", "--hidden", "8", "--out", out)
    assert "epoch 1: train ELBO" in stdout
    assert {"curves.png", "reconstructions.png", "samples.png", "latent.png", "manifold.png"} <= \
        set(os.listdir(os.path.join(out, "figures")))


def test_compare_guides(data_file, tmp_path):
    out = str(tmp_path / "cmp")
    stdout = run_example("compare_guides.py", "--data-file", data_file, "--valid-size", "60",
                         "--guides", "diagonal,iaf", "--epochs", "1", "--num-samples", "8",
                         "--test-size", "20", "--z-dim", "2", "--hidden", "8", "--out", out)
    assert "| diagonal |" in stdout and "| iaf |" in stdout
    assert os.path.isfile(os.path.join(out, "gap.png"))


def test_loglik(data_file, tmp_path):
    run = str(tmp_path / "run")
    assert main(["train", "--data-file", data_file, "--valid-size", "60", "--epochs", "1",
                 "--z-dim", "2", "--hidden", "8", "--batch-size", "60", "--out", run,
                 "--no-progress"]) == 0
    stdout = run_example("loglik.py", run, "--num-samples", "20", "--max-datapoints", "30",
                         "--ks", "1,5")
    assert "IWAE_1" in stdout and "IWAE_5" in stdout and "log p^(x)" in stdout


def test_linear_gaussian_exact():
    stdout = run_example("linear_gaussian_exact.py", "--steps", "5", "--num-data", "50",
                         "--num-samples", "20")
    assert "exact log p(x)                           -" in stdout
    assert "KL = 0.829" in stdout  # the exact approximation gap of the diagonal family
    assert "full-rank q(z|x) after 5 steps" in stdout


def test_gradient_snr(tmp_path):
    out = str(tmp_path / "snr.png")
    stdout = run_example("gradient_snr.py", "--k", "1,8", "--repeats", "4", "--datapoints", "3",
                         "--out", out)
    assert "| 8 | dreg |" in stdout and os.path.isfile(out)


@pytest.mark.parametrize("guide", ["own", "iaf"])
def test_own_model(guide):
    """A Pyro VAE written as Pyro's example writes it, trained by SVI, measured by pyvae."""
    stdout = run_example("own_model.py", "--guide", guide, "--steps", "50", "--eval-size", "5",
                         "--num-samples", "200", "--ais-steps", "20", "--refine-steps", "50")
    found = {m[0].strip(): (float(m[1]), float(m[2]))
             for m in re.findall(r"^([a-zA-Z ()]+?)\s+(-?\d+\.\d+) ± (\d+\.\d+)", stdout, re.M)}
    assert set(found) == {"IW log p(x)", "AIS log p(x)", "refined ELBO", "approximation gap",
                          "amortization gap"}, stdout
    for gap in ("approximation gap", "amortization gap"):
        value, stderr = found[gap]
        assert value >= -4 * stderr, stdout

"""The package layout: old import paths, and runs written by earlier versions of pyvae."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import pyro

import pyvae
from pyvae.cli import main

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def test_old_module_paths_import_the_same_modules():
    code = (
        "import sys\n"
        "from pyvae.evaluate import log_likelihood\n"
        "import pyvae.train, pyvae.guides, pyvae.objectives, pyvae.refine, pyvae.compare\n"
        "import pyvae.data, pyvae.distributed, pyvae.checkpoint, pyvae.optim, pyvae.beta\n"
        "import pyvae.vae, pyvae.nets, pyvae.flows, pyvae.priors, pyvae.likelihoods\n"
        "import pyvae.linear_gaussian\n"
        "from pyvae.train import Trainer\n"
        "import pyvae.infer.evaluate, pyvae.training.trainer\n"
        "assert sys.modules['pyvae.evaluate'] is pyvae.infer.evaluate\n"
        "assert pyvae.train.Trainer is pyvae.Trainer is pyvae.training.trainer.Trainer\n"
        "assert 'matplotlib' not in sys.modules, 'pyvae must not import matplotlib'\n"
        "import pyvae.plots\n"
        "assert pyvae.plots is sys.modules['pyvae.reports.plots']\n"
        "from pyvae.plots import plot_run\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def old_run(tmp_path, monkeypatch):
    """A run written by pyvae 0.1 before its modules moved (2 of 3 epochs, a relative data file)."""
    shutil.copytree(os.path.join(FIXTURES, "run_v0_1"), tmp_path / "run")
    shutil.copy(os.path.join(FIXTURES, "tiny.pt"), tmp_path / "tiny.pt")
    monkeypatch.chdir(tmp_path)
    with open(os.path.join(FIXTURES, "run_v0_1_expected.json")) as f:
        return tmp_path / "run", json.load(f)


def test_old_run_evaluates_to_the_numbers_it_gave(old_run, capsys):
    run, expected = old_run
    assert main(["evaluate", str(run), "--split", "valid", "--num-samples", "50", "--json",
                 "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key, value in expected["evaluate_valid_K50_seed0"].items():
        assert result[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    # the numbers pyvae 0.1 printed, from one random stream seeded once (before evaluation
    # seeded each batch): the same weights, data and estimator
    old = pyvae.Run(str(run))
    vae = old.load_vae()
    x = old.data("valid").batch(torch.arange(result["num_datapoints"]), torch.Generator().manual_seed(0))
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    ll = pyvae.log_likelihood(vae.model, vae.guide, x, num_samples=50, progress=False).summary()
    for key, value in expected["log_likelihood_valid_K50_one_stream_seed0"].items():
        assert ll[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_old_run_resumes_to_the_numbers_it_gave(old_run):
    run, expected = old_run
    assert main(["train", "--resume", str(run), "--epochs", "3", "--no-progress"]) == 0
    with open(run / "metrics.jsonl") as f:
        last = json.loads(f.read().splitlines()[-1])
    assert last["epoch"] == 3
    for key, value in expected["resume_epoch3"].items():
        assert last[key] == pytest.approx(value, rel=1e-6), key

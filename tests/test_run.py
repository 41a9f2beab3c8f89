"""pyvae.Run: one way to open a run directory."""
import json
import os

import pytest
import torch

import pyvae
from pyvae import ConfigError, Run
from pyvae.cli import main
from pyvae.config import RunConfig
from pyvae.run import CHECKPOINT, CONFIG, EVAL, METRICS


@pytest.fixture
def run_dir(old_run_dir):
    return old_run_dir


def test_run_reads_config_metrics_checkpoint_and_vae(run_dir):
    run = Run(run_dir)
    assert isinstance(run.config, RunConfig)
    with open(os.path.join(run_dir, CONFIG)) as f:
        assert run.config == RunConfig.from_dict(json.load(f))
    metrics = run.metrics()
    assert [r["epoch"] for r in metrics] == [1, 2] and "valid_elbo" in metrics[-1]
    assert run.checkpoint["epoch"] == 2
    vae = run.load_vae()
    assert isinstance(vae, pyvae.VAE) and not vae.training
    state = run.checkpoint["model_state"]
    assert all(torch.equal(v, state[k]) for k, v in vae.state_dict().items())


def test_run_evaluate_returns_what_pyvae_evaluate_writes(run_dir, capsys):
    result = Run(run_dir).evaluate("valid", num_samples=20, seed=1)
    with open(os.path.join(run_dir, EVAL)) as f:
        written = json.load(f)
    assert written == pytest.approx(result)
    for key in ("log_px", "elbo", "gap", "active_units", "ess_mean", "kl", "nll", "epoch"):
        assert key in result
    assert result["gap"] == pytest.approx(result["log_px"] - result["elbo"])
    assert result["elbo"] <= result["log_px"]
    # the command is the same recipe: same numbers for the same seed
    assert main(["evaluate", run_dir, "--split", "valid", "--num-samples", "20", "--seed", "1",
                 "--json", "--no-progress"]) == 0
    cli = json.loads(capsys.readouterr().out)
    for key in ("log_px", "elbo", "gap", "active_units", "kl"):
        assert cli[key] == pytest.approx(result[key], rel=1e-9), key


def test_run_on_something_else_is_one_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        Run(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match=f"is not a pyvae run directory \\(no {CHECKPOINT}\\)"):
        Run(str(tmp_path))


def test_run_without_metrics_has_none(run_dir):
    os.remove(os.path.join(run_dir, METRICS))
    assert Run(run_dir).metrics() == []


def test_compare_with_ten_samples_adapts_the_iwae_k_list(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    path = str(tmp_path / "x.pt")
    torch.save(torch.bernoulli(torch.full((120, 12), 0.3), generator=g), path)
    out = str(tmp_path / "cmp")
    assert main(["compare", "--data-file", path, "--guides", "diagonal", "--epochs", "1",
                 "--num-samples", "10", "--z-dim", "2", "--hidden", "8", "--batch-size", "20",
                 "--out", out, "--no-progress"]) == 0
    stdout = capsys.readouterr().out
    assert "note: IWAE_k for k = 5 only" in stdout
    with open(os.path.join(out, "compare.json")) as f:
        report = json.load(f)
    assert report["settings"]["iwae_k"] == [5]
    assert list(report["rows"][0]["iwae"]) == ["5"]

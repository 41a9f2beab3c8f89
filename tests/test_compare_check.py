"""``pyvae compare`` cross-checked: each family's row is what ``pyvae evaluate`` finds on the run
directory compare left for it; the approximation and amortization gaps add up to the total gap;
a shared decoder is the base run's, unchanged, in every family; an existing comparison is kept
unless --overwrite."""
import math
import os

import pytest
import torch

import pyvae
from runs import (binary_rows, cli, load_vae, metrics, read_json, site_log_prob, train,
                  write_data)

TEST = 40
K = 1000


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    x, labels = binary_rows(300)
    return write_data(tmp_path_factory.mktemp("cmp") / "data.pt", x, labels)


@pytest.fixture(scope="module")
def comparison(tmp_path_factory, data_file):
    out = str(tmp_path_factory.mktemp("cmp-out") / "cmp")
    threads = torch.get_num_threads()
    code = cli("compare", "--data-file", data_file, "--valid-size", "100", "--out", out,
               "--guides", "diagonal,full-rank,iaf", "--flow-length", "1", "--epochs", "2",
               "--num-samples", K, "--iwae-k", "5", "--test-size", TEST, "--refine-steps", "40",
               "--refine-size", TEST, "--z-dim", "2", "--hidden", "16", "--batch-size", "20",
               "--lr", "0.01", "--seed", "3", "--threads", "1", "--no-progress")
    torch.set_num_threads(threads)
    assert code == 0
    return out, read_json(os.path.join(out, "compare.json"))


def test_each_row_is_reproduced_by_evaluating_its_run(comparison, one_thread):
    out, report = comparison
    for row in report["rows"]:
        run = os.path.join(out, row["guide"])
        assert cli("evaluate", run, "--num-samples", K, "--max-datapoints", TEST, "--seed", "3",
                   "--no-progress") == 0
        ev = read_json(os.path.join(run, "eval.json"))
        assert ev["num_datapoints"] == row["test_size"] == TEST
        assert ev["epoch"] == row["epochs"] == 2
        # the same trained encoder on the same test points: the same active units
        assert ev["active_units"] == row["active_units"]
        for key in ("log_px", "elbo"):
            se = math.hypot(ev[f"{key}_stderr"], row[f"{key}_stderr"])
            assert abs(ev[key] - row[key]) < 4 * se + 1e-9, (row["guide"], key, ev[key], row[key], se)
        assert row["gap"] == pytest.approx(row["log_px"] - row["elbo"], abs=1e-12)
        # the IWAE_5 bound sits between the ELBO and log p^(x), within the noise
        iwae, iwae_se = row["iwae"]["5"], row["iwae_stderr"]["5"]
        assert row["elbo"] - 4 * math.hypot(row["elbo_stderr"], iwae_se) < iwae
        assert iwae < row["log_px"] + 4 * math.hypot(row["log_px_stderr"], iwae_se)
        # the training history compare reports is the run's metrics.jsonl
        assert row["history"] == metrics(run)


def test_approximation_and_amortization_add_up_to_the_gap(comparison):
    """Refined on all the test points, the split's two parts sum to log p^(x) - ELBO: up to the
    noise of drawing log p^(x) and the ELBO a second time for the split."""
    _, report = comparison
    rows = {r["guide"]: r for r in report["rows"]}
    for family in ("diagonal", "full-rank", "iaf"):  # every family, flows included, is split
        r = rows[family]
        assert r["refine_size"] == TEST and r["refine_steps"] == 40
        tol = 4 * math.sqrt(2) * (r["log_px_stderr"] + r["elbo_stderr"])
        total = r["approximation_gap"] + r["amortization_gap"]
        assert abs(total - r["gap"]) < tol, (family, total, r["gap"], tol)
        # refinement improves on the encoder, and nothing beats log p(x)
        assert r["amortization_gap"] > tol, (family, r["amortization_gap"], tol)
        assert r["approximation_gap"] > -tol


def test_overwrite(comparison, data_file, capsys):
    out, report = comparison
    before = open(os.path.join(out, "compare.json")).read()
    small = ["--data-file", data_file, "--valid-size", "100", "--out", out, "--guides", "diagonal",
             "--epochs", "1", "--num-samples", "20", "--iwae-k", "2", "--test-size", "5",
             "--z-dim", "2", "--hidden", "4", "--no-progress"]
    capsys.readouterr()
    assert cli("compare", *small) == 2
    assert "already holds a comparison" in capsys.readouterr().err
    assert open(os.path.join(out, "compare.json")).read() == before
    with pytest.raises(pyvae.ConfigError):
        cli("compare", *small, "--debug")
    if not torch.cuda.is_available():
        assert cli("compare", *small, "--overwrite", "--device", "cuda") == 2
        assert "CUDA is not available" in capsys.readouterr().err
        assert open(os.path.join(out, "compare.json")).read() == before
    # (run last: it replaces the module's comparison)
    assert cli("compare", *small, "--overwrite") == 0
    replaced = read_json(os.path.join(out, "compare.json"))
    assert replaced["settings"]["num_samples"] == 20 and [r["guide"] for r in replaced["rows"]] == ["diagonal"]


def _generative_log_probs(vae, x, z):
    return site_log_prob(vae.model, x, z, "x"), site_log_prob(vae.model, x, z, "z")


@pytest.mark.parametrize("epochs", [0, 1])
def test_shared_decoder_is_the_base_runs_in_every_family(epochs, tmp_path, data_file, one_thread):
    base = train(tmp_path / "base", data_file, "--valid-size", "100", "--z-dim", "2", "--hidden", "8",
                 "--batch-size", "20", "--prior", "mixture", "--prior-components", "2", epochs=1)
    out = str(tmp_path / "shared")
    assert cli("compare", "--shared-decoder", base, "--data-file", data_file, "--valid-size", "100",
               "--out", out, "--guides", "diagonal,planar", "--epochs", epochs, "--num-samples", "30",
               "--iwae-k", "3", "--test-size", "10", "--batch-size", "20", "--no-progress") == 0
    report = read_json(os.path.join(out, "compare.json"))
    assert report["settings"]["shared_decoder"] == base
    vae0 = load_vae(base)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 2, generator=g)
    x = torch.bernoulli(torch.full((50, 12), 0.5), generator=g)
    with torch.no_grad():
        want = _generative_log_probs(vae0, x, z)
        q0 = vae0.encode(x)
    for row in report["rows"]:
        vae = load_vae(os.path.join(out, row["guide"]))
        assert vae.config["prior"] == "mixture" and vae.config["guide"] == row["guide"]
        with torch.no_grad():
            got = _generative_log_probs(vae, x, z)
        # p(z) and p(x|z) are the base run's, exactly: frozen while the guide trained
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert len(row["history"]) == epochs
        if row["guide"] == "diagonal" and epochs:
            with torch.no_grad():
                q = vae.encode(x)
            assert not torch.equal(q.base_dist.loc, q0.base_dist.loc)  # the guide did train
    # model flags conflict with a shared decoder: one line, exit 2
    assert cli("compare", "--shared-decoder", base, "--data-file", data_file, "--out", str(tmp_path / "c2"),
               "--z-dim", "3", "--guides", "diagonal", "--no-progress") == 2

import os

import matplotlib.pyplot as plt
import pytest
import torch
from PIL import Image

import pyro

from pyvae import VAE, ConfigError, plots
from pyvae.cli import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_size=(20, 20)):
    assert os.path.getsize(path) > 0
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]


@pytest.fixture
def vae2():
    pyro.set_rng_seed(0)
    return VAE(x_dim=16, z_dim=2, hidden=(8,))


@pytest.fixture
def data16():
    g = torch.Generator().manual_seed(0)
    return torch.bernoulli(torch.full((60, 16), 0.3), generator=g), torch.randint(0, 10, (60,), generator=g)


def test_reconstructions(vae2, data16, tmp_path):
    assert_png(plots.reconstructions(vae2, data16[0], str(tmp_path / "r.png"), n=6))


def test_prior_samples(vae2, tmp_path):
    assert_png(plots.prior_samples(vae2, str(tmp_path / "s.png"), n=9))


@pytest.mark.parametrize("z_dim", [2, 5])
def test_latent_scatter_with_and_without_pca(z_dim, data16, tmp_path):
    vae = VAE(x_dim=16, z_dim=z_dim, hidden=(8,))
    x, labels = data16
    assert_png(plots.latent_scatter(vae, x, labels, str(tmp_path / "l.png")))
    assert_png(plots.latent_scatter(vae, x, None, str(tmp_path / "l2.png")))


def test_pca_2d_finds_the_spread_direction():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(500, 4, generator=g) * torch.tensor([0.01, 5.0, 0.01, 2.0])
    z2 = plots.pca_2d(z)
    assert z2.shape == (500, 2)
    # the first component carries the variance of the 5.0-scaled axis, the second the 2.0 one
    assert z2[:, 0].std() == pytest.approx(5.0, rel=0.1)
    assert z2[:, 1].std() == pytest.approx(2.0, rel=0.1)


def test_latent_manifold_needs_z_dim_2(vae2, tmp_path):
    assert_png(plots.latent_manifold(vae2, str(tmp_path / "m.png"), n=4))
    with pytest.raises(ConfigError, match="z_dim = 2"):
        plots.latent_manifold(VAE(x_dim=16, z_dim=3, hidden=(8,)), str(tmp_path / "m3.png"))


def test_interpolation(vae2, data16, tmp_path):
    x = data16[0]
    assert_png(plots.interpolation(vae2, x[:3], x[3:6], str(tmp_path / "i.png"), steps=5))


def test_training_curves_from_records_and_several_runs(tmp_path):
    records = [{"epoch": e, "train_elbo": -10 + e, "valid_elbo": -11 + e} for e in (1, 2, 3)]
    assert_png(plots.training_curves(records, str(tmp_path / "c.png")))
    no_valid = [{"epoch": 1, "train_elbo": -3.0, "valid_elbo": None}]
    assert_png(plots.training_curves({"a": records, "b": no_valid}, str(tmp_path / "c2.png")))


def test_gap_plot(tmp_path):
    results = {"diagonal": {"elbo": -10.0, "iwae": {5: -9.6, 50: -9.3}, "log_px": -9.1,
                            "ais_log_px": -8.95, "bdmc_width": 0.3},
               "iaf": {"elbo": -9.5, "iwae": {"5": -9.3}, "log_px": -9.0},
               "elbo-only": {"elbo": -9.8}}
    assert_png(plots.gap_plot(results, str(tmp_path / "g.png"), exact=-8.9))
    # the AIS point and the BDMC bar are drawn, with their legend entries
    fig = plt.figure()
    plots._gap_panel(fig.add_subplot(), results, list(results), None, shift=False)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "log p̂(x) by AIS" in labels and "BDMC width above AIS" in labels
    plt.close(fig)
    with pytest.raises(ConfigError):
        plots.gap_plot({}, str(tmp_path / "g2.png"))


@pytest.mark.parametrize("fmt, magic", [("pdf", b"%PDF"), ("svg", b"<?xml")])
def test_vector_formats(fmt, magic, vae2, tmp_path):
    path = plots.prior_samples(vae2, str(tmp_path / f"s.{fmt}"), n=4)
    with open(path, "rb") as f:
        assert f.read(len(magic)) == magic
    with pytest.raises(ConfigError, match="unknown figure format"):
        plots.prior_samples(vae2, str(tmp_path / "s.gif"), n=4)


def test_image_shape_for():
    assert plots.image_shape_for(784) == (28, 28)
    assert plots.image_shape_for(12) == (1, 12)
    assert plots.image_shape_for(12, (3, 4)) == (3, 4)
    with pytest.raises(ConfigError):
        plots.image_shape_for(12, (5, 5))


def test_plot_cli_on_a_run(tmp_path, data16):
    x, labels = data16
    data_file = str(tmp_path / "d.pt")
    torch.save({"x": x, "labels": labels}, data_file)
    run = str(tmp_path / "run")
    assert main(["train", "--data-file", data_file, "--valid-size", "20", "--epochs", "2",
                 "--batch-size", "20", "--z-dim", "2", "--hidden", "8", "--out", run,
                 "--no-progress"]) == 0
    assert main(["plot", run]) == 0
    names = sorted(os.listdir(os.path.join(run, "figures")))
    assert names == ["curves.png", "interpolation.png", "latent.png", "manifold.png",
                     "reconstructions.png", "samples.png"]
    for name in names:
        assert_png(os.path.join(run, "figures", name))
    assert main(["plot", run, "--format", "svg", "--out", str(tmp_path / "svg")]) == 0
    assert len(os.listdir(tmp_path / "svg")) == 6


def test_plot_cli_errors(tmp_path, capsys):
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "neither a pyvae run" in err and err.count("\n") == 1
    assert main(["plot", str(tmp_path / "missing")]) == 2


def test_evaluation_figure_renders_whatever_the_evaluation_holds(tmp_path):
    full = {"split": "test", "num_samples": 5000, "num_datapoints": 500, "log_px": -90.1,
            "log_px_stderr": 0.2, "elbo": -95.3, "elbo_stderr": 0.3, "ess_mean": 31.0,
            "ess_min": 1.0, "khat_max": 0.93, "khat_over_0.7": 465, "active_units": 20,
            "z_dim": 50, "kl": 25.0, "kl_per_dimension": [0.5] * 50, "ais_log_px": -89.0,
            "ais_log_px_stderr": 0.1, "ais_steps": 1000}
    assert_png(plots.plot_evaluation(full, str(tmp_path / "e.png")))
    # K too small for Pareto k, a guide that does not factorize, an evaluation from before
    # ESS was kept: panels that say so instead of numbers
    sparse = {k: v for k, v in full.items() if k not in ("ess_mean", "ess_min", "ais_log_px")}
    sparse.update(khat_max=None, kl_per_dimension=None)
    with open(plots.plot_evaluation(sparse, str(tmp_path / "e.svg")), "rb") as f:
        assert f.read(5) == b"<?xml"
    with pytest.raises(ConfigError, match="elbo missing or not a number"):
        plots.plot_evaluation(dict(full, elbo=float("nan")), str(tmp_path / "bad.png"))
    assert not os.path.exists(tmp_path / "bad.png")

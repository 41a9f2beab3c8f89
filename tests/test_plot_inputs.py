"""What ``pyvae plot`` draws, read back from the matplotlib figures it saves (every figure passes
through the module's figure writer): which figures a run gets, the points of the latent scatter (which
datapoints, from which split, chosen by which seed, coloured by which labels), the datapoints
shown as originals, the training curves' values and the gap plot's bounds."""
import json
import os
import shutil

import matplotlib.collections
import numpy as np
import pytest
import torch

import pyvae
from runs import cli, load_vae, metrics, read_json, train, write_data

N, VALID, SIDE = 200, 60, 4  # 4 x 4 grey images


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    g = torch.Generator().manual_seed(5)
    labels = torch.randint(0, 4, (N,), generator=g)
    centres = torch.rand(4, SIDE * SIDE, generator=g)
    x = (centres[labels] + 0.15 * torch.randn(N, SIDE * SIDE, generator=g)).clamp(0.01, 0.99)
    return write_data(tmp_path_factory.mktemp("plot") / "data.pt", x, labels)


def _rows(data_file, split):
    payload = torch.load(data_file, weights_only=True)
    cut = N - VALID
    sl = slice(0, cut) if split == "train" else slice(cut, N)
    return payload["x"][sl], payload["labels"][sl]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_file):
    base = tmp_path_factory.mktemp("plot-runs")
    common = ["--valid-size", VALID, "--likelihood", "continuous_bernoulli", "--hidden", "8",
              "--batch-size", "20", "--threads", "1"]
    return {z: train(base / f"z{z}", data_file, *common, "--z-dim", z, epochs=2) for z in (2, 3)}


@pytest.fixture
def drawn(monkeypatch):
    """Every figure saved, by file name. The file is written empty: rendering is test_plots.py's
    business, and skipping it keeps these tests quick."""
    figures = {}

    def spy(fig, path):
        figures[os.path.basename(str(path))] = fig
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        open(path, "wb").close()
        return path

    monkeypatch.setattr(pyvae.reports.plots, "_save", spy)
    return figures


def _plot(run_dir, out, *flags):
    assert cli("plot", run_dir, "--out", out, *flags) == 0
    return sorted(os.listdir(out))


def _codes(vae, x):
    with torch.no_grad():
        return vae.encode(x).mean


def _match(points, codes):
    """Index of the datapoint whose code each point is (the nearest, and it must be exact)."""
    d = torch.cdist(torch.as_tensor(np.asarray(points), dtype=torch.float64), codes.double(),
                    compute_mode="donot_use_mm_for_euclid_dist")
    dist, index = d.min(1)
    assert float(dist.max()) < 1e-6, float(dist.max())
    return index


def _points(ax):
    return [c for c in ax.collections if isinstance(c, matplotlib.collections.PathCollection)]


def _scatter(fig):
    ax = fig.axes[0]  # (the second, if any, is the colour bar)
    (points,) = _points(ax)
    return ax, points


def test_which_figures_each_run_gets(runs, tmp_path, drawn):
    assert _plot(runs[2], str(tmp_path / "a")) == sorted(
        f"{n}.png" for n in ("curves", "reconstructions", "samples", "latent", "manifold", "interpolation"))
    # no 2-D manifold for a 3-D latent; its scatter is a PCA of the codes
    assert _plot(runs[3], str(tmp_path / "b"), "--format", "svg") == sorted(
        f"{n}.svg" for n in ("curves", "reconstructions", "samples", "latent", "interpolation"))
    ax, points = _scatter(drawn["latent.svg"])
    assert ax.get_xlabel() == "principal component 1" and points.get_offsets().shape == (VALID, 2)
    assert _plot(runs[2], str(tmp_path / "c"), "--format", "pdf")[0].endswith(".pdf")
    # the default place is RUN_DIR/figures
    assert cli("plot", runs[2]) == 0 and "latent.png" in os.listdir(os.path.join(runs[2], "figures"))


@pytest.mark.parametrize("split", ["test", "train"])
def test_latent_scatter_shows_num_points_of_the_split_by_seed(split, runs, data_file, tmp_path, drawn):
    vae = load_vae(runs[2])
    x, labels = _rows(data_file, split)
    codes = _codes(vae, x)
    assert len(torch.unique(codes.round(decimals=4), dim=0)) == len(x)  # rows are told apart

    def chosen(seed, num):
        _plot(runs[2], str(tmp_path / f"{split}-{seed}-{num}"), "--split", split, "--seed", seed,
              "--num-points", num)
        ax, points = _scatter(drawn["latent.png"])
        index = _match(points.get_offsets(), codes)
        assert ax.get_xlabel() == "z1"
        # coloured by the chosen datapoints' labels
        assert np.array_equal(np.asarray(points.get_array()), labels[index].numpy())
        return index

    a = chosen(0, 25)
    assert len(a) == 25 and len(set(a.tolist())) == 25  # 25 distinct datapoints of the split
    assert torch.equal(chosen(0, 25), a)  # the same seed picks the same ones
    assert set(chosen(1, 25).tolist()) != set(a.tolist())  # another seed, others
    everything = chosen(0, 5000)  # more than there are: all of them, once
    assert sorted(everything.tolist()) == list(range(len(x)))
    # the originals of the reconstruction figure are datapoints of the same split and selection
    image = drawn["reconstructions.png"].axes[0].get_images()[0].get_array()
    tiles = [np.asarray(image[1:1 + SIDE, 1 + i * (SIDE + 1):1 + i * (SIDE + 1) + SIDE]).reshape(-1)
             for i in range(10)]
    first = chosen(0, 10)
    for i, tile in enumerate(tiles):
        assert np.allclose(tile, x[first[i]].numpy(), atol=1e-6), i


def test_training_curves_draw_the_metrics(runs, tmp_path, drawn):
    _plot(runs[2], str(tmp_path / "f"))
    ax = drawn["curves.png"].axes[0]
    records = metrics(runs[2])
    train_line, valid_line = ax.lines[:2]
    assert list(train_line.get_xdata()) == [r["epoch"] for r in records]
    assert list(train_line.get_ydata()) == pytest.approx([r["train_elbo"] for r in records])
    assert list(valid_line.get_ydata()) == pytest.approx([r["valid_elbo"] for r in records])


def test_comparison_figures_draw_the_reported_bounds(data_file, tmp_path, drawn):
    out = str(tmp_path / "cmp")
    assert cli("compare", "--data-file", data_file, "--valid-size", VALID, "--out", out,
               "--guides", "diagonal,full-rank", "--epochs", "2", "--num-samples", "40",
               "--iwae-k", "3,9", "--test-size", "20", "--z-dim", "2", "--hidden", "8",
               "--likelihood", "continuous_bernoulli", "--batch-size", "20", "--no-progress") == 0
    report = read_json(os.path.join(out, "compare.json"))
    drawn.clear()
    assert _plot(out, str(tmp_path / "figs")) == ["curves.png", "gap.png"]
    left, right = drawn["gap.png"].axes
    assert [t.get_text() for t in left.get_xticklabels()] == ["diagonal", "full-rank"]
    for i, row in enumerate(report["rows"]):
        ys = sorted(float(c.get_offsets()[0][1]) for c in _points(left)
                    if float(c.get_offsets()[0][0]) == i)
        assert ys == pytest.approx(sorted([row["elbo"], row["iwae"]["3"], row["iwae"]["9"]]))
        shifted = sorted(float(c.get_offsets()[0][1]) for c in _points(right)
                         if float(c.get_offsets()[0][0]) == i)
        assert shifted == pytest.approx(sorted(v - row["log_px"] for v in ys))
    curves = drawn["curves.png"].axes[0]
    lines = {line.get_label(): line for line in curves.lines}
    for row in report["rows"]:
        line = lines[f"{row['guide']}: train ELBO"]
        assert list(line.get_ydata()) == pytest.approx([r["train_elbo"] for r in row["history"]])


def test_plot_flags_errors(tmp_path, capsys):
    assert cli("plot", str(tmp_path)) == 2
    assert "neither a pyvae run" in capsys.readouterr().err
    with pytest.raises(pyvae.ConfigError):
        cli("plot", str(tmp_path), "--debug")


def _panel(fig, label):
    (ax,) = [a for a in fig.axes if a.get_label() == label]
    return ax


def test_plot_draws_the_kept_evaluation_asked_for(data_file, tmp_path, drawn, capsys):
    run = train(tmp_path / "run", data_file, "--valid-size", VALID, "--likelihood",
                "continuous_bernoulli", "--hidden", "8", "--z-dim", "3", "--batch-size", "20")
    # not evaluated yet: every other figure, no evaluation figure and no error
    assert "evaluation.png" not in _plot(run, str(tmp_path / "none"))
    for flags in (["--num-samples", "60"],
                  ["--num-samples", "9", "--max-datapoints", "7", "--ais", "--ais-steps", "2",
                   "--ais-chains", "2"]):
        assert cli("evaluate", run, "--no-progress", "--split", "valid", *flags) == 0
    first, latest = (read_json(os.path.join(run, "evaluations", e["name"]))
                     for e in pyvae.Run(run).evaluations())
    capsys.readouterr()
    for flags, shown, name in (([], latest, "0002-valid-K9-n7-ais2.json"),
                               (["--evaluation", "0001"], first, "0001-valid-K60-n60.json"),
                               (["--evaluation", "0002-valid-K9-n7-ais2.json"], latest,
                                "0002-valid-K9-n7-ais2.json")):
        out = str(tmp_path / "-".join(["figs", *flags]))
        assert "evaluation.png" in _plot(run, out, *flags)
        assert os.path.join(out, "evaluation.png") in capsys.readouterr().out.splitlines()
        fig = drawn["evaluation.png"]
        assert fig.get_suptitle().startswith(f"{name}: valid split, {shown['num_datapoints']}")
        # the estimates: ELBO, IW log p(x) (and AIS), each +- 2 standard errors
        points = _panel(fig, "estimates").lines[0]
        want = [shown["elbo"], shown["log_px"]] + ([shown["ais_log_px"]] if "ais_log_px" in shown else [])
        assert list(points.get_ydata()) == pytest.approx(want)
        (bars,) = _panel(fig, "estimates").collections[:1]
        spans = [float(seg[1][1] - seg[0][1]) for seg in bars.get_segments()]
        assert spans == pytest.approx([4 * shown["elbo_stderr"], 4 * shown["log_px_stderr"]]
                                      + ([4 * shown["ais_log_px_stderr"]] if "ais_log_px" in shown else []))
        ess = [p.get_height() for p in _panel(fig, "ess").patches]
        assert ess == pytest.approx([shown["ess_mean"], shown["ess_min"]])
        kl = [p.get_height() for p in _panel(fig, "kl").patches]
        assert kl == pytest.approx(shown["kl_per_dimension"]) and len(kl) == 3
        pareto = _panel(fig, "pareto")
        if shown["khat_max"] is None:  # K = 9: too few weights to fit k
            assert not pareto.patches and "not fitted" in pareto.texts[0].get_text()
        else:
            assert [p.get_height() for p in pareto.patches] == pytest.approx([shown["khat_max"]])
            assert pareto.get_title().endswith(f"{shown['khat_over_0.7']} of {shown['num_datapoints']} datapoints above 0.7")
    # an unknown name: one line naming those kept, exit 2, nothing drawn
    drawn.clear()
    assert cli("plot", run, "--out", str(tmp_path / "bad"), "--evaluation", "0003") == 2
    assert capsys.readouterr().err == (f"pyvae plot: error: {run} has no evaluation '0003'; it "
                                       "has: 0001-valid-K60-n60.json, 0002-valid-K9-n7-ais2.json\n")
    assert drawn == {} and not os.path.exists(tmp_path / "bad")


def test_plot_evaluation_refusals(runs, data_file, tmp_path, capsys):
    # a run with no evaluation, asked for one
    assert cli("plot", runs[3], "--out", str(tmp_path / "a"), "--evaluation", "0001") == 2
    assert capsys.readouterr().err == f"pyvae plot: error: {runs[3]} has no evaluation '0001'; it has: none\n"
    # a comparison's figures come from its compare.json
    cmp = tmp_path / "cmp"
    cmp.mkdir()
    (cmp / "compare.json").write_text("{}")
    assert cli("plot", str(cmp), "--evaluation", "0001") == 2
    assert "--evaluation goes with a run directory" in capsys.readouterr().err
    # a damaged kept evaluation is one line too, before any figure is drawn
    copy = tmp_path / "damaged"
    shutil.copytree(runs[3], copy)
    with open(copy / "eval.json", "w") as f:
        json.dump({"split": "test", "num_samples": 5, "log_px": "nan?"}, f)
    assert cli("plot", str(copy), "--out", str(tmp_path / "d")) == 2
    assert capsys.readouterr().err == (f"pyvae plot: error: {copy}: evaluation eval.json is "
                                       "damaged or not an evaluation: log_px, elbo, "
                                       "num_datapoints missing or not a number\n")
    assert not os.path.exists(tmp_path / "d")

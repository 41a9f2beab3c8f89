import csv
import json
import math
import os

import numpy as np
import pytest
import torch

import pyvae
from pyvae import ConfigError, TensorData
from pyvae.cli import main
from pyvae.compare import compare, markdown_table, refinement_text
from pyvae.plots import load_run

from test_plots import assert_png

SMALL = dict(epochs=2, num_samples=40, iwae_k=(4,), z_dim=2, hidden=(16,), batch_size=50,
             log=None)


@pytest.fixture
def splits():
    g = torch.Generator().manual_seed(1)
    prototypes = torch.bernoulli(torch.full((4, 12), 0.5), generator=g)
    labels = torch.randint(0, 4, (360,), generator=g)
    x = (prototypes[labels] + torch.bernoulli(torch.full((360, 12), 0.1), generator=g)) % 2
    return TensorData(x[:300], labels[:300]), TensorData(x[300:], labels[300:])


def test_compare_writes_table_csv_json_and_figures(splits, tmp_path):
    train, test = splits
    out = str(tmp_path / "cmp")
    report = compare(["diagonal", "full-rank", "iaf"], train, test, out=out, common_guide_options={"flow_length": 1},
                     refine_steps=10, refine_size=8, ais_steps=5, **SMALL)
    rows = {r["guide"]: r for r in report["rows"]}
    assert list(rows) == ["diagonal", "full-rank", "iaf"]
    for r in rows.values():
        assert r["gap"] == pytest.approx(r["log_px"] - r["elbo"])
        # ELBO <= IWAE_4 <= log p^(x), up to Monte-Carlo noise on 60 test points
        assert r["elbo"] <= r["iwae"][4] + 0.05 and r["iwae"][4] <= r["log_px"] + 0.05
        assert r["test_size"] == 60 and 0 <= r["active_units"] <= 2
        assert r["guide_params"] > 0 and r["decoder_params"] == rows["diagonal"]["decoder_params"]
        assert len(r["history"]) == 2
    # the gap splits for every family, flows included, with log p(x) of the split by AIS
    for name in ("diagonal", "full-rank", "iaf"):
        assert rows[name]["approximation_gap"] is not None and rows[name]["amortization_gap"] is not None
        assert rows[name]["ais_steps"] == 5 and math.isfinite(rows[name]["ais_log_px"])
    assert rows["iaf"]["options"] == {"flow_length": 1}

    files = sorted(os.listdir(out))
    assert {"compare.md", "compare.csv", "compare.json", "gap.png", "curves.png", "diagonal", "iaf"} <= set(files)
    assert_png(os.path.join(out, "gap.png"))
    assert_png(os.path.join(out, "curves.png"))
    md = open(os.path.join(out, "compare.md")).read()
    assert "| family |" in md and md.count("\n| iaf |") == 1
    with open(os.path.join(out, "compare.csv")) as f:
        table = list(csv.DictReader(f))
    assert [t["guide"] for t in table] == ["diagonal", "full-rank", "iaf"]
    assert float(table[2]["iwae_4"]) == pytest.approx(rows["iaf"]["iwae"][4])
    stored = json.load(open(os.path.join(out, "compare.json")))
    assert stored["rows"][0]["log_px"] == pytest.approx(rows["diagonal"]["log_px"])
    # each family's run directory is a normal run: pyvae plot can draw it, and the comparison too
    assert main(["plot", out]) == 0
    assert_png(os.path.join(out, "figures", "gap.png"))


def test_same_seed_same_decoder_start_and_reproducible(splits):
    train, test = splits
    a = compare(["diagonal"], train, test, **SMALL)
    b = compare(["diagonal"], train, test, **SMALL)
    assert a["rows"][0]["elbo"] == b["rows"][0]["elbo"]
    # VAE builds the decoder before the guide: with one seed every family's decoder starts equal
    torch.manual_seed(0)
    d1 = pyvae.VAE(x_dim=12, z_dim=2, hidden=(16,), guide="diagonal").decoder.state_dict()
    torch.manual_seed(0)
    d2 = pyvae.VAE(x_dim=12, z_dim=2, hidden=(16,), guide="planar").decoder.state_dict()
    assert all(torch.equal(d1[k], d2[k]) for k in d1)


def test_shared_decoder_stays_fixed(splits, tmp_path):
    train, test = splits
    data_file = str(tmp_path / "d.pt")
    torch.save({"x": torch.cat([train.x, test.x]), "labels": torch.cat([train.labels, test.labels])}, data_file)
    base = str(tmp_path / "base")
    assert main(["train", "--data-file", data_file, "--valid-size", "60", "--epochs", "1",
                 "--batch-size", "50", "--z-dim", "2", "--hidden", "16", "--out", base,
                 "--no-progress"]) == 0
    out = str(tmp_path / "cmp")
    assert main(["compare", "--shared-decoder", base, "--guides", "diagonal,planar", "--epochs", "1",
                 "--num-samples", "20", "--iwae-k", "4", "--batch-size", "50", "--out", out,
                 "--no-progress"]) == 0
    base_vae, _ = load_run(base)
    for family in ("diagonal", "planar"):
        vae, config = load_run(os.path.join(out, family))
        assert config["data"]["data_file"] == data_file
        for name, value in base_vae.decoder.state_dict().items():
            assert torch.equal(vae.decoder.state_dict()[name], value), name
    report = json.load(open(os.path.join(out, "compare.json")))
    assert report["settings"]["shared_decoder"] == base
    assert "--shared-decoder" in report["command"]


def test_cli_compare_on_a_data_file(splits, tmp_path):
    train, test = splits
    data_file = str(tmp_path / "d.npz")
    np.savez(data_file, x=torch.cat([train.x, test.x]).numpy())
    out = str(tmp_path / "cmp")
    assert main(["compare", "--data-file", data_file, "--valid-size", "60", "--guides",
                 "diagonal,sylvester", "--flow-length", "1", "--epochs", "1", "--num-samples", "10",
                 "--iwae-k", "2,5", "--z-dim", "2", "--hidden", "8", "--batch-size", "50",
                 "--test-size", "30", "--out", out, "--no-progress"]) == 0
    report = json.load(open(os.path.join(out, "compare.json")))
    assert [r["guide"] for r in report["rows"]] == ["diagonal", "sylvester"]
    assert report["settings"]["test_size"] == 30 and report["settings"]["iwae_k"] == [2, 5]
    assert report["rows"][0]["valid_elbo"] is not None
    assert report["command"].startswith("pyvae compare --guides diagonal,sylvester")
    md = open(os.path.join(out, "compare.md")).read()
    assert report["command"] in md
    # a second run into the same directory needs --overwrite
    assert main(["compare", "--data-file", data_file, "--guides", "diagonal", "--epochs", "1",
                 "--num-samples", "10", "--iwae-k", "2", "--out", out, "--no-progress"]) == 2


@pytest.mark.parametrize("kwargs, message", [
    (dict(guides=["nope"]), "unknown guide 'nope'"),
    (dict(guides=["diagonal", "diagonal"]), "named twice"),
    (dict(guides=["diagonal"], iwae_k=(40,)), "every --iwae-k must be below --num-samples 40"),
    (dict(guides=["diagonal"], epochs=0), "epochs must be >= 1"),
    (dict(guides=[]), "at least one"),
])
def test_bad_arguments(kwargs, message, splits):
    train, test = splits
    args = dict(SMALL, **kwargs)
    guides = args.pop("guides")
    with pytest.raises(ConfigError, match=message):
        compare(guides, train, test, **args)


def test_cli_bad_guide_one_line_exit_2(tmp_path, capsys):
    data_file = str(tmp_path / "d.pt")
    torch.save({"x": torch.bernoulli(torch.full((50, 4), 0.5))}, data_file)
    assert main(["compare", "--data-file", data_file, "--guides", "diagonal,bogus",
                 "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "unknown guide 'bogus'" in err and err.count("\n") == 1


def _report_row(**overrides):
    row = {"guide": "g", "guide_params": 3, "train_seconds": 1.0, "valid_elbo": None,
           "elbo": -2.0, "elbo_stderr": 0.1, "iwae": {5: -1.5}, "log_px": -1.0,
           "log_px_stderr": 0.05, "gap": 1.0, "approximation_gap": None,
           "amortization_gap": None, "active_units": 1}
    return dict(row, **overrides)


def test_markdown_table_without_refinement_has_no_split_columns():
    report = {"rows": [_report_row()], "settings": {"refine_steps": 0, "num_samples": 10}}
    header, _, line = markdown_table(report).splitlines()
    assert "approx. gap" not in header and "amort. gap" not in header
    assert line == "| g | 3 | 1 | – | -2.00 ± 0.10 | 5: -1.50 | -1.00 ± 0.05 | 1.00 | 1 |"
    text = refinement_text(report)
    assert "not split" in text and "--refine-steps" in text and "0 steps" not in text


def test_markdown_table_with_refinement_says_how_the_gap_was_split():
    rows = [_report_row(approximation_gap=0.25, amortization_gap=0.75, refine_size=8)]
    report = {"rows": rows, "settings": {"refine_steps": 30, "num_samples": 10, "ais_steps": 5}}
    header, _, line = markdown_table(report).splitlines()
    assert header.endswith("| approx. gap | amort. gap | active units |")
    assert line.endswith("| 0.25 | 0.75 | 1 |")
    text = refinement_text(report)
    assert "30 SVI steps on the first 8 test points" in text and "AIS with 5 steps" in text


def test_compare_md_says_what_was_not_computed_and_the_last_line_names_every_file(splits, tmp_path):
    train, test = splits
    out = str(tmp_path / "cmp")
    lines = []
    compare(["diagonal", "iaf"], train, test, out=out, common_guide_options={"flow_length": 1},
            **dict(SMALL, epochs=1, log=lines.append))
    md = open(os.path.join(out, "compare.md"), encoding="utf-8").read()
    assert "not split into approximation and amortization gaps" in md
    assert "0 steps" not in md and "approx. gap" not in md
    last = lines[-1]
    files = [n for n in os.listdir(out) if os.path.isfile(os.path.join(out, n))]
    assert sorted(files) == ["compare.csv", "compare.json", "compare.md", "curves.png", "gap.png"]
    for name in files:
        assert os.path.join(out, name) in last, name
    for family in ("diagonal", "iaf"):
        assert os.path.join(out, family) + os.sep in last

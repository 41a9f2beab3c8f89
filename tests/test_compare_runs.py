"""``pyvae compare --runs DIR1,DIR2 --out OUT [--evaluation NAME]``: trained runs side by side from
their kept evaluations, nothing trained or evaluated: each row is its run's evaluation; the runs'
evaluations must share split, K and datapoints; the flags of a comparison that trains are
refused; ``pyvae plot OUT`` redraws the report."""
import csv
import io
import os
import shutil

import pytest
import torch

import pyvae
from runs import binary_rows, cli, file_contents, metrics, read_json, train, write_data

SMALL = ["--z-dim", "2", "--hidden", "6", "--batch-size", "20", "--valid-size", "30"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two runs of two families, each evaluated twice: K = 40 on 20 test points, then K = 8."""
    base = tmp_path_factory.mktemp("cmp-runs")
    x, labels = binary_rows(150)
    data = write_data(base / "data.pt", x, labels)
    dirs = {}
    for guide, epochs in (("diagonal", 1), ("iaf", 2)):
        family = ["--guide", guide] + (["--flow-length", "1"] if guide == "iaf" else [])
        dirs[guide] = train(base / guide, data, *SMALL, *family, epochs=epochs)
        for k in ("40", "8" if guide == "diagonal" else "40"):
            assert cli("evaluate", dirs[guide], "--num-samples", k, "--max-datapoints", "20",
                       "--no-progress", "--threads", "1") == 0
    return dirs


def _compare(capsys, *flags):
    code = cli("compare", *flags)
    out, err = capsys.readouterr()
    return code, out, err


def test_rows_are_the_runs_kept_evaluations_and_nothing_is_trained_or_evaluated(runs, tmp_path, capsys):
    before = {g: file_contents(d) for g, d in runs.items()}
    out = str(tmp_path / "cmp")
    paths = f"{runs['diagonal']},{runs['iaf']}"
    code, printed, err = _compare(capsys, "--runs", paths, "--out", out, "--evaluation", "0001")
    assert code == 0, err
    # the run directories are as they were: no evaluation written, no checkpoint touched
    assert {g: file_contents(d) for g, d in runs.items()} == before
    report = read_json(os.path.join(out, "compare.json"))
    assert [r["run"] for r in report["rows"]] == ["diagonal", "iaf"]
    for row, guide in zip(report["rows"], ("diagonal", "iaf")):
        ev = read_json(os.path.join(runs[guide], "evaluations", row["evaluation"]))
        assert row["evaluation"] == "0001-test-K40-n20.json" and row["guide"] == guide
        for key in ("elbo", "elbo_stderr", "log_px", "log_px_stderr", "gap", "ess_mean",
                    "active_units", "kl", "num_samples"):
            assert row[key] == ev[key], key
        assert row["test_size"] == ev["num_datapoints"] == 20 and row["epochs"] == ev["epoch"]
        assert row["history"] == metrics(runs[guide])
        assert row["valid_elbo"] == metrics(runs[guide])[-1]["valid_elbo"]
        vae = pyvae.Run(runs[guide]).load_vae()
        assert row["guide_params"] == sum(p.numel() for m in (vae.encoder, vae.encoder_body)
                                          for p in m.parameters())
        assert row["iwae"] == {} and row["approximation_gap"] is None
    assert report["settings"]["runs"] == [os.path.abspath(runs[g]) for g in ("diagonal", "iaf")]
    assert (report["settings"]["split"], report["settings"]["num_samples"],
            report["settings"]["test_size"]) == ("test", 40, 20)
    md = open(os.path.join(out, "compare.md"), encoding="utf-8").read()
    assert "| run | family | guide params |" in md
    assert f"| diagonal | diagonal | {report['rows'][0]['guide_params']} |" in md
    assert "diagonal: 0001-test-K40-n20.json; iaf: 0001-test-K40-n20.json" in md
    assert f"pyvae compare --runs {paths} --out {out} --evaluation 0001" in md
    table = list(csv.DictReader(io.StringIO(open(os.path.join(out, "compare.csv")).read())))
    assert [(r["run"], r["evaluation"], float(r["log_px"])) for r in table] == [
        (row["run"], row["evaluation"], row["log_px"]) for row in report["rows"]]
    assert sorted(os.listdir(out)) == ["compare.csv", "compare.json", "compare.md", "curves.png",
                                       "gap.png"]
    assert printed.splitlines()[-1].startswith(f"wrote {os.path.join(out, 'compare.md')}")
    # pyvae plot OUT redraws it, each run by its name
    assert cli("plot", out, "--out", str(tmp_path / "figs")) == 0
    assert sorted(os.listdir(tmp_path / "figs")) == ["curves.png", "gap.png"]
    assert list(pyvae.plots.gap_results(report)) == ["diagonal", "iaf"]


def test_evaluations_that_differ_are_refused_unless_alike_ones_are_chosen(runs, tmp_path, capsys):
    out = str(tmp_path / "cmp")
    # the latest of each: K = 8 against K = 40
    code, _, err = _compare(capsys, "--runs", f"{runs['diagonal']},{runs['iaf']}", "--out", out)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("pyvae compare: error: the runs' evaluations differ in K (num_samples) "
                          "(diagonal: 8, iaf: 40): their numbers would not compare like with like")
    assert not os.path.exists(out)
    # the second of each: the diagonal run's K = 8, the iaf run's K = 40
    code, _, err = _compare(capsys, "--runs", f"{runs['diagonal']},{runs['iaf']}", "--out", out,
                            "--evaluation", "0002")
    assert code == 2 and "(diagonal: 8, iaf: 40)" in err
    # one run's evaluations are alike with themselves
    code, _, err = _compare(capsys, "--runs", runs["iaf"], "--out", out)
    assert code == 0, err
    assert read_json(os.path.join(out, "compare.json"))["rows"][0]["evaluation"] == "0002-test-K40-n20.json"


def test_refusals(runs, tmp_path, capsys):
    both = f"{runs['diagonal']},{runs['iaf']}"
    out = str(tmp_path / "cmp")
    # the flags of a comparison that trains, even at their defaults (--epochs 10)
    for flags, named in ((["--epochs", "10"], "--epochs does"),
                         (["--guides", "diagonal", "--z-dim", "3", "--threads", "1"],
                          "--guides, --threads, --z-dim do"),
                         (["--no-progress"], "--no-progress does")):
        code, _, err = _compare(capsys, "--runs", both, "--out", out, *flags)
        assert code == 2 and err == (f"pyvae compare: error: {named} not apply with --runs: "
                                     "trained runs are compared from their kept evaluations, "
                                     "nothing is trained or evaluated\n")
    code, _, err = _compare(capsys, "--guides", "diagonal", "--out", out, "--evaluation", "0001")
    assert code == 2 and "--evaluation goes with --runs" in err
    # a run not evaluated yet, an evaluation a run does not keep
    fresh = tmp_path / "fresh"
    shutil.copytree(runs["iaf"], fresh)
    shutil.rmtree(fresh / "evaluations")
    os.remove(fresh / "eval.json")
    code, _, err = _compare(capsys, "--runs", f"{runs['iaf']},{fresh}", "--out", out)
    assert code == 2 and err == (f"pyvae compare: error: {fresh} has no evaluation yet: run "
                                 f"pyvae evaluate {fresh}\n")
    code, _, err = _compare(capsys, "--runs", both, "--out", out, "--evaluation", "0007")
    assert code == 2 and f"{runs['diagonal']} has no evaluation '0007'; it has: 0001-test-K40-n20.json" in err
    # one run twice; an OUT that holds a run compared
    code, _, err = _compare(capsys, "--runs", f"{runs['iaf']},{runs['iaf']}/", "--out", out)
    assert code == 2 and f"the run {runs['iaf']} is named twice in --runs" in err
    holder = os.path.dirname(runs["iaf"])
    code, _, err = _compare(capsys, "--runs", runs["iaf"], "--out", holder, "--overwrite")
    assert code == 2 and f"holds the run {runs['iaf']} that it compares" in err
    assert os.path.isdir(runs["iaf"])
    assert not os.path.exists(out)
    with pytest.raises(pyvae.ConfigError):
        cli("compare", "--runs", both, "--out", out, "--epochs", "3", "--debug")


def test_a_finished_comparison_is_kept_unless_overwrite(runs, tmp_path, capsys):
    out = str(tmp_path / "cmp")
    assert _compare(capsys, "--runs", runs["iaf"], "--out", out)[0] == 0
    before = file_contents(out)
    code, _, err = _compare(capsys, "--runs", f"{runs['diagonal']},{runs['iaf']}", "--out", out,
                            "--evaluation", "0001")
    assert code == 2 and "already holds a comparison" in err and file_contents(out) == before
    assert _compare(capsys, "--runs", f"{runs['diagonal']},{runs['iaf']}", "--out", out,
                    "--evaluation", "0001", "--overwrite")[0] == 0
    assert [r["run"] for r in read_json(os.path.join(out, "compare.json"))["rows"]] == ["diagonal", "iaf"]


def test_runs_that_share_a_folder_name_are_named_by_their_paths(runs, tmp_path, capsys):
    a, b = tmp_path / "a" / "run", tmp_path / "b" / "run"
    shutil.copytree(runs["iaf"], a)
    shutil.copytree(runs["iaf"], b)
    out = str(tmp_path / "cmp")
    assert _compare(capsys, "--runs", f"{a},{b}", "--out", out)[0] == 0
    assert [r["run"] for r in read_json(os.path.join(out, "compare.json"))["rows"]] == [str(a), str(b)]


def test_runs_on_other_data_are_refused_and_other_datapoints_are_noted(runs, tmp_path, capsys):
    # the fixture's runs: the same data file and seed, so the same evaluated datapoints
    same = str(tmp_path / "same")
    assert _compare(capsys, "--runs", f"{runs['diagonal']},{runs['iaf']}", "--out", same,
                    "--evaluation", "0001")[0] == 0
    digests = {read_json(os.path.join(runs[g], "evaluations", "0001-test-K40-n20.json"))["data_sha256"]
               for g in runs}
    assert len(digests) == 1 and len(digests.pop()) == 64
    assert "not the same in every run" not in read_json(os.path.join(same, "compare.json"))["note"]
    # another file: other data altogether
    x, labels = binary_rows(150, seed=5)
    other_file = write_data(tmp_path / "other.pt", x, labels)
    other = train(tmp_path / "other", other_file, *SMALL)
    assert cli("evaluate", other, "--num-samples", "40", "--max-datapoints", "20", "--no-progress",
               "--threads", "1") == 0
    code, _, err = _compare(capsys, "--runs", f"{runs['diagonal']},{other}", "--out",
                            str(tmp_path / "cmp"), "--evaluation", "0001")
    assert code == 2 and err.count("\n") == 1
    assert "the runs were trained on different data (diagonal: " in err
    assert not os.path.exists(tmp_path / "cmp")
    # one grey file, its held-out rows binarized once with each run's seed: other datapoints
    # of the same data, compared and noted
    grey = write_data(tmp_path / "grey.pt", torch.rand(150, 12, generator=torch.Generator().manual_seed(0)), labels)
    seeded = []
    for seed in ("0", "3"):
        seeded.append(train(tmp_path / f"grey{seed}", grey, *SMALL, "--seed", seed))
        assert cli("evaluate", seeded[-1], "--num-samples", "40", "--max-datapoints", "20",
                   "--no-progress", "--threads", "1") == 0
    out = str(tmp_path / "grey-cmp")
    assert _compare(capsys, "--runs", ",".join(seeded), "--out", out)[0] == 0
    assert "The evaluated datapoints are not the same in every run" in read_json(
        os.path.join(out, "compare.json"))["note"]

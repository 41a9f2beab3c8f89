"""Kept evaluations (``pyvae.run.evaluations``): every finished evaluation stays, with its
settings, under RUN_DIR/evaluations/; eval.json is the latest; ``Run`` lists and reads them."""
import argparse
import inspect
import json
import os
import re

import pytest

from pyvae import ConfigError, Run
from pyvae.cli import build_parser, main
from pyvae.cli.evaluate import print_table
from pyvae.run import evaluation
from pyvae.run.evaluations import find_evaluation


@pytest.fixture
def run_dir(old_run_dir):
    return old_run_dir


def test_each_evaluation_is_kept_with_its_settings_and_eval_json_is_the_latest(run_dir):
    run = Run(run_dir)
    assert run.evaluations() == []  # a run directory from an older pyvae: nothing kept yet
    big = run.evaluate("valid", num_samples=40, seed=1, progress=False)
    small = run.evaluate("valid", num_samples=5, max_datapoints=3, seed=2, batch_size=2,
                         progress=False)
    entries = run.evaluations()
    assert [e["name"] for e in entries] == ["0001-valid-K40-n%d.json" % big["num_datapoints"],
                                            "0002-valid-K5-n3.json"]
    assert entries[1]["num_samples"] == 5 and entries[1]["seed"] == 2
    assert entries[1]["batch_size"] == 2 and entries[1]["num_datapoints"] == 3
    assert entries[0]["log_px"] == big["log_px"] and re.match(r"\d{4}-\d\d-\d\dT", entries[0]["written"])
    # the first, larger evaluation is not lost to the later one
    assert run.evaluation("0001") == pytest.approx(big)
    assert run.evaluation(entries[1]["name"]) == pytest.approx(small)
    assert run.evaluation() == pytest.approx(small)  # eval.json: the latest
    with open(os.path.join(run_dir, "eval.json")) as f:
        assert json.load(f) == pytest.approx(small)
    with pytest.raises(ConfigError, match="has no evaluation '0007'; it has: 0001-valid"):
        run.evaluation("0007")


def test_a_run_with_only_an_old_eval_json_lists_it(run_dir):
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump({"split": "test", "num_samples": 5000, "num_datapoints": 500, "seed": 0,
                   "log_px": -90.0}, f)
    entries = Run(run_dir).evaluations()
    assert len(entries) == 1 and entries[0]["name"] == "eval.json"
    assert entries[0]["num_samples"] == 5000 and entries[0]["batch_size"] is None
    assert Run(run_dir).evaluation("eval.json")["log_px"] == -90.0


def test_the_table_counts_ais_in_its_time_and_says_where_to_go_next(run_dir, capsys):
    assert main(["evaluate", run_dir, "--split", "valid", "--num-samples", "5", "--ais",
                 "--ais-steps", "3", "--ais-chains", "2", "--max-datapoints", "4",
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    total, iw, ais = map(float, re.search(
        r"time +([\d.]+) s in all \(importance sampling ([\d.]+) s, AIS ([\d.]+) s\)", out).groups())
    assert total >= iw + ais - 0.1  # (each printed with one decimal)
    assert "kept as" in out and "0001-valid-K5-n4-ais3.json" in out
    stored = Run(run_dir).evaluation()
    assert stored["total_seconds"] >= stored["seconds"] + stored["ais_seconds"]
    # the Pareto k line of a run with unreliable datapoints names the next step
    result = dict(stored, khat_max=0.93, **{"khat_over_0.7": 465, "num_datapoints": 500})
    args = argparse.Namespace(split="test", num_samples=5000, run_dir="runs/mnist",
                              ais_steps=1000, ais_chains=16)
    print_table(args, result)
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("Pareto k"))
    assert line.endswith("0.93; 465 of 500 datapoints unreliable: certify log p(x) with pyvae "
                         "evaluate runs/mnist --ais (docs/evaluation.md#when-to-trust-which-estimate)")
    print_table(args, dict(result, **{"khat_over_0.7": 0}))
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("Pareto k"))
    assert line.endswith("0 of 500 datapoints unreliable")


def _listed(capsys, run_dir, *flags):
    assert main(["evaluate", run_dir, "--list", *flags]) == 0
    return capsys.readouterr().out


def test_evaluate_list_shows_the_kept_evaluations_and_evaluates_nothing(run_dir, capsys):
    assert _listed(capsys, run_dir).strip() == (f"{run_dir} keeps no evaluation yet: pyvae "
                                                f"evaluate {run_dir} makes one")
    assert json.loads(_listed(capsys, run_dir, "--json")) == []
    run = Run(run_dir)
    first = run.evaluate("valid", num_samples=30, seed=1, progress=False)
    second = run.evaluate("test", num_samples=4, max_datapoints=3, ais_steps=2, ais_chains=2,
                          progress=False)
    before = sorted(os.listdir(os.path.join(run_dir, "evaluations")))
    lines = _listed(capsys, run_dir).splitlines()
    assert lines[0].split() == ["name", "written", "(UTC)", "split", "K", "n", "AIS", "steps",
                                "log", "p^(x)"]
    entries = run.evaluations()
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == [e["name"] for e in entries]
    assert rows[0][1:] == [entries[0]["written"], "valid", "30", str(first["num_datapoints"]),
                           "–", f"{first['log_px']:.3f}"]
    assert rows[1][1:] == [entries[1]["written"], "test", "4", "3", "2", f"{second['log_px']:.3f}"]
    assert json.loads(_listed(capsys, run_dir, "--json")) == entries
    # nothing was evaluated or written by listing
    assert sorted(os.listdir(os.path.join(run_dir, "evaluations"))) == before
    assert Run(run_dir).evaluation() == pytest.approx(second)


def test_evaluate_list_refuses_the_flags_of_an_evaluation(run_dir, capsys):
    # a flag given is refused even at its default value (--split test, --seed 0)
    for flags, named in ((["--split", "test"], "--split does"),
                         (["--seed", "0", "--ais", "--num-samples", "9"], "--ais, --num-samples, --seed do"),
                         (["--no-progress"], "--no-progress does")):
        assert main(["evaluate", run_dir, "--list", *flags]) == 2
        err = capsys.readouterr().err
        assert err == (f"pyvae evaluate: error: {named} not apply with --list (it lists the kept "
                       "evaluations and evaluates nothing)\n")
    assert not os.path.exists(os.path.join(run_dir, "evaluations"))
    with pytest.raises(ConfigError):
        main(["evaluate", run_dir, "--list", "--seed", "1", "--debug"])


def test_an_old_runs_eval_json_is_found_by_its_name(run_dir):
    with open(os.path.join(run_dir, "eval.json"), "w") as f:
        json.dump({"split": "test", "num_samples": 50, "num_datapoints": 5, "log_px": -9.0}, f)
    assert Run(run_dir).evaluation("eval")["log_px"] == -9.0  # its name without .json


def test_run_evaluate_takes_evaluate_runs_parameters_and_defaults():
    """Run.evaluate is evaluate_run on the run: the same parameters, each default from one home
    (the module's constants), shown as its value in the API pages."""
    method = list(inspect.signature(Run.evaluate).parameters.values())[1:]  # (self)
    function = list(inspect.signature(evaluation.evaluate_run).parameters.values())[1:]  # (run)
    assert [(p.name, p.default) for p in method] == [(p.name, p.default) for p in function]
    defaults = {p.name: p.default for p in function}
    assert defaults["batch_size"] is evaluation.BATCH_SIZE == 100
    assert defaults["ais_chains"] is evaluation.AIS_CHAINS == 16
    vae_defaults = inspect.signature(evaluation.evaluate_vae).parameters
    assert vae_defaults["batch_size"].default == 100 and vae_defaults["ais_chains"].default == 16
    parser = build_parser().commands["evaluate"]
    assert parser.get_default("batch_size") == evaluation.BATCH_SIZE
    assert f"(default {evaluation.AIS_CHAINS})" in parser.format_help()
    assert f"(default {evaluation.AIS_STEPS})" in parser.format_help()
    griffe = pytest.importorskip("griffe", reason="griffe is not installed: pip install -e \".[docs]\"")
    root = os.path.join(os.path.dirname(__file__), os.pardir)
    extensions = griffe.load_extensions(os.path.join(root, "docs", "griffe_extensions.py")
                                        + ":LiteralDefaults")
    package = griffe.load("pyvae", search_paths=[root], extensions=extensions)
    for path in ("run.directory.Run.evaluate", "run.evaluation.evaluate_run",
                 "run.evaluation.evaluate_vae"):
        shown = {p.name: p.default for p in package[path].parameters}
        assert (shown["batch_size"], shown["ais_chains"]) == ("100", "16"), path


def test_eval_json_names_the_latest(run_dir):
    run = Run(run_dir)
    run.evaluate("valid", num_samples=6, max_datapoints=2, progress=False)
    latest = run.evaluate("valid", num_samples=5, max_datapoints=2, progress=False)
    assert find_evaluation(run_dir, "eval.json")["name"] == "0002-valid-K5-n2.json"
    assert find_evaluation(run_dir)["name"] == "0002-valid-K5-n2.json"
    assert run.evaluation("eval.json") == pytest.approx(latest)

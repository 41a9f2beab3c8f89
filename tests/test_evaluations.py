"""Kept evaluations (``pyvae.run.evaluations``): every finished evaluation stays, with its
settings, under RUN_DIR/evaluations/; eval.json is the latest; ``Run`` lists and reads them."""
import argparse
import json
import os
import re

import pytest

from pyvae import ConfigError, Run
from pyvae.cli import main
from pyvae.cli.evaluate import print_table


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

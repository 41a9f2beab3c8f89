"""Resumable state tied to what produced it (docs/reliability.md): evaluation progress records
the weights', the data's fingerprints and the settings, and is validated before it is continued;
checkpoints are validated when loaded."""
import math
import os
import shutil

import pytest
import torch

import pyvae
from bad_inputs import _raw_pickle
from pyvae.cli import main
from pyvae.training import checkpoint as checkpoint_module
from pyvae.training.evalrun import PROGRESS

SMALL = ["--valid-size", "100", "--batch-size", "50", "--z-dim", "2", "--hidden", "8",
         "--no-progress"]
EVAL = dict(num_samples=50, batch_size=10)


def _data(path, seed=0, p=0.3):
    g = torch.Generator().manual_seed(seed)
    torch.save(torch.bernoulli(torch.full((400, 12), p), generator=g), path)
    return str(path)


def _train(data_file, out, *extra, epochs=1):
    assert main(["train", "--data-file", data_file, *SMALL, "--epochs", str(epochs),
                 "--out", str(out), *extra]) == 0


@pytest.fixture
def runs(tmp_path):
    """Two runs on the same data (seeds 0 and 1) and the data file."""
    data = _data(tmp_path / "d.pt")
    _train(data, tmp_path / "a")
    _train(data, tmp_path / "b", "--seed", "1")
    return tmp_path / "a", tmp_path / "b", data


def _evaluate(run, lines=None, **kw):
    log = (lambda line: lines.append(line)) if lines is not None else (lambda line: None)
    return pyvae.Run(str(run)).evaluate(resumable=True, write=False, log=log, **{**EVAL, **kw})


def _numbers(result):
    return {k: v for k, v in result.items() if "seconds" not in k}


def _partial_progress(run, rows=30, **kw):
    """The progress file an evaluation stopped after ``rows`` datapoints leaves (whole batches)."""
    _evaluate(run, **kw)
    path = os.path.join(run, PROGRESS)
    saved = torch.load(path, weights_only=True)
    for f in ("value", "stderr", "ess", "elbo", "elbo_stderr", "khat"):
        saved[f] = saved[f][:rows]
    torch.save(saved, path)
    return path


def test_progress_continues_only_its_own_evaluation(runs):
    a, _, _ = runs
    clean = _numbers(_evaluate(a))
    os.unlink(os.path.join(a, PROGRESS))
    _partial_progress(a)
    lines = []
    assert _numbers(_evaluate(a, lines)) == clean
    assert lines == [f"continuing from 30 of 100 datapoints done ({os.path.join(a, PROGRESS)})"]


def test_progress_of_another_checkpoint_starts_over(runs):
    a, b, _ = runs
    clean = _numbers(_evaluate(b))
    shutil.copy(_partial_progress(a), os.path.join(b, PROGRESS))
    lines = []
    assert _numbers(_evaluate(b, lines)) == clean
    assert lines == [f"starting over: {os.path.join(b, PROGRESS)} was made with another checkpoint"]


def test_progress_on_other_data_starts_over(runs, tmp_path):
    a, _, data = runs
    _partial_progress(a)
    _data(data, seed=5, p=0.6)  # the run's data file changed between the two evaluations
    lines = []
    mixed = _numbers(_evaluate(a, lines))
    assert lines == [f"starting over: {os.path.join(a, PROGRESS)} was made with other data"]
    os.unlink(os.path.join(a, PROGRESS))
    assert mixed == _numbers(_evaluate(a))


def test_progress_with_other_settings_starts_over(runs):
    a, _, _ = runs
    _partial_progress(a, num_samples=20)
    lines = []
    clean = _numbers(_evaluate(a, lines))
    assert lines == [f"starting over: {os.path.join(a, PROGRESS)} was made with other settings "
                     "(num_samples 20, now 50)"]
    assert clean["num_samples"] == 50


def _rows(n):
    return lambda s: {**s, **{f: torch.zeros(n, dtype=torch.float64) - 1 for f in
                              ("value", "stderr", "ess", "elbo", "elbo_stderr", "khat")}}


DAMAGE = {
    "more-rows-than-datapoints": (_rows(150), "150 rows for 100 datapoints"),
    "rows-dropped": (_rows(25), "25 rows for 100 datapoints in batches of 10"),
    "ragged": (lambda s: {**s, "ess": s["ess"][:10]}, "different lengths"),
    "nan": (lambda s: {**s, "value": s["value"] * float("nan")}, "NaN or Inf"),
    "two-d-field": (lambda s: {**s, "elbo": s["elbo"][:, None]}, "not a 1-D float tensor"),
    "integer-field": (lambda s: {**s, "ess": s["ess"].long()}, "not a 1-D float tensor"),
    "missing-field": (lambda s: {k: v for k, v in s.items() if k != "stderr"}, "not a 1-D float"),
    "no-key": (lambda s: {k: v for k, v in s.items() if k != "key"}, "not an evaluation progress"),
    "not-a-dict": (lambda s: [s["value"]], "not an evaluation progress file"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_damaged_progress_starts_over_in_one_line(damage, runs):
    a, _, _ = runs
    clean = _numbers(_evaluate(a))
    path = _partial_progress(a)
    edit, message = DAMAGE[damage]
    torch.save(edit(torch.load(path, weights_only=True)), path)
    lines = []
    result = _numbers(_evaluate(a, lines))
    assert len(lines) == 1 and lines[0].startswith(f"starting over: {path}") and message in lines[0]
    assert result == clean and all(math.isfinite(v) for v in result.values()
                                   if isinstance(v, float))


@pytest.mark.parametrize("content", [b"not a tensor file\n", b""], ids=["text", "empty"])
def test_unreadable_progress_starts_over_in_one_line(content, runs):
    a, _, _ = runs
    clean = _numbers(_evaluate(a))
    with open(os.path.join(a, PROGRESS), "wb") as f:
        f.write(content)
    lines = []
    assert _numbers(_evaluate(a, lines)) == clean
    assert len(lines) == 1 and "cannot be read" in lines[0] and "\x1b" not in lines[0]


def test_a_pickled_progress_file_runs_no_code(runs, tmp_path):
    a, _, _ = runs
    path = os.path.join(a, PROGRESS)
    _raw_pickle(path)
    lines = []
    _evaluate(a, lines)
    assert not os.path.exists(path + ".ran")
    assert len(lines) == 1 and "refused to load" in lines[0] and "\x1b" not in lines[0]


# ---------------------------------------------------------------------------- checkpoints
def _damage(run, edit):
    path = os.path.join(run, "checkpoint.pt")
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)


def _set(key, value):
    return lambda p: p.__setitem__(key, value)


def _history_without(*epochs):
    return lambda p: p.__setitem__("history", [r for r in p["history"] if r["epoch"] not in epochs])


def _empty_optimizer(p):
    for state in p["optim_state"].values():
        state["state"] = {}


def _nan_weight(p):
    name = sorted(p["model_state"])[0]
    p["model_state"][name] = p["model_state"][name] * float("nan")


def _nan_optimizer(p):
    state = next(iter(p["optim_state"].values()))["state"][0]
    state["exp_avg"] = state["exp_avg"] * float("inf")


CHECKPOINT_DAMAGE = {
    "epoch-negative": (_set("epoch", -1), "epoch -1 is not an integer >= 0"),
    "epoch-float": (_set("epoch", 2.5), "epoch 2.5 is not an integer"),
    "epoch-bool": (_set("epoch", True), "epoch True is not an integer"),
    "epoch-beyond-run": (_set("epoch", 9), "epoch 9 is beyond the run's 3 epochs"),
    "step-negative": (_set("step", -4), "step -4 is not an integer >= 0"),
    "history-junk": (_set("history", ["junk", 3, None]), "history record 1 is not the record of epoch 1"),
    "history-junk-records": (lambda p: p["history"].__setitem__(1, {"epoch": 2, "train_elbo": "x"}),
                             "history record 2 has no finite train_elbo"),
    "history-nan": (lambda p: p["history"][0].__setitem__("train_elbo", float("nan")),
                    "history record 1 has no finite"),
    "history-shortened": (_history_without(2), "history holds 2 records for 3 epochs"),
    "history-out-of-order": (lambda p: p["history"].reverse(), "history record 1 is not the record of epoch 1"),
    "history-not-a-list": (_set("history", {"epoch": 1}), "history is dict, not a list"),
    "optimizer-empty": (_empty_optimizer, "optim_state is empty after training steps"),
    "optimizer-junk": (_set("optim_state", ["adam"]), "optim_state is not a dict"),
    "optimizer-nan": (_nan_optimizer, "optimizer state"),
    "rng-missing-torch": (_set("rng", {"python": [3, [], None]}), "rng is not"),
    "rng-python-junk": (lambda p: p["rng"].__setitem__("python", [3, [1, 2], None]), "rng is not"),
    "weights-nan": (_nan_weight, "holds NaN or Inf"),
    "weights-not-tensors": (_set("model_state", {"encoder.w": [1.0]}), "model_state is not"),
    "trainer-config-junk": (_set("trainer_config", "adam"), "trainer_config is str, not a dict"),
    "trainer-config-unknown-key": (lambda p: p["trainer_config"].__setitem__("warp", 9),
                                   "trainer config is damaged"),
    "partial-junk": (lambda p: p.update(step=2, partial={"loss": "x"}), "partial"),
}


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGE, ids=list(CHECKPOINT_DAMAGE))
def test_damaged_checkpoint_is_one_line_naming_what_is_wrong(damage, tmp_path, capsys):
    data = _data(tmp_path / "d.pt")
    run = tmp_path / "run"
    _train(data, run, epochs=3)
    edit, message = CHECKPOINT_DAMAGE[damage]
    _damage(run, edit)
    before = open(run / "metrics.jsonl").read()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--epochs", "4", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert open(run / "metrics.jsonl").read() == before  # nothing written from it


@pytest.mark.parametrize("command", ["evaluate", "plot", "snr", "bdmc"])
def test_nan_weights_are_one_line_for_every_reader(command, tmp_path, capsys):
    data = _data(tmp_path / "d.pt")
    run = tmp_path / "run"
    _train(data, run)
    _damage(run, _nan_weight)
    capsys.readouterr()
    args = {"evaluate": ["--num-samples", "5"], "plot": ["--num-points", "20"],
            "snr": ["--k", "2", "--repeats", "2"], "bdmc": ["--steps", "2", "--chains", "2"]}
    assert main([command, str(run), *args[command]]) == 2
    err = capsys.readouterr().err
    assert "damaged checkpoint: weight" in err and err.count("\n") == 1, err


def test_a_good_checkpoint_passes_every_check(tmp_path):
    """The checks accept what training writes: a finished run, an untrained one, an
    interrupted one (step > 0, with its partial sums)."""
    data = _data(tmp_path / "d.pt")
    _train(data, tmp_path / "run", epochs=2)
    payload = checkpoint_module.load_checkpoint(str(tmp_path / "run" / "checkpoint.pt"))
    assert checkpoint_module.check_payload(payload) is None
    untrained = str(tmp_path / "zero")
    pyvae.Trainer(pyvae.VAE(x_dim=12, z_dim=2, hidden=[8]), epochs=0, out=untrained,
                  progress=False).fit(torch.load(data))
    assert pyvae.Run(untrained).checkpoint["epoch"] == 0
    payload.update(epoch=1, step=3, history=payload["history"][:1],
                   partial={"loss": 12.5, "seconds": 0.1})
    assert checkpoint_module.check_payload(payload) is None

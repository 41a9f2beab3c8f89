"""Every flag of ``pyvae train``, ``compare`` and ``evaluate``, given a value other than its
default, reaches what it controls: the run's config.json, metrics.jsonl, eval.json, compare.json,
or the model rebuilt from checkpoint.pt (the distributions its Pyro functions draw from, its
modules); the data flags of evaluate, plot and compare read a small MNIST-shaped set of IDX files
from the directory they name. Runs are one epoch on 60 rows of 12 pixels. A last test reads each
command's ``--help`` and fails on a flag that no test here (or the test file ELSEWHERE names,
which must hold the flag) covers."""
import json
import math
import os
import re

import pyro.poutine as poutine
import pytest
import torch
from pyro.optim.clipped_adam import ClippedAdam

import pyvae
from pyvae.cli import main
from pyvae.cli.flags import guide_flags
from pyvae.objectives import ImportanceWeighted
from runs import (binary_rows, checkpoint, cli, config, file_contents, load_vae, metrics, read_json,
                  train, write_data)
from test_data import _fake_raw

BASE = ["--z-dim", "2", "--hidden", "8", "--batch-size", "20", "--valid-size", "20"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("flags")
    x, labels = binary_rows(60)
    grey = torch.rand(60, 12, generator=torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    images = torch.bernoulli(torch.full((40, 28, 28), 0.3), generator=g)
    return {"binary": write_data(base / "binary.pt", x, labels),
            "grey": write_data(base / "grey.pt", grey),
            "images": write_data(base / "images.pt", images)}


def traces(vae, n=4, x_dim=None):
    x = torch.bernoulli(torch.full((n, x_dim or vae.x_dim), 0.5))
    with torch.no_grad():
        guide = poutine.trace(vae.guide).get_trace(x)
        model = poutine.trace(poutine.replay(vae.model, trace=guide)).get_trace(x)
    return guide.nodes["z"]["fn"], model.nodes["z"]["fn"], model.nodes["x"]["fn"]


def base_dist(fn):
    while hasattr(fn, "base_dist") and not hasattr(fn, "transforms"):
        fn = fn.base_dist
    return fn


def linear_sizes(vae):
    return {(m.in_features, m.out_features) for m in vae.modules() if isinstance(m, torch.nn.Linear)}


# ---------------------------------------------------------------------------------- train
def _check_base(run):
    cfg = run["config"]
    assert cfg["vae"]["z_dim"] == 2 and cfg["vae"]["hidden"] == [8]
    assert cfg["trainer"]["batch_size"] == 20 and cfg["data"]["valid_size"] == 20
    assert (2, 8) in linear_sizes(run["vae"]) and (12, 8) in linear_sizes(run["vae"])
    assert [r["epoch"] for r in run["metrics"]] == [1]
    assert run["metrics"][0]["valid_elbo"] is not None


def _guide_fn_is(name):
    def check(run):
        q, _, _ = traces(run["vae"])
        assert type(base_dist(q)).__name__ == name, type(base_dist(q))
    return check


def _likelihood_is(name, likelihood):
    def check(run):
        assert run["config"]["vae"]["likelihood"] == likelihood
        _, _, px = traces(run["vae"])
        assert type(base_dist(px)).__name__ == name, type(base_dist(px))
    return check


def _z_dim_3(run):
    assert run["config"]["vae"]["z_dim"] == 3
    q, p, _ = traces(run["vae"])
    assert q.event_shape == (3,) and p.event_shape == (3,)


def _hidden(run):
    assert run["config"]["vae"]["hidden"] == [7, 5]
    assert {(12, 7), (7, 5), (2, 5), (5, 7)} <= linear_sizes(run["vae"])


def _activation(run):
    assert run["config"]["vae"]["activation"] == "relu"
    kinds = {type(m) for m in run["vae"].modules()}
    assert torch.nn.ReLU in kinds and torch.nn.Tanh not in kinds


def _low_rank(run):
    assert run["config"]["vae"]["rank"] == 1
    q, _, _ = traces(run["vae"])
    assert base_dist(q).cov_factor.shape[-1] == 1


def _flow_length(run):
    assert run["config"]["vae"]["flow_length"] == 3
    q, _, _ = traces(run["vae"])
    assert len(q.transforms) == 3


def _flow_hidden(run):
    assert run["config"]["vae"]["flow_hidden"] == [6]
    sizes = {s for m in run["vae"].encoder.modules() if isinstance(m, torch.nn.Linear)
             for s in (m.in_features, m.out_features)}
    assert 6 in sizes


def _sylvester_kind(run):
    assert run["config"]["vae"]["sylvester_kind"] == "triangular"


def _mixture(run):
    assert run["config"]["vae"]["prior"] == "mixture"
    assert run["config"]["vae"]["prior_components"] == 3
    _, p, _ = traces(run["vae"])
    assert type(p).__name__ == "MixtureSameFamily" and p.mixture_distribution.logits.shape[-1] == 3


def _vamp(run):
    assert run["config"]["vae"]["prior"] == "vamp" and run["config"]["vae"]["prior_components"] == 4
    shapes = [tuple(v.shape) for v in checkpoint(run["dir"])["model_state"].values()]
    assert (4, 12) in shapes  # K pseudo-inputs of 12 pixels
    _, p, _ = traces(run["vae"])
    assert p.mixture_distribution.logits.shape[-1] == 4


def _conv(run):
    assert run["config"]["vae"]["arch"] == "conv"
    assert any(isinstance(m, torch.nn.Conv2d) for m in run["vae"].modules())
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in run["vae"].modules())


def _lr(run):
    assert run["config"]["trainer"]["lr"] == 0.004
    assert run["metrics"][0]["lr"] == 0.004
    assert run["adam_lr"] and set(run["adam_lr"]) == {0.004}


def _iwae(run):
    assert run["config"]["trainer"]["loss"] == "iwae" and run["config"]["trainer"]["particles"] == 3
    assert run["metrics"][0]["train_objective"] == "IWAE_3"


def _particles_only(run):
    assert run["config"]["trainer"]["particles"] == 4


def _meanfield(run):
    assert run["config"]["trainer"]["loss"] == "tracemeanfield_elbo"


def _clipped_adam(run):
    assert run["config"]["trainer"]["optimizer"] == "clipped_adam"
    assert run["clipped_adam_steps"] == 2 and not run["adam_lr"]  # 40 rows, batches of 20


def _cosine(run):
    assert run["config"]["trainer"]["schedule"] == "cosine"
    assert [r["lr"] for r in run["metrics"]] == pytest.approx([1e-3, 1e-3 * 0.505])
    # and the optimizer steps with it: two steps per epoch
    assert run["adam_lr"] == pytest.approx([1e-3, 1e-3, 1e-3 * 0.505, 1e-3 * 0.505])


def _clip_norm(run):
    assert run["config"]["trainer"]["clip_norm"] == 0.5
    assert run["clip_norms"] and set(run["clip_norms"]) == {0.5}


def _seed(run, base_run):
    assert run["config"]["trainer"]["seed"] == 7 and run["config"]["data"]["seed"] == 7
    assert run["metrics"][0]["train_elbo"] != base_run["metrics"][0]["train_elbo"]
    a, b = checkpoint(run["dir"])["model_state"], checkpoint(base_run["dir"])["model_state"]
    assert any(not torch.equal(a[k], b[k]) for k in a)  # initial weights follow --seed too


def _jit(run):
    assert run["config"]["trainer"]["jit"] == "off"


def _beta(run):
    assert run["config"]["trainer"]["beta"] == 0.5
    assert run["metrics"][0]["beta"] == 0.5 and run["metrics"][0]["train_objective"] == "beta-ELBO"


def _warmup(run):
    assert run["config"]["trainer"]["kl_warmup"] == 2.0
    # 2 steps per epoch of 40 rows: the last step of epoch 1 weighs the KL by (0 + 1/2) / 2
    assert run["metrics"][0]["beta"] == pytest.approx(0.25)


def _binarize_fixed(run):
    assert run["config"]["data"]["binarize"] == "fixed"


def _no_valid(run):
    assert run["config"]["data"]["valid_size"] == 0 and run["metrics"][0]["valid_elbo"] is None


def _threads(run):
    assert run["config"]["trainer"]["num_threads"] == 1


def _epochs(run):
    assert [r["epoch"] for r in run["metrics"]] == [1, 2]


def _untrained(run):
    """0 epochs: the untrained model is still a run that evaluate reads."""
    assert checkpoint(run["dir"])["epoch"] == 0 and run["metrics"] == []
    assert cli("evaluate", run["dir"], "--num-samples", "5", "--no-progress") == 0
    assert read_json(os.path.join(run["dir"], "eval.json"))["epoch"] == 0


def _linear_gaussian(run):
    assert run["config"]["data"]["dataset"] == "linear-gaussian"
    assert run["config"]["vae"]["x_dim"] == 5  # the synthetic set's datapoints, not the file's 12


def _objective_spy(run):
    """The importance-weighted objectives the trainer built, as (class, estimator, groups, beta)."""
    return [(type(o).__name__, o.estimator, o.groups, getattr(o, "beta", None))
            for o in run["objectives"]]


def _estimator(run):
    assert run["config"]["trainer"]["estimator"] == "dreg"
    assert _objective_spy(run) and {o[1] for o in _objective_spy(run)} == {"dreg"}


def _groups(run):
    assert run["config"]["trainer"]["groups"] == 2
    assert ("MIWAE", "reparam", 2, None) in _objective_spy(run)
    assert run["metrics"][0]["train_objective"] == "MIWAE_2,3"


def _ciwae_beta(run):
    assert run["config"]["trainer"]["ciwae_beta"] == 0.25
    assert ("CIWAE", "reparam", 1, 0.25) in _objective_spy(run)


def _householders(run):
    assert run["config"]["vae"]["householders"] == 3
    assert run["vae"].encoder.householders == 3


def _spline(run):
    assert run["config"]["vae"]["count_bins"] == 3 and run["config"]["vae"]["bound"] == 2.5
    assert (run["vae"].encoder.count_bins, run["vae"].encoder.bound) == (3, 2.5)


def _tensorboard(run):
    events = os.listdir(os.path.join(run["dir"], "tensorboard"))
    assert any(name.startswith("events.out.tfevents") for name in events)


TRAIN_CASES = [  # (id, data, flags, check)
    ("base", "binary", [], _check_base),
    ("z-dim", "binary", ["--z-dim", "3"], _z_dim_3),
    ("hidden", "binary", ["--hidden", "7,5"], _hidden),
    ("activation", "binary", ["--activation", "relu"], _activation),
    ("likelihood-cb", "grey", ["--likelihood", "continuous_bernoulli"],
     _likelihood_is("ContinuousBernoulli", "continuous_bernoulli")),
    ("likelihood-gaussian", "grey", ["--likelihood", "gaussian"], _likelihood_is("Normal", "gaussian")),
    ("guide-full-rank", "binary", ["--guide", "full-rank"], _guide_fn_is("MultivariateNormal")),
    ("guide-low-rank-rank", "binary", ["--guide", "low-rank", "--z-dim", "3", "--rank", "1"], _low_rank),
    ("flow-length", "binary", ["--guide", "planar", "--flow-length", "3"], _flow_length),
    ("flow-hidden", "binary", ["--guide", "iaf", "--flow-hidden", "6"], _flow_hidden),
    ("sylvester-kind", "binary", ["--guide", "sylvester", "--sylvester-kind", "triangular"], _sylvester_kind),
    ("prior-mixture", "binary", ["--prior", "mixture", "--prior-components", "3"], _mixture),
    ("prior-vamp", "binary", ["--prior", "vamp", "--prior-components", "4"], _vamp),
    ("arch-conv", "images", ["--arch", "conv", "--valid-size", "10"], _conv),
    ("lr", "binary", ["--lr", "0.004"], _lr),
    ("loss-iwae", "binary", ["--loss", "iwae", "--particles", "3"], _iwae),
    ("particles", "binary", ["--particles", "4"], _particles_only),
    ("loss-meanfield", "binary", ["--loss", "tracemeanfield_elbo"], _meanfield),
    ("optimizer", "binary", ["--optimizer", "clipped_adam"], _clipped_adam),
    ("schedule", "binary", ["--schedule", "cosine", "--epochs", "2"], _cosine),
    ("clip-norm", "binary", ["--clip-norm", "0.5"], _clip_norm),
    ("seed", "binary", ["--seed", "7"], _seed),
    ("jit", "binary", ["--jit", "off"], _jit),
    ("beta", "binary", ["--beta", "0.5"], _beta),
    ("kl-warmup", "binary", ["--kl-warmup", "2"], _warmup),
    ("binarize", "grey", ["--binarize", "fixed"], _binarize_fixed),
    ("valid-size", "binary", ["--valid-size", "0"], _no_valid),
    ("threads", "binary", ["--threads", "1"], _threads),
    ("epochs", "binary", ["--epochs", "2"], _epochs),
    ("epochs-0", "binary", ["--epochs", "0"], _untrained),
    ("dataset", None, ["--dataset", "linear-gaussian", "--likelihood", "gaussian", "--epochs", "0"],
     _linear_gaussian),
    ("estimator", "binary", ["--loss", "iwae", "--particles", "3", "--estimator", "dreg"], _estimator),
    ("groups", "binary", ["--loss", "miwae", "--particles", "3", "--groups", "2"], _groups),
    ("ciwae-beta", "binary", ["--loss", "ciwae", "--particles", "3", "--ciwae-beta", "0.25"], _ciwae_beta),
    ("householders", "binary", ["--guide", "sylvester", "--sylvester-kind", "householder",
                                "--householders", "3"], _householders),
    ("spline", "binary", ["--guide", "spline", "--count-bins", "3", "--bound", "2.5"], _spline),
    ("tensorboard", "binary", ["--tensorboard"], _tensorboard),
]


@pytest.fixture
def spies(monkeypatch):
    """Record what the optimizers and the gradient clipping are actually given."""
    seen = {"adam_lr": [], "clipped_adam_steps": 0, "clip_norms": []}
    adam_step = torch.optim.Adam.step

    def spy_adam(self, *args, **kwargs):
        seen["adam_lr"].extend(g["lr"] for g in self.param_groups)
        return adam_step(self, *args, **kwargs)

    clipped_step = ClippedAdam.step

    def spy_clipped(self, *args, **kwargs):
        seen["clipped_adam_steps"] += 1
        return clipped_step(self, *args, **kwargs)

    clip = torch.nn.utils.clip_grad_norm_

    def spy_clip(parameters, max_norm, *args, **kwargs):
        seen["clip_norms"].append(max_norm)
        return clip(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy_adam)
    monkeypatch.setattr(ClippedAdam, "step", spy_clipped)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy_clip)

    seen["objectives"] = []
    init = ImportanceWeighted.__init__

    def spy_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        seen["objectives"].append(self)

    monkeypatch.setattr(ImportanceWeighted, "__init__", spy_init)
    return seen


def _train_case(tmp_path, data, kind, flags, name):
    out = str(tmp_path / name)
    if kind is None:
        code = cli("train", "--out", out, "--no-progress", "--epochs", "1", *BASE, *flags)
        assert code == 0
    else:
        train(out, data[kind], *BASE, *flags)
    run = {"dir": out, "config": config(out)}
    if os.path.isfile(os.path.join(out, "checkpoint.pt")):
        run["vae"], run["metrics"] = load_vae(out), metrics(out)
    return run


@pytest.mark.parametrize("name, kind, flags, check", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_flag_reaches_what_it_controls(name, kind, flags, check, data, tmp_path, spies, one_thread):
    threads = torch.get_num_threads()
    run = _train_case(tmp_path, data, kind, flags, name)
    run.update(spies)
    if check is _seed:
        check(run, _train_case(tmp_path, data, "binary", [], "base"))
    else:
        check(run)
    torch.set_num_threads(threads)


def test_train_flags_about_the_run_directory_and_output(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    # no progress bar with --no-progress, nor where no terminal is attached (tqdm's rule); the
    # bar in a terminal, and the False / None each command passes down: test_progress.py
    train(out, data["binary"], *BASE)
    assert "epoch 1/1" not in capsys.readouterr().err
    assert cli("train", "--data-file", data["binary"], "--out", str(tmp_path / "bar"), "--epochs", "1", *BASE) == 0
    assert "epoch 1/1" not in capsys.readouterr().err
    # --overwrite replaces an existing run; without it the run is refused
    assert cli("train", "--data-file", data["binary"], "--out", out, "--epochs", "1", "--no-progress",
               *BASE, "--z-dim", "3") == 2
    assert config(out)["vae"]["z_dim"] == 2
    train(out, data["binary"], *BASE, "--z-dim", "3", "--overwrite")
    assert config(out)["vae"]["z_dim"] == 3 and len(metrics(out)) == 1
    # --resume with --epochs continues the run to the new total
    assert cli("train", "--resume", out, "--epochs", "3", "--no-progress") == 0
    assert [r["epoch"] for r in metrics(out)] == [1, 2, 3]


def test_train_flags_about_data_and_device(data, tmp_path, capsys):
    # --data-dir and --no-download reach the data set loader: the message names the directory
    empty = str(tmp_path / "no-data-here")
    assert cli("train", "--dataset", "mnist", "--data-dir", empty, "--no-download",
               "--out", str(tmp_path / "m"), "--no-progress") == 2
    err = capsys.readouterr().err
    assert empty in err and "download disabled" in err
    # --backend is refused without --distributed; --device reaches the device check
    assert cli("train", "--data-file", data["binary"], "--out", str(tmp_path / "b"), "--backend", "gloo") == 2
    assert "--backend goes with --distributed" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert cli("train", "--data-file", data["binary"], "--out", str(tmp_path / "d"),
                   "--device", "cuda", "--no-progress") == 2
        assert "CUDA is not available" in capsys.readouterr().err
    # --debug: the error is raised, with its traceback, instead of a one-line message
    with pytest.raises(pyvae.ConfigError):
        cli("--debug", "train", "--data-file", data["binary"], "--out", str(tmp_path / "x"),
            "--guide", "nope")
    with pytest.raises(pyvae.ConfigError):
        cli("train", "--debug", "--data-file", data["binary"], "--out", str(tmp_path / "x"),
            "--guide", "nope")


# ---------------------------------------------------------------------------------- evaluate
@pytest.fixture(scope="module")
def run_dir(data, tmp_path_factory):
    return train(tmp_path_factory.mktemp("eval") / "run", data["binary"], *BASE, "--threads", "1")


def _eval(run_dir, *flags):
    assert cli("evaluate", run_dir, "--no-progress", "--num-samples", "20", *flags) == 0
    return read_json(os.path.join(run_dir, "eval.json"))


def test_evaluate_flags_reach_eval_json(run_dir, capsys, one_thread):
    base = _eval(run_dir)
    assert base["num_samples"] == 20 and base["split"] == "test" and base["seed"] == 0
    assert base["num_datapoints"] == 20
    assert _eval(run_dir, "--num-samples", "7")["num_samples"] == 7
    assert _eval(run_dir, "--split", "train")["num_datapoints"] == 40
    valid = _eval(run_dir, "--split", "valid")
    assert valid["split"] == "valid" and valid["num_datapoints"] == 20
    assert _eval(run_dir, "--max-datapoints", "5")["num_datapoints"] == 5
    other = _eval(run_dir, "--seed", "3")
    assert other["seed"] == 3 and other["log_px"] != base["log_px"]
    capsys.readouterr()
    _eval(run_dir, "--json", "--seed", "4")
    printed = json.loads(capsys.readouterr().out)
    assert printed == read_json(os.path.join(run_dir, "eval.json")) and printed["seed"] == 4
    assert "ais_log_px" not in base
    ais = _eval(run_dir, "--ais", "--ais-steps", "3", "--ais-chains", "2", "--max-datapoints", "4")
    assert (ais["ais_steps"], ais["ais_chains"]) == (3, 2) and math.isfinite(ais["ais_log_px"])
    # only with --ais: without it the flag would be ignored, so it is refused
    assert cli("evaluate", run_dir, "--no-progress", "--num-samples", "20", "--ais-steps", "3") == 2
    before = torch.get_num_threads()
    _eval(run_dir, "--threads", "2")
    assert torch.get_num_threads() == 2
    torch.set_num_threads(before)
    # a table, not JSON, without --json; no progress bar with --no-progress
    _eval(run_dir)
    out, err = capsys.readouterr()
    assert out.startswith("split") and "log p(x), K=20" in out and "log p(x)" not in err
    assert cli("evaluate", run_dir, "--num-samples", "20") == 0  # no terminal: no bar either
    assert "log p(x), K=20" not in capsys.readouterr().err  # (the bar's label; test_progress.py)
    if not torch.cuda.is_available():
        assert cli("evaluate", run_dir, "--device", "cuda") == 2
        assert "CUDA is not available" in capsys.readouterr().err
    with pytest.raises(pyvae.ConfigError):
        cli("evaluate", run_dir, "--split", "nope", "--debug")


def test_evaluate_batch_and_chunk_size_reach_the_estimator(run_dir, monkeypatch, one_thread):
    """What the estimator is asked for: datapoints per pass and samples per pass."""
    calls = []
    real = pyvae.evaluate.log_likelihood

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(pyvae.evaluate, "log_likelihood", spy)
    _eval(run_dir, "--batch-size", "6", "--chunk-size", "5")
    assert calls and calls[-1]["batch_size"] == 6 and calls[-1]["chunk_size"] == 5


# ---------------------------------------------------------------------------------- compare
def test_compare_flags_reach_compare_json_and_each_family_run(data, tmp_path, one_thread):
    out = str(tmp_path / "cmp")
    assert cli("compare", "--data-file", data["binary"], "--out", out, "--no-progress",
               "--guides", "diagonal,planar", "--epochs", "2", "--num-samples", "30",
               "--iwae-k", "3,7", "--test-size", "9", "--refine-steps", "5", "--refine-size", "4", "--ais-steps", "3",
               "--z-dim", "3", "--hidden", "6", "--activation", "relu", "--prior", "mixture",
               "--prior-components", "2", "--flow-length", "1", "--lr", "0.003",
               "--batch-size", "15", "--seed", "4", "--valid-size", "20", "--threads", "1",
               "--binarize", "fixed", "--likelihood", "continuous_bernoulli") == 0
    report = read_json(os.path.join(out, "compare.json"))
    s = report["settings"]
    assert s["guides"] == ["diagonal", "planar"] and s["epochs"] == 2 and s["num_samples"] == 30
    assert s["iwae_k"] == [3, 7] and s["test_size"] == 9 and s["seed"] == 4
    assert s["refine_steps"] == 5 and s["refine_size"] == 4 and s["lr"] == 0.003
    assert s["batch_size"] == 15 and s["num_threads"] == 1
    assert s["z_dim"] == 3 and s["hidden"] == [6] and s["activation"] == "relu"
    assert s["prior"] == "mixture" and s["prior_components"] == 2
    rows = {r["guide"]: r for r in report["rows"]}
    assert list(rows) == ["diagonal", "planar"]
    for family, row in rows.items():
        assert row["num_samples"] == 30 and row["test_size"] == 9
        assert sorted(int(k) for k in row["iwae"]) == [3, 7]
        assert [r["epoch"] for r in row["history"]] == [1, 2]
        assert all(r["valid_elbo"] is not None for r in row["history"])
        cfg = config(os.path.join(out, family))
        assert cfg["vae"]["guide"] == family and cfg["vae"]["z_dim"] == 3
        assert cfg["vae"]["hidden"] == [6] and cfg["vae"]["activation"] == "relu"
        assert cfg["vae"]["prior"] == "mixture" and cfg["vae"]["prior_components"] == 2
        assert cfg["trainer"]["lr"] == 0.003 and cfg["trainer"]["batch_size"] == 15
        assert cfg["trainer"]["seed"] == 4 and cfg["trainer"]["epochs"] == 2
        assert cfg["data"]["valid_size"] == 20 and cfg["data"]["seed"] == 4
        assert cfg["data"]["binarize"] == "fixed" and cfg["vae"]["likelihood"] == "continuous_bernoulli"
        assert [r["lr"] for r in metrics(os.path.join(out, family))] == [0.003, 0.003]
    assert rows["planar"]["options"] == {"flow_length": 1}
    assert config(os.path.join(out, "planar"))["vae"]["flow_length"] == 1
    assert rows["diagonal"]["refine_size"] == 4 and rows["diagonal"]["refine_steps"] == 5
    assert rows["diagonal"]["approximation_gap"] is not None and rows["planar"]["approximation_gap"] is not None
    assert rows["diagonal"]["ais_steps"] == 3 and rows["diagonal"]["ais_start"] == "guide"
    assert rows["planar"]["ais_start"] == "prior"  # planar cannot score z: AIS starts at p(z)


# ---------------------------------------------------------------------------------- data sets
@pytest.fixture(scope="module")
def mnist_dirs(tmp_path_factory):
    """Two MNIST-shaped data sets of raw IDX files, as --data-dir holds them offline: "a" with 30
    training and 6 test images, "b" with 30 and 9; and an "empty" directory."""
    base = tmp_path_factory.mktemp("mnist")
    dirs = {name: str(base / name) for name in ("a", "b", "empty")}
    _fake_raw(dirs["a"], "MNIST", "train", "t10k", 30, 6)
    _fake_raw(dirs["b"], "MNIST", "train", "t10k", 30, 9)
    os.makedirs(dirs["empty"])
    return dirs


@pytest.fixture(scope="module")
def mnist_run(mnist_dirs, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mnist-run") / "run")
    assert cli("train", "--dataset", "mnist", "--data-dir", mnist_dirs["a"], "--no-download",
               "--valid-size", "10", "--z-dim", "2", "--hidden", "8", "--batch-size", "10",
               "--epochs", "1", "--threads", "1", "--no-progress", "--out", out) == 0
    return out


def _not_found_offline(capsys, directory):
    """--no-download reached the loader: it looked in ``directory`` and did not download."""
    err = capsys.readouterr().err
    assert f"mnist not found under {directory} (download disabled)" in err and err.count("\n") == 1, err


def test_evaluate_data_dir_and_no_download_read_the_data_from_there(mnist_run, mnist_dirs, capsys,
                                                                   one_thread):
    def test_rows(*flags):
        assert cli("evaluate", mnist_run, "--num-samples", "3", "--no-progress", *flags) == 0
        return read_json(os.path.join(mnist_run, "eval.json"))["num_datapoints"]
    assert test_rows() == 6  # the directory the run recorded
    assert test_rows("--data-dir", mnist_dirs["b"], "--no-download") == 9
    assert cli("evaluate", mnist_run, "--num-samples", "3", "--no-progress",
               "--data-dir", mnist_dirs["empty"], "--no-download") == 2
    _not_found_offline(capsys, mnist_dirs["empty"])


def test_plot_data_dir_and_no_download_draw_the_data_from_there(mnist_run, mnist_dirs, tmp_path,
                                                               capsys, one_thread):
    def figures(name, *flags):
        out = str(tmp_path / name)
        assert cli("plot", mnist_run, "--num-points", "9", "--out", out, *flags) == 0
        return file_contents(out)
    recorded = figures("recorded")
    assert figures("a", "--data-dir", mnist_dirs["a"], "--no-download") == recorded
    other = figures("b", "--data-dir", mnist_dirs["b"], "--no-download")
    assert set(other) == set(recorded) and other != recorded  # the figures of b's test images
    assert cli("plot", mnist_run, "--out", str(tmp_path / "c"), "--data-dir", mnist_dirs["empty"],
               "--no-download") == 2
    _not_found_offline(capsys, mnist_dirs["empty"])


def test_compare_dataset_arch_data_dir_and_no_download_reach_the_data_and_the_models(
        mnist_dirs, tmp_path, capsys, one_thread):
    def compare(name, data_dir, *flags):
        return cli("compare", "--dataset", "mnist", "--data-dir", data_dir, "--no-download",
                   "--guides", "diagonal", "--epochs", "1", "--num-samples", "3", "--iwae-k", "2",
                   "--valid-size", "10", "--z-dim", "2", "--hidden", "8", "--batch-size", "10",
                   "--threads", "1", "--no-progress", "--out", str(tmp_path / name), *flags)
    assert compare("dense", mnist_dirs["a"]) == 0
    dense = load_vae(str(tmp_path / "dense" / "diagonal"))
    assert dense.x_dim == 784 and (784, 8) in linear_sizes(dense)  # 28x28 images of the set
    assert not any(isinstance(m, torch.nn.Conv2d) for m in dense.modules())
    assert read_json(str(tmp_path / "dense" / "compare.json"))["rows"][0]["test_size"] == 6
    assert compare("conv", mnist_dirs["b"], "--arch", "conv") == 0
    conv = load_vae(str(tmp_path / "conv" / "diagonal"))
    assert any(isinstance(m, torch.nn.Conv2d) for m in conv.modules())
    assert any(isinstance(m, torch.nn.ConvTranspose2d) for m in conv.modules())
    assert read_json(str(tmp_path / "conv" / "compare.json"))["rows"][0]["test_size"] == 9
    assert compare("none", mnist_dirs["empty"]) == 2
    _not_found_offline(capsys, mnist_dirs["empty"])


# ---------------------------------------------------------------------------------- coverage
# flags covered by the tests above, by name, per command; and those covered elsewhere
COVERED = {
    "train": {f for _, _, flags, _ in TRAIN_CASES for f in flags if f.startswith("--")} | {
        "--data-file", "--out", "--no-progress", "--overwrite", "--resume", "--data-dir",
        "--no-download", "--backend", "--device", "--debug", "--epochs", "--batch-size",
        "--valid-size", "--z-dim", "--hidden"},
    "evaluate": {"--num-samples", "--split", "--max-datapoints", "--seed", "--json", "--threads",
                 "--ais", "--ais-steps", "--ais-chains",
                 "--no-progress", "--device", "--debug", "--batch-size", "--chunk-size",
                 "--data-dir", "--no-download"},
    "compare": {"--data-file", "--out", "--no-progress", "--guides", "--epochs", "--num-samples",
                "--iwae-k", "--test-size", "--refine-steps", "--refine-size", "--ais-steps", "--z-dim", "--hidden",
                "--activation", "--prior", "--prior-components", "--flow-length", "--lr",
                "--batch-size", "--seed", "--valid-size", "--threads", "--binarize", "--likelihood",
                "--dataset", "--arch", "--data-dir", "--no-download"},
    "plot": {"--data-dir", "--no-download"},
}
ELSEWHERE = {
    "train": {"--distributed": "test_distributed.py"},
    "evaluate": {"--distributed": "test_distributed.py", "--backend": "test_distributed.py"},
    "compare": {"--overwrite": "test_compare_check.py", "--shared-decoder": "test_compare_check.py",
                "--device": "test_compare_check.py", "--debug": "test_compare_check.py"},
    "plot": {f: "test_plot_inputs.py" for f in ("--out", "--format", "--split", "--num-points",
                                                "--seed", "--debug")},
}

# the kept evaluations: listed, drawn, compared
ELSEWHERE["evaluate"]["--list"] = "test_evaluations.py"
ELSEWHERE["plot"]["--evaluation"] = "test_plot_inputs.py"
ELSEWHERE["compare"].update({"--runs": "test_compare_runs.py", "--evaluation": "test_compare_runs.py"})


# every option of every registered guide family: test_options.py gives each to train and
# compare and finds it in the family built from the flags
GUIDE_OPTION_FLAGS = {f.metadata.get("flag") or "--" + f.name.replace("_", "-")
                      for f in guide_flags()}


@pytest.mark.parametrize("command", ["train", "evaluate", "compare", "plot"])
def test_every_flag_is_covered(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    flags = set(re.findall(r"(?m)^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)", text)) - {"--help"}
    covered = COVERED.get(command, set()) | set(ELSEWHERE.get(command, {}))
    if command in ("train", "compare"):
        covered |= GUIDE_OPTION_FLAGS
    assert flags - covered == set(), f"pyvae {command}: flags without a test: {sorted(flags - covered)}"


def test_every_flag_covered_elsewhere_is_in_that_test_file():
    here = os.path.dirname(os.path.abspath(__file__))
    for command, flags in ELSEWHERE.items():
        for flag, name in flags.items():
            path = os.path.join(here, name)
            # a test file, another than this one (whose ELSEWHERE names every flag)
            assert re.fullmatch(r"test_\w+\.py", name) and name != os.path.basename(__file__), (
                command, flag, name)
            assert os.path.isfile(path), (command, flag, name)
            with open(path) as f:
                assert flag in f.read(), f"pyvae {command} {flag}: not in {name}"
